//! A real SMTP server for mail tests: aiosmtpd (from the Python test servers' virtual
//! environment, [`crate::venv_bin`]) on a loopback port, storing every message it accepts
//! in a Maildir (`aiosmtpd.handlers.Mailbox`) that the test reads back.
//!
//! [`SmtpServer::start`] returns `None` when aiosmtpd is not installed (the test is skipped
//! with a message, or fails under `LODGE_REQUIRE_SERVICES=1`). [`SmtpServer::stop`] and
//! [`SmtpServer::restart`] take the server down and bring it back on the same port with
//! the same mailbox, for "SMTP down" tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) aiosmtpd.
pub struct SmtpServer {
    pub port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// How it answers.
    handler: Handler,
    /// How it speaks TLS, with its certificate's and key's files (`None`: plain SMTP).
    tls: Option<(SmtpTls, PathBuf, PathBuf)>,
}

/// How a server answers messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    /// Stores each (`aiosmtpd.handlers.Mailbox`).
    Mailbox,
    /// Stores each, the answer to the first held back this many seconds.
    SlowFirst(u64),
    /// Refuses every recipient: `550 5.1.1` (no such mailbox), as a real server does.
    RefuseRecipients,
}

/// How a [`SmtpServer::start_tls`] server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP upgraded with `STARTTLS`, which it requires before mail is sent.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

/// aiosmtpd handlers (its documented `handle_DATA`/`handle_RCPT` hooks): `SlowFirstAnswer`
/// stores every message like `aiosmtpd.handlers.Mailbox` but holds back its answer to the
/// first one (a client with a shorter timeout sees its message's answer lost although the
/// message was accepted); `RefuseRecipients` refuses every recipient with `550 5.1.1`
/// (RFC 5321 §4.2.3, "mailbox unavailable").
const HANDLERS: &str = r#"
import asyncio
import mailbox


class SlowFirstAnswer:
    def __init__(self, maildir, delay):
        self.box = mailbox.Maildir(maildir)
        self.delay = float(delay)
        self.first = True

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)

    async def handle_DATA(self, server, session, envelope):
        self.box.add(envelope.original_content)
        if self.first:
            self.first = False
            await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"


class RefuseRecipients:
    def __init__(self, maildir):
        self.box = mailbox.Maildir(maildir)

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
"#;

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("port", &self.port)
            .field("maildir", &self.maildir())
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// As received, with quoted-printable soft line breaks and `=XX` escapes decoded (good
    /// enough to search the text and HTML parts for words).
    pub text: String,
}

impl Mail {
    /// A header's value (unfolded), the first of that name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self
            .text
            .split("\r\n\r\n")
            .next()
            .or_else(|| self.text.split("\n\n").next())?;
        let mut unfolded: Vec<String> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = unfolded.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
            } else {
                unfolded.push(line.to_owned());
            }
        }
        let prefix = format!("{}:", name.to_ascii_lowercase());
        unfolded.into_iter().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| l.get(prefix.len()..).unwrap_or("").trim().to_owned())
        })
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    pub fn message_id(&self) -> String {
        self.header("Message-ID").unwrap_or_default()
    }

    pub fn to(&self) -> String {
        self.header("To").unwrap_or_default()
    }
}

/// Undoes quoted-printable: `=\r\n` soft breaks and `=XX` bytes.
fn decode_qp(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'=' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SmtpServer {
    /// Starts aiosmtpd on a free loopback port, or `None` (skipped, or a failure under
    /// `LODGE_REQUIRE_SERVICES=1`) when it is not installed or does not come up.
    pub fn start() -> Option<SmtpServer> {
        let Some(program) = crate::venv_bin("aiosmtpd") else {
            crate::skip_or_fail(
                "aiosmtpd",
                "not installed (python3 -m venv ~/.cache/lodge-venv && ~/.cache/lodge-venv/bin/pip install aiosmtpd)",
            );
            return None;
        };
        Self::start_with(program, Handler::Mailbox)
    }

    /// [`SmtpServer::start`] with a server that refuses every recipient for good (`550`).
    pub fn start_refusing_recipients() -> Option<SmtpServer> {
        let Some(program) = crate::venv_bin("aiosmtpd") else {
            crate::skip_or_fail("aiosmtpd", "not installed");
            return None;
        };
        Self::start_with(program, Handler::RefuseRecipients)
    }

    /// [`SmtpServer::start`] with a server that stores every message but answers the first
    /// one only after `delay_secs` (a lost answer to DATA, for a client that times out).
    pub fn start_slow_first_answer(delay_secs: u64) -> Option<SmtpServer> {
        let Some(program) = crate::venv_bin("aiosmtpd") else {
            crate::skip_or_fail("aiosmtpd", "not installed");
            return None;
        };
        Self::start_with(program, Handler::SlowFirst(delay_secs))
    }

    /// [`SmtpServer::start`] speaking TLS with `cert` (aiosmtpd's `--tlscert`/`--tlskey`):
    /// `STARTTLS`, required before anything is sent ([`SmtpTls::Starttls`]), or TLS from
    /// the first byte ([`SmtpTls::Implicit`], `--smtpscert`).
    pub fn start_tls(mode: SmtpTls, cert: &crate::tls::Cert) -> Option<SmtpServer> {
        let Some(program) = crate::venv_bin("aiosmtpd") else {
            crate::skip_or_fail("aiosmtpd", "not installed");
            return None;
        };
        Self::start_configured(program, Handler::Mailbox, Some((mode, cert)))
    }

    fn start_with(program: PathBuf, handler: Handler) -> Option<SmtpServer> {
        Self::start_configured(program, handler, None)
    }

    fn start_configured(
        program: PathBuf,
        handler: Handler,
        tls: Option<(SmtpTls, &crate::tls::Cert)>,
    ) -> Option<SmtpServer> {
        let result = (|| -> anyhow::Result<SmtpServer> {
            let dir = tempfile::tempdir()?;
            let tls = match tls {
                None => None,
                Some((mode, cert)) => {
                    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
                    std::fs::write(&c, &cert.cert_pem)?;
                    std::fs::write(&k, &cert.key_pem)?;
                    Some((mode, c, k))
                }
            };
            let mut s = SmtpServer {
                port: crate::free_port()?,
                program,
                dir,
                child: None,
                handler,
                tls,
            };
            s.restart()?;
            Ok(s)
        })();
        match result {
            Ok(s) => Some(s),
            Err(e) => {
                crate::skip_or_fail("aiosmtpd", &format!("{e:#}"));
                None
            }
        }
    }

    /// The Maildir the messages are stored in.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// A port nothing listens on (for "SMTP down" from the start).
    pub fn closed_port() -> anyhow::Result<u16> {
        crate::free_port()
    }

    /// Starts the server again (same port, same mailbox) and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut cmd = Command::new(&self.program);
        cmd.arg("-n")
            .arg("-l")
            .arg(format!("127.0.0.1:{}", self.port));
        if let Some((mode, cert, key)) = &self.tls {
            let (c, k) = match mode {
                SmtpTls::Starttls => ("--tlscert", "--tlskey"),
                SmtpTls::Implicit => ("--smtpscert", "--smtpskey"),
            };
            cmd.arg(c).arg(cert).arg(k).arg(key);
        }
        cmd.arg("-c");
        match self.handler {
            Handler::Mailbox => {
                cmd.arg("aiosmtpd.handlers.Mailbox").arg(self.maildir());
            }
            Handler::SlowFirst(delay) => {
                std::fs::write(self.dir.path().join("lodge_smtp_handlers.py"), HANDLERS)?;
                cmd.env("PYTHONPATH", self.dir.path())
                    .arg("lodge_smtp_handlers.SlowFirstAnswer")
                    .arg(self.maildir())
                    .arg(delay.to_string());
            }
            Handler::RefuseRecipients => {
                std::fs::write(self.dir.path().join("lodge_smtp_handlers.py"), HANDLERS)?;
                cmd.env("PYTHONPATH", self.dir.path())
                    .arg("lodge_smtp_handlers.RefuseRecipients")
                    .arg(self.maildir());
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                self.dir.path().join("aiosmtpd.log"),
            )?))
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "aiosmtpd exited ({status}): {}",
                    crate::tail(&self.dir.path().join("aiosmtpd.log"), 20)
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!("aiosmtpd did not listen on port {} in 20 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (the port then refuses connections); messages stay readable.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received so far, oldest first (by file time, then name).
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((modified, e.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read(p).ok())
            .map(|b| Mail {
                text: decode_qp(&String::from_utf8_lossy(&b)),
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold_and_qp_decodes() {
        let m = Mail {
            text: decode_qp(
                "Subject: Invoice INV-1:\r\n 5.00 USD due\r\nMessage-ID: <a@b>\r\n\r\nAmount =3D 5.00 U=\r\nSD\r\n",
            ),
        };
        assert_eq!(m.subject(), "Invoice INV-1: 5.00 USD due");
        assert_eq!(m.message_id(), "<a@b>");
        assert!(m.text.contains("Amount = 5.00 USD"), "{}", m.text);
    }
}
