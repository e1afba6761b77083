//! One message over SMTP with lettre: a new connection per message (notices are few;
//! `TCP_NODELAY` on it but with implicit TLS), the configured TLS mode, AUTH when
//! credentials are set.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::config::{MailSettings, TlsMode};
use super::render::Rendered;

/// The server accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// Its answer to the message (`250 OK …`).
    pub response: String,
}

/// A message not known to be accepted.
#[derive(Debug, Clone)]
pub(crate) struct SendError {
    pub message: String,
    /// The connection broke without an SMTP answer once it was open: the server may have
    /// accepted the message (a lost answer to DATA). A refusal (4xx/5xx), a failed connect
    /// or TLS handshake, or a message that could not be built is not.
    pub answer_may_be_lost: bool,
    /// The server refused the recipient for good (550, 551 or 553): sending again will not
    /// help. Other permanent codes (a refused login, relaying denied: the configuration,
    /// which the operator may mend) are retried.
    pub recipient_refused: bool,
}

fn local(message: String) -> SendError {
    SendError {
        message,
        answer_may_be_lost: false,
        recipient_refused: false,
    }
}

/// Builds the message (text and HTML alternatives, the given Message-ID and date) and
/// sends it.
pub(crate) async fn send(
    m: &MailSettings,
    message_id: &str,
    to: &str,
    to_name: &str,
    rendered: &Rendered,
    date: jiff::Timestamp,
) -> Result<SendOutcome, SendError> {
    let from: Mailbox = m
        .from
        .parse()
        .map_err(|e| local(format!("the From address {:?}: {e}", m.from)))?;
    let address: lettre::Address = to
        .parse()
        .map_err(|e| local(format!("the address {to:?}: {e}")))?;
    // A header is one line: a name or subject with a line break in it (stored before such
    // names were refused) is sent with spaces instead, never refused by lettre at render.
    let name = one_line(to_name);
    let name = (!name.is_empty()).then_some(name);
    let message = Message::builder()
        .from(from)
        .to(Mailbox::new(name, address))
        .subject(one_line(&rendered.subject))
        .message_id(Some(message_id.to_owned()))
        .date(std::time::SystemTime::from(date))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| local(format!("building the message: {e}")))?;
    // lettre's own timeout covers only the connect on tokio: the whole exchange is bounded
    // here, so a server that stops answering cannot hold a worker.
    // Set once the message itself is under way (over our own connection): a timeout before
    // then (a server that never greets, a STARTTLS that hangs) sent nothing, and is no
    // possible duplicate (found by the re-check). Through lettre's transport it cannot be
    // told, and stays set.
    let under_way = std::sync::atomic::AtomicBool::new(m.tls == TlsMode::Tls);
    let sending = async {
        match m.tls {
            TlsMode::Tls => transport(m)?
                .send(message)
                .await
                .map_err(|e| smtp_error(m, e)),
            TlsMode::Starttls => {
                send_nodelay(m, Some(tls_parameters(m)?), &message, &under_way).await
            }
            TlsMode::None => send_nodelay(m, None, &message, &under_way).await,
        }
    };
    let sent = match tokio::time::timeout(m.timeout, sending).await {
        Ok(sent) => sent,
        Err(_) => {
            return Err(SendError {
                message: format!(
                    "{} {}:{}: no answer within {} s",
                    m.tls.as_str(),
                    m.host,
                    m.port,
                    m.timeout.as_secs()
                ),
                answer_may_be_lost: under_way.load(std::sync::atomic::Ordering::SeqCst),
                recipient_refused: false,
            })
        }
    };
    sent.map(|answer| SendOutcome {
        response: format!(
            "{} {}",
            answer.code(),
            answer.message().collect::<Vec<_>>().join(" ")
        )
        .trim()
        .to_owned(),
    })
}

/// What a lettre error says of the message.
fn smtp_error(m: &MailSettings, e: lettre::transport::smtp::Error) -> SendError {
    // lettre does not expose its "connection" kind (connect, resolve, TLS setup: nothing
    // was sent) but its Debug form names it.
    let connect_failed = format!("{e:?}").contains("kind: Connection");
    let answered = e.is_transient() || e.is_permanent();
    let code = e.status().map(|c| c.to_string());
    SendError {
        message: format!("{} {}:{}: {e}", m.tls.as_str(), m.host, m.port),
        answer_may_be_lost: !(answered || connect_failed || e.is_tls() || e.is_client()),
        recipient_refused: e.is_permanent()
            && matches!(code.as_deref(), Some("550" | "551" | "553")),
    }
}

/// Sends over a connection of its own with `TCP_NODELAY` (STARTTLS, or none): lettre
/// writes a message's body and its closing dot in two writes before it reads the answer,
/// which Nagle's algorithm held back until the server's delayed ACK, some 40 ms a message
/// (found by the crash audit: 46 ms a send against 3–8 ms for a whole session, the window
/// in which a killed node's message is delivered but not recorded). Implicit TLS goes
/// through lettre's transport, whose connection takes no socket of ours before its TLS.
async fn send_nodelay(
    m: &MailSettings,
    starttls: Option<TlsParameters>,
    message: &Message,
    under_way: &std::sync::atomic::AtomicBool,
) -> Result<Response, SendError> {
    let connect_error = |e: std::io::Error| SendError {
        message: format!(
            "{} {}:{}: Connection error: {e}",
            m.tls.as_str(),
            m.host,
            m.port
        ),
        answer_may_be_lost: false,
        recipient_refused: false,
    };
    let tcp = tokio::net::TcpStream::connect((m.host.as_str(), m.port))
        .await
        .map_err(connect_error)?;
    tcp.set_nodelay(true).map_err(connect_error)?;
    let hello = ClientId::default();
    let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
        .await
        .map_err(|e| smtp_error(m, e))?;
    if let Some(params) = starttls {
        // A failed upgrade leaves lettre's connection without a stream, which must not be
        // written to again (not even QUIT): it is dropped, as lettre's transport drops it.
        conn.starttls(params, &hello)
            .await
            .map_err(|e| smtp_error(m, e))?;
    }
    let sent = async {
        if let Some(credentials) = credentials(m) {
            conn.auth(DEFAULT_MECHANISMS, &credentials).await?;
        }
        under_way.store(true, std::sync::atomic::Ordering::SeqCst);
        conn.send(message.envelope(), &message.formatted()).await
    }
    .await;
    // QUIT and close, as lettre's transport does after a message.
    conn.abort().await;
    sent.map_err(|e| smtp_error(m, e))
}

/// `s` on one line: each control character (CR, LF, tab, …) a space, trimmed.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The TLS parameters of the settings: the server's name, and its CA file's certificates
/// trusted besides the system's.
fn tls_parameters(m: &MailSettings) -> Result<TlsParameters, SendError> {
    let mut params = TlsParameters::builder(m.host.clone());
    if let Some(file) = &m.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| local(format!("reading the mail CA file {}: {e}", file.display())))?;
        let certs = Certificate::from_pem(&pem)
            .map_err(|e| local(format!("the mail CA file {}: {e}", file.display())))?;
        params = params.add_root_certificate(certs);
    }
    params
        .build()
        .map_err(|e| local(format!("TLS for {}: {e}", m.host)))
}

/// The SMTP AUTH credentials, when both are set.
fn credentials(m: &MailSettings) -> Option<Credentials> {
    match (&m.username, &m.password) {
        (Some(user), Some(password)) => Some(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        )),
        _ => None,
    }
}

/// The SMTP transport of the settings (TLS, its CA file, credentials, timeout).
fn transport(m: &MailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let tls = match m.tls {
        TlsMode::None => Tls::None,
        TlsMode::Starttls => Tls::Required(tls_parameters(m)?),
        TlsMode::Tls => Tls::Wrapper(tls_parameters(m)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(m.host.as_str())
        .port(m.port)
        .tls(tls)
        .timeout(Some(m.timeout));
    if let Some(credentials) = credentials(m) {
        builder = builder.credentials(credentials);
    }
    Ok(builder.build())
}

/// Connects to the SMTP server as sending would (TLS, login) and says whether it answers:
/// checked when a node starts, so that a wrong host, port or password is in the log at
/// once rather than when the first customer's mail fails.
pub(crate) async fn check(m: &MailSettings) -> Result<(), String> {
    let transport = transport(m).map_err(|e| e.message)?;
    let at = format!("{} {}:{}", m.tls.as_str(), m.host, m.port);
    match tokio::time::timeout(m.timeout, transport.test_connection()).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!("{at}: the server did not answer NOOP")),
        Ok(Err(e)) => Err(format!("{at}: {e}")),
        Err(_) => Err(format!("{at}: no answer within {} s", m.timeout.as_secs())),
    }
}

#[cfg(test)]
mod one_line_tests {
    use super::one_line;

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(one_line(" Bob\r\nBcc: spy@x.test "), "Bob  Bcc: spy@x.test");
        assert_eq!(one_line("Ann\tLee"), "Ann Lee");
        assert_eq!(one_line("Zoë"), "Zoë");
    }
}
