//! What the panel drivers share: their credentials (a JSON object sealed on the server row),
//! an HTTP client with timeouts and, for a self-signed panel certificate, a pinned SHA-256
//! fingerprint of the certificate or of its public key (a rustls verifier that accepts
//! exactly that leaf, or any leaf of that key, never "accept anything"),
//! and errors that say what went wrong (wrong login, certificate mismatch, timeout).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::{DriverError, ServerAccess};

/// A panel server's credentials, as staff enter them (`credentials` of the server, a JSON
/// object): `{"user": "admin", "secret": "…", "url": "https://panel.example.com:2222",
/// "tls_sha256": "AB:CD:…", "timeout_secs": 90}` (or `tls_spki_sha256`, the public key's). `secret` is the API token (cPanel), login
/// key (DirectAdmin) or password / secret key (Plesk); `url` defaults to the panel's usual
/// port on the server's hostname.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelCredentials {
    #[serde(default)]
    pub user: String,
    #[serde(alias = "token", alias = "key", alias = "password")]
    pub secret: String,
    #[serde(default)]
    pub url: Option<String>,
    /// The SHA-256 fingerprint of the panel's certificate (hex, colons allowed).
    #[serde(default)]
    pub tls_sha256: Option<String>,
    /// The SHA-256 of the certificate's public key (its SubjectPublicKeyInfo, DER): unlike
    /// the certificate's, it still matches when the panel renews its self-signed
    /// certificate with the same key.
    #[serde(default)]
    pub tls_spki_sha256: Option<String>,
    /// Seconds a call may take (default 90: WHM's createacct can take minutes).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl std::fmt::Debug for PanelCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanelCredentials")
            .field("user", &self.user)
            .field("secret", &"[redacted]")
            .field("url", &self.url)
            .field("tls_sha256", &self.tls_sha256)
            .field("tls_spki_sha256", &self.tls_spki_sha256)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// A connection to one panel: its base URL (no trailing slash), credentials and client.
#[derive(Debug, Clone)]
pub struct Panel {
    pub base: String,
    pub creds: PanelCredentials,
    pub client: reqwest::Client,
}

impl Panel {
    /// Reads the server's credentials and builds its client; `port` is the panel's usual
    /// HTTPS port.
    pub fn connect(server: &ServerAccess, port: u16) -> Result<Panel, DriverError> {
        let raw = server.credentials.as_deref().ok_or_else(|| {
            DriverError("the server has no credentials (a JSON object with user and secret)".into())
        })?;
        let creds: PanelCredentials = serde_json::from_str(raw).map_err(|e| {
            DriverError(format!(
                "the server's credentials are not a JSON object of user, secret, url, tls_sha256, tls_spki_sha256, timeout_secs: {e}"
            ))
        })?;
        let base = creds
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{}:{port}", server.hostname));
        let base = base.trim_end_matches('/').to_owned();
        let client = client(&creds)?;
        Ok(Panel {
            base,
            creds,
            client,
        })
    }
}

/// Parses a fingerprint: 64 hex digits, colons and spaces ignored.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], DriverError> {
    let hex: String = s.chars().filter(|c| *c != ':' && *c != ' ').collect();
    let bytes = hex::decode(&hex)
        .map_err(|_| DriverError(format!("the pin {s:?} is not a hex SHA-256 fingerprint")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| DriverError(format!("the pin {s:?} is not 32 bytes")))
}

impl PanelCredentials {
    /// Whether the pins given (if any) are well-formed fingerprints.
    pub fn pins_are_valid(&self) -> bool {
        [&self.tls_sha256, &self.tls_spki_sha256]
            .into_iter()
            .flatten()
            .all(|f| parse_fingerprint(f).is_ok())
    }
}

/// The client for a panel: connect timeout 10 s, call timeout as configured (90 s), the
/// pinned certificate when one is given, else the usual web PKI verification.
pub fn client(creds: &PanelCredentials) -> Result<reqwest::Client, DriverError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(creds.timeout_secs.unwrap_or(90).max(1)))
        .redirect(reqwest::redirect::Policy::none());
    let cert = creds
        .tls_sha256
        .as_deref()
        .map(parse_fingerprint)
        .transpose()?;
    let key = creds
        .tls_spki_sha256
        .as_deref()
        .map(parse_fingerprint)
        .transpose()?;
    if cert.is_some() || key.is_some() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| DriverError(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                cert,
                key,
                provider,
            }))
            .with_no_client_auth();
        b = b.use_preconfigured_tls(config);
    }
    b.build()
        .map_err(|e| DriverError(format!("HTTP client: {e}")))
}

/// Accepts exactly the leaf certificate whose SHA-256 is the certificate pin, or any leaf
/// whose public key's SHA-256 is the key pin (the handshake's signatures are still
/// verified against it).
#[derive(Debug)]
struct Pinned {
    cert: Option<[u8; 32]>,
    key: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let spki: Option<[u8; 32]> = rustls::server::ParsedCertificate::try_from(end_entity)
            .ok()
            .map(|c| Sha256::digest(c.subject_public_key_info().as_ref()).into());
        if self.cert == Some(got) || (self.key.is_some() && self.key == spki) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate (SHA-256 {}, public key SHA-256 {}) is not the pinned one",
                hex::encode(got),
                spki.map(hex::encode).unwrap_or_else(|| "unreadable".into())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A transport failure in words: timeout, TLS (certificate) trouble, refused connection.
/// The URL is left out (a query may carry parameters that are nobody's business).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        format!("the panel did not answer in time (timeout): {chain}")
    } else if chain.contains("certificate") || chain.contains("Certificate") {
        format!("TLS: the panel's certificate was refused: {chain}")
    } else if e.is_connect() {
        format!("cannot connect to the panel: {chain}")
    } else {
        format!("the panel's answer was lost: {chain}")
    }
}

/// Sends a request and reads its body as text; transport failures become clear errors,
/// HTTP 401/403 a wrong-credentials error.
pub async fn send(req: reqwest::RequestBuilder) -> Result<(u16, String), DriverError> {
    let resp = req.send().await.map_err(|e| DriverError(describe(e)))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| DriverError(describe(e)))?;
    if status == 401 || status == 403 {
        return Err(DriverError(format!(
            "the panel refused the credentials (HTTP {status}): check the user and token"
        )));
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_their_secret() {
        let c: PanelCredentials =
            serde_json::from_str(r#"{"user": "root", "token": "abc123SECRET"}"#).unwrap();
        assert_eq!(c.secret, "abc123SECRET");
        assert!(!format!("{c:?}").contains("abc123SECRET"));
        let access = ServerAccess {
            hostname: "h".into(),
            credentials: Some(r#"{"user":"root","secret":"abc123SECRET"}"#.into()),
        };
        assert!(!format!("{access:?}").contains("abc123SECRET"));
        let panel = Panel::connect(&access, 2087).unwrap();
        assert_eq!(panel.base, "https://h:2087");
        assert!(!format!("{panel:?}").contains("abc123SECRET"));
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }

    #[test]
    fn unknown_credential_fields_are_refused() {
        let access = ServerAccess {
            hostname: "h".into(),
            credentials: Some(r#"{"user":"root","secret":"x","tls":"off"}"#.into()),
        };
        assert!(Panel::connect(&access, 2087).is_err());
    }
}
