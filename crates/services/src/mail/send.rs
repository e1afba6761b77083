//! One message over SMTP with lettre: a new connection per message (notices are few), the
//! configured TLS mode, AUTH when credentials are set.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
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
    let transport = transport(m)?;
    // lettre's own timeout covers only the connect on tokio: the whole exchange is bounded
    // here, so a server that stops answering cannot hold a worker.
    let sent = match tokio::time::timeout(m.timeout, transport.send(message)).await {
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
                answer_may_be_lost: true,
                recipient_refused: false,
            })
        }
    };
    match sent {
        Ok(answer) => Ok(SendOutcome {
            response: format!(
                "{} {}",
                answer.code(),
                answer.message().collect::<Vec<_>>().join(" ")
            )
            .trim()
            .to_owned(),
        }),
        Err(e) => {
            // lettre does not expose its "connection" kind (connect, resolve, TLS setup:
            // nothing was sent) but its Debug form names it.
            let connect_failed = format!("{e:?}").contains("kind: Connection");
            let answered = e.is_transient() || e.is_permanent();
            let code = e.status().map(|c| c.to_string());
            Err(SendError {
                message: format!("{} {}:{}: {e}", m.tls.as_str(), m.host, m.port),
                answer_may_be_lost: !(answered || connect_failed || e.is_tls() || e.is_client()),
                recipient_refused: e.is_permanent()
                    && matches!(code.as_deref(), Some("550" | "551" | "553")),
            })
        }
    }
}

/// `s` on one line: each control character (CR, LF, tab, …) a space, trimmed.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The SMTP transport of the settings (TLS, its CA file, credentials, timeout).
fn transport(m: &MailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let tls = match m.tls {
        TlsMode::None => Tls::None,
        TlsMode::Starttls | TlsMode::Tls => {
            let mut params = TlsParameters::builder(m.host.clone());
            if let Some(file) = &m.ca_file {
                let pem = std::fs::read(file).map_err(|e| {
                    local(format!("reading the mail CA file {}: {e}", file.display()))
                })?;
                let certs = Certificate::from_pem(&pem)
                    .map_err(|e| local(format!("the mail CA file {}: {e}", file.display())))?;
                params = params.add_root_certificate(certs);
            }
            let params = params
                .build()
                .map_err(|e| local(format!("TLS for {}: {e}", m.host)))?;
            if m.tls == TlsMode::Tls {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(m.host.as_str())
        .port(m.port)
        .tls(tls)
        .timeout(Some(m.timeout));
    if let (Some(user), Some(password)) = (&m.username, &m.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
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
