//! A private pebble (Let's Encrypt's test ACME CA, Debian `pebble`) for TLS tests.
//!
//! [`PebbleInstance::start`] runs `pebble -strict` in a temp dir with a certificate of its own
//! for its ACME listener (a throwaway CA and a leaf for `localhost`/`127.0.0.1` made with
//! rcgen: rustls refuses a lone self-signed certificate), the ACME directory and the
//! management API on free loopback ports, HTTP-01 checks sent to `http_port` (the test's
//! nginx) and its DNS lookups to `dns_server` (the test's PowerDNS). `PEBBLE_VA_NOSLEEP=1`
//! (no random wait before validating) and `PEBBLE_WFE_NONCEREJECT=0` (no random bad nonces).
//! [`PebbleInstance::issuing_root`] fetches the root it signs with (`/roots/0`). It is
//! stopped on drop, and a `/proc` watchdog stops it should the test process die first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{find_in_path, is_executable, listening, stop_process_group, tail, wait_until_ready};

const TIMEOUT: Duration = Duration::from_secs(15);

/// Args: $1 pebble, $2 config, $3 DNS server, $4 log, $5 test pid.
const WATCHDOG: &str = r#"
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 "$1" -config "$2" -strict -dnsserver "$3" >"$4" 2>&1 &
pb=$!
while [ -d "/proc/$5" ] && kill -0 $pb 2>/dev/null; do sleep 0.5; done
kill -TERM $pb 2>/dev/null
wait $pb
"#;

/// `pebble`: `$LODGE_PEBBLE_BIN`, `PATH`, then `/usr/bin`.
pub fn pebble_binary() -> Option<PathBuf> {
    std::env::var_os("LODGE_PEBBLE_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(find_in_path("pebble"))
        .chain(["/usr/bin/pebble", "/usr/local/bin/pebble"].map(PathBuf::from))
        .find(|p| is_executable(p))
}

/// A running pebble owned by the test; stopped on drop.
#[derive(Debug)]
pub struct PebbleInstance {
    dir: tempfile::TempDir,
    port: u16,
    management_port: u16,
    ca_pem: String,
    watchdog: std::process::Child,
}

impl PebbleInstance {
    /// Starts pebble validating HTTP-01 on 127.0.0.1:`http_port` and resolving names with
    /// the DNS server at `dns_server` (`127.0.0.1:<port>`). `Ok(None)` when pebble is not
    /// installed (call [`crate::skip_or_fail`]).
    pub async fn start(http_port: u16, dns_server: &str) -> anyhow::Result<Option<Self>> {
        let Some(binary) = pebble_binary() else {
            return Ok(None);
        };
        let mut attempt = 1;
        loop {
            match Self::start_on_free_ports(&binary, http_port, dns_server).await {
                Err(e) if attempt < 5 && format!("{e:#}").contains("in use") => attempt += 1,
                r => return r.map(Some),
            }
        }
    }

    async fn start_on_free_ports(
        binary: &Path,
        http_port: u16,
        dns_server: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("lodge-pebble-").tempdir()?;
        let d = dir.path();
        let (ca_pem, cert_pem, key_pem) = listener_certificate()?;
        std::fs::write(d.join("ca.pem"), &ca_pem)?;
        std::fs::write(d.join("cert.pem"), cert_pem)?;
        std::fs::write(d.join("key.pem"), key_pem)?;
        let port = crate::free_port()?;
        let management_port = crate::free_port()?;
        let tls_port = crate::free_port()?;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": d.join("cert.pem"),
                "privateKey": d.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = d.join("pebble.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let log = d.join("pebble.log");
        let pid_arg = std::process::id().to_string();
        let watchdog = crate::spawn_watchdog(
            WATCHDOG,
            &[
                binary.as_os_str(),
                config_path.as_os_str(),
                dns_server.as_ref(),
                log.as_os_str(),
                pid_arg.as_ref(),
            ],
            None,
        )
        .context("spawning pebble")?;
        let mut instance = PebbleInstance {
            dir,
            port,
            management_port,
            ca_pem,
            watchdog,
        };
        instance.wait_ready(&log).await?;
        Ok(instance)
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let (acme, management) = (self.port, self.management_port);
        wait_until_ready(
            &mut self.watchdog,
            &format!("pebble (127.0.0.1:{acme}, :{management})"),
            TIMEOUT,
            || tail(log, 30),
            || listening(acme) && listening(management),
        )
        .await
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA (PEM) of pebble's own listeners: what an ACME client must trust.
    pub fn listener_ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The listener CA as a file (for `--acme-ca-file`).
    pub fn listener_ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root pebble issues certificates under (PEM), from its management API.
    pub async fn issuing_root(&self) -> anyhow::Result<String> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?;
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = client
            .get(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .send()
            .await
            .context("GET /roots/0")?;
        if !resp.status().is_success() {
            bail!("pebble's /roots/0 answered {}", resp.status());
        }
        Ok(resp.text().await?)
    }

    /// Pebble's log so far (for failure messages).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("pebble.log"), 60)
    }
}

impl Drop for PebbleInstance {
    fn drop(&mut self) {
        stop_process_group(&mut self.watchdog, Duration::from_secs(5));
    }
}

/// A throwaway CA and a leaf certificate (with its key) for `localhost` and `127.0.0.1`
/// signed by it, all PEM.
fn listener_certificate() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Lodge test CA for pebble");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem()))
}
