//! What the control panel fakes share: a self-signed certificate made with rcgen (its
//! SHA-256 fingerprint is what a Lodge server pins), and a small HTTP/1.1 server on a
//! loopback port, over TLS or plain TCP. One request per connection (`Connection: close`),
//! so a handler can also answer [`Reply::Drop`]: close the connection without a word, as a
//! panel whose answer is lost after it committed.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A self-signed certificate for `localhost` and `127.0.0.1`.
#[derive(Clone)]
pub struct Cert {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub sha256: String,
    /// SHA-256 of its public key (the SubjectPublicKeyInfo, DER), lowercase hex: what
    /// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum` prints.
    pub spki_sha256: String,
    /// The certificate and its key as PEM (for servers configured with files).
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cert(sha256 {})", self.sha256)
    }
}

impl Cert {
    pub fn self_signed() -> anyhow::Result<Cert> {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .context("rcgen")?;
        Ok(Self::from_parts(&ck.cert, &ck.key_pair))
    }

    fn from_parts(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Cert {
        let cert_der = cert.der().to_vec();
        Cert {
            sha256: hex::encode(Sha256::digest(&cert_der)),
            spki_sha256: hex::encode(Sha256::digest(key.public_key_der())),
            cert_der,
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A new certificate for the same key (as a panel renewing its self-signed
    /// certificate): another certificate fingerprint, the same public key's.
    pub fn renewed(&self) -> anyhow::Result<Cert> {
        let key = rcgen::KeyPair::try_from(self.key_der.as_slice()).context("the key")?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .context("rcgen")?;
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        let serial: Vec<u8> = Sha256::digest(&self.cert_der)
            .into_iter()
            .take(16)
            .collect();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.self_signed(&key).context("rcgen")?;
        Ok(Self::from_parts(&cert, &key))
    }

    /// The fingerprint as panels show it: `AB:CD:…`.
    pub fn colon_fingerprint(&self) -> String {
        self.sha256
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A request as the fake sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The query, then the url-encoded form body.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut out = self.query.clone();
        let form = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            out.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&self.body)
                    .unwrap_or_default(),
            );
        }
        out
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The user and password of HTTP Basic auth.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        use base64::Engine;
        let v = self.header("authorization")?.strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_owned(), p.to_owned()))
    }
}

/// The first value of `name` in `params`.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    Send(Response),
    /// Close the connection without answering (the work is done: the answer is lost).
    Drop,
}

pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// A running fake server (stops when dropped).
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    pub tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// `https://127.0.0.1:port` (or `http://`).
    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.addr.port()
        )
    }

    /// Starts on a loopback port, over TLS with `cert` when given.
    pub async fn start(cert: Option<&Cert>, handler: Handler) -> anyhow::Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = match cert {
            Some(c) => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![rustls::pki_types::CertificateDer::from(c.cert_der.clone())],
                        rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into()),
                    )?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        let tls = acceptor.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                let _ = serve_one(s, handler).await;
                            }
                        }
                        None => {
                            let _ = serve_one(tcp, handler).await;
                        }
                    }
                });
            }
        });
        Ok(HttpServer { addr, tls, task })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    handler: Handler,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        anyhow::ensure!(buf.len() < 1 << 20, "headers too long");
    };
    let head = String::from_utf8_lossy(buf.get(..head_end).unwrap_or_default()).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf.get(head_end + 4..).unwrap_or_default().to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (
            p.to_owned(),
            serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default(),
        ),
        None => (target.clone(), vec![]),
    };
    let req = Request {
        method,
        path,
        query,
        headers,
        body,
    };
    match handler(req) {
        Reply::Drop => {
            // Closing without a response: the client sees the connection end.
            drop(s);
        }
        Reply::Send(r) => {
            let reason = match r.status {
                200 => "OK",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "Not Found",
                _ => "Status",
            };
            let out = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                r.status,
                r.content_type,
                r.body.len(),
                r.body
            );
            s.write_all(out.as_bytes()).await?;
            s.flush().await?;
            let _ = s.shutdown().await;
        }
    }
    Ok(())
}

/// A request as a fake records it, for assertions: method, path and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.params, name)
    }

    /// The parameter names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.params.iter().map(|(k, _)| k.as_str()).collect()
    }
}
