//! The mail configuration of a node (the CLI builds it from flags, `LODGE_MAIL_*` and
//! `lodge.toml`, and refuses a bad one at start).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP upgraded with `STARTTLS`, which is required (port 587 by default).
    Starttls,
    /// TLS from the first byte, "implicit TLS" / SMTPS (port 465 by default).
    Tls,
    /// No encryption: only for a relay on the loopback interface (port 25 by default).
    None,
}

impl TlsMode {
    pub fn parse(s: &str) -> Result<TlsMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starttls" => Ok(TlsMode::Starttls),
            "tls" | "smtps" | "implicit" => Ok(TlsMode::Tls),
            "none" | "plain" => Ok(TlsMode::None),
            other => Err(format!(
                "mail TLS mode {other:?} is not one of starttls, tls, none"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
            TlsMode::None => "none",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

/// Where and how mail is sent, and what it says about the installation (the password's
/// `Debug` is redacted: `SecretString`).
#[derive(Clone, Debug)]
pub struct MailSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// SMTP AUTH (PLAIN or LOGIN, as the server offers), when both are set.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The From address: `billing@example.com` or `Example Hosting <billing@example.com>`.
    pub from: String,
    /// The installation's name and postal address, at the foot of every message.
    pub installation_name: String,
    pub postal_address: String,
    /// Base of the links in messages (the payment page is `<base>/pay/<token>`), no
    /// trailing slash.
    pub base_url: String,
    /// A directory whose files replace the built-in templates of the same name.
    pub templates_dir: Option<PathBuf>,
    /// How long sending one message (connect, TLS, AUTH, the whole SMTP exchange) may take.
    pub timeout: Duration,
    /// A PEM file of certificates trusted for the SMTP server's, besides the system's
    /// roots (a relay with a private CA). Read when a message is sent.
    pub ca_file: Option<PathBuf>,
}

/// Whether `host` is this machine (where plain SMTP is allowed).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl MailSettings {
    /// The domain of the From address (the right side of Message-IDs).
    pub fn from_domain(&self) -> &str {
        self.from
            .rsplit('@')
            .next()
            .map(|d| d.trim_end_matches('>').trim())
            .filter(|d| !d.is_empty())
            .unwrap_or("lodge.invalid")
    }

    /// Refuses a configuration that cannot send, with a message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() || self.host.contains(char::is_whitespace) {
            return Err(format!("--mail-host {:?} is not a host name", self.host));
        }
        if self.port == 0 {
            return Err("--mail-port must be between 1 and 65535".into());
        }
        if let Some(file) = &self.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| format!("--mail-ca-file {}: {e}", file.display()))?;
            let has_one = pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----");
            if !has_one || lettre::transport::smtp::client::Certificate::from_pem(&pem).is_err() {
                return Err(format!(
                    "--mail-ca-file {} holds no PEM certificate",
                    file.display()
                ));
            }
        }
        if self.tls == TlsMode::None && !is_loopback(&self.host) {
            return Err(format!(
                "--mail-tls none sends mail and passwords in clear: only allowed to a relay on \
                 this machine (127.0.0.1, ::1, localhost), not {:?}; use starttls or tls",
                self.host
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("--mail-username and --mail-password go together".into());
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!(
                "--mail-from {:?} is not an address (billing@example.com or \"Name <billing@example.com>\")",
                self.from
            ));
        }
        if self.installation_name.trim().is_empty() {
            return Err("--mail-installation-name is required when mail is on".into());
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "the public base URL {:?} of mail links must start with http:// or https://",
                self.base_url
            ));
        }
        if self.timeout.is_zero() || self.timeout.as_secs() > 600 {
            // At most ten minutes: a job holds its lease for two, renewed between jobs, and
            // a send counts as in flight for twice the timeout.
            return Err("--mail-timeout-secs must be between 1 and 600".into());
        }
        let templates = super::render::Templates::load(self.templates_dir.as_deref())?;
        // Once a process (the settings are checked more than once at start); the name as
        // Debug, escaped (a file name may hold a line break or a terminal's escapes).
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !templates.unknown.is_empty() && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            for (file, nearest) in &templates.unknown {
                tracing::warn!(
                    file = ?file,
                    nearest = %nearest,
                    "a file in the mail templates directory is no template's name and is never read"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> MailSettings {
        MailSettings {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: TlsMode::None,
            username: None,
            password: None,
            from: "Acme Hosting <billing@acme.test>".into(),
            installation_name: "Acme Hosting".into(),
            postal_address: "1 Main St".into(),
            base_url: "https://acme.test".into(),
            templates_dir: None,
            timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let m = MailSettings {
            username: Some("u".into()),
            password: Some(SecretString::from("hunter2")),
            ..sample()
        };
        let shown = format!("{m:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.to_lowercase().contains("[redacted]"), "{shown}");
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        assert_eq!(sample().validate(), Ok(()));
        assert_eq!(sample().from_domain(), "acme.test");
        let cases = [
            (
                MailSettings {
                    host: "smtp.example.com".into(),
                    ..sample()
                },
                "--mail-tls none",
            ),
            (
                MailSettings {
                    from: "not an address".into(),
                    ..sample()
                },
                "--mail-from",
            ),
            (
                MailSettings {
                    username: Some("u".into()),
                    ..sample()
                },
                "--mail-password",
            ),
            (
                MailSettings {
                    base_url: "acme.test".into(),
                    ..sample()
                },
                "base URL",
            ),
            (
                MailSettings {
                    timeout: Duration::from_secs(601),
                    ..sample()
                },
                "--mail-timeout-secs",
            ),
            (
                MailSettings {
                    templates_dir: Some("/nonexistent/templates".into()),
                    ..sample()
                },
                "not a directory",
            ),
        ];
        for (m, word) in cases {
            let e = m.validate().unwrap_err();
            assert!(e.contains(word), "{e}");
        }
        assert_eq!(TlsMode::parse("STARTTLS"), Ok(TlsMode::Starttls));
        assert!(TlsMode::parse("ssl3").is_err());
    }
}
