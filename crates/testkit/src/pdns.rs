//! A private PowerDNS authoritative server for DNS tests.
//!
//! [`PdnsInstance::start`] runs `pdns_server` (Debian `pdns-server` +
//! `pdns-backend-sqlite3`) with the gsqlite3 backend in a temp dir: DNS on a free
//! 127.0.0.1 UDP/TCP port ([`PdnsInstance::dns_port`]), the HTTP API on another
//! ([`PdnsInstance::api_url`], key [`PdnsInstance::api_key`]). `daemon=no guardian=no`,
//! `security-poll-suffix=` (no outbound query), caches off (an answer reflects the last API
//! change). It is stopped on drop, and a `/proc` watchdog stops it should the test process
//! die without dropping it. [`dig`] asks it with `dig` (dnsutils).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{find_in_path, is_executable, listening, stop_process_group, tail, wait_until_ready};

const TIMEOUT: Duration = Duration::from_secs(15);
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

/// Args: $1 pdns_server, $2 config dir, $3 log file, $4 test pid.
const WATCHDOG: &str = r#"
"$1" --config-dir="$2" >"$3" 2>&1 &
pd=$!
while [ -d "/proc/$4" ] && kill -0 $pd 2>/dev/null; do sleep 0.5; done
kill -TERM $pd 2>/dev/null
wait $pd
"#;

/// `pdns_server`: `$LODGE_PDNS_BIN`, `PATH`, then `/usr/sbin`.
pub fn pdns_binary() -> Option<PathBuf> {
    std::env::var_os("LODGE_PDNS_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(find_in_path("pdns_server"))
        .chain(["/usr/sbin/pdns_server", "/usr/local/sbin/pdns_server"].map(PathBuf::from))
        .find(|p| is_executable(p))
}

/// `dig`, when installed.
pub fn dig_binary() -> Option<PathBuf> {
    find_in_path("dig").or_else(|| {
        let p = PathBuf::from("/usr/bin/dig");
        is_executable(&p).then_some(p)
    })
}

/// Why PowerDNS cannot run here (`None`: it can): a missing binary, backend or `dig`.
pub fn missing() -> Option<String> {
    if pdns_binary().is_none() {
        return Some("pdns_server not found (Debian pdns-server)".into());
    }
    if !Path::new(SCHEMA).is_file() {
        return Some(format!("{SCHEMA} not found (Debian pdns-backend-sqlite3)"));
    }
    if dig_binary().is_none() {
        return Some("dig not found (Debian dnsutils)".into());
    }
    None
}

/// A running PowerDNS owned by the test; stopped on drop.
#[derive(Debug)]
pub struct PdnsInstance {
    dir: tempfile::TempDir,
    dns_port: u16,
    api_port: u16,
    api_key: String,
    watchdog: std::process::Child,
}

impl PdnsInstance {
    /// Starts PowerDNS. `Ok(None)` when it (or its backend, or `dig`) is not installed
    /// (call [`crate::skip_or_fail`] with [`missing`]'s reason).
    pub async fn start() -> anyhow::Result<Option<PdnsInstance>> {
        if missing().is_some() {
            return Ok(None);
        }
        let binary = pdns_binary().context("pdns_server")?;
        let mut attempt = 1;
        loop {
            match Self::start_on_free_ports(&binary).await {
                Err(e) if attempt < 5 && format!("{e:#}").contains("in use") => attempt += 1,
                r => return r.map(Some),
            }
        }
    }

    async fn start_on_free_ports(binary: &Path) -> anyhow::Result<PdnsInstance> {
        let dir = tempfile::Builder::new().prefix("lodge-pdns-").tempdir()?;
        let d = dir.path();
        let db = d.join("pdns.sqlite3");
        create_database(&db).await?;
        let dns_port = free_udp_and_tcp_port()?;
        let api_port = crate::free_port()?;
        let api_key = format!("lodge-test-{}", uuid::Uuid::new_v4().simple());
        let conf = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={db}\n\
             local-address=127.0.0.1\n\
             local-port={dns_port}\n\
             socket-dir={d}\n\
             api=yes\n\
             api-key={api_key}\n\
             webserver=yes\n\
             webserver-address=127.0.0.1\n\
             webserver-port={api_port}\n\
             webserver-allow-from=127.0.0.0/8\n\
             daemon=no\n\
             guardian=no\n\
             disable-syslog=yes\n\
             security-poll-suffix=\n\
             cache-ttl=0\n\
             negquery-cache-ttl=0\n\
             query-cache-ttl=0\n\
             consistent-backends=yes\n\
             zone-cache-refresh-interval=0\n\
             loglevel=4\n",
            db = db.display(),
            d = d.display(),
        );
        std::fs::write(d.join("pdns.conf"), conf)?;
        let log = d.join("pdns.log");
        let pid_arg = std::process::id().to_string();
        let watchdog = crate::spawn_watchdog(
            WATCHDOG,
            &[
                binary.as_os_str(),
                d.as_os_str(),
                log.as_os_str(),
                pid_arg.as_ref(),
            ],
            None,
        )
        .context("spawning pdns_server")?;
        let mut instance = PdnsInstance {
            dir,
            dns_port,
            api_port,
            api_key,
            watchdog,
        };
        instance.wait_ready(&log).await?;
        Ok(instance)
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let (api, dns) = (self.api_port, self.dns_port);
        wait_until_ready(
            &mut self.watchdog,
            &format!("pdns_server (API 127.0.0.1:{api}, DNS :{dns})"),
            TIMEOUT,
            || tail(log, 30),
            || listening(api) && listening(dns),
        )
        .await
    }

    /// The API's base URL (`http://127.0.0.1:<port>`).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The DNS port on 127.0.0.1 (UDP and TCP).
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("pdns.log"), 40)
    }
}

impl Drop for PdnsInstance {
    fn drop(&mut self) {
        // pdns_server runs in the watchdog's process group: end them together.
        stop_process_group(&mut self.watchdog, Duration::from_secs(5));
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP.
fn free_udp_and_tcp_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = crate::free_port()?;
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

/// The gsqlite3 backend's database, from the package's schema.
async fn create_database(path: &Path) -> anyhow::Result<()> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let schema = std::fs::read_to_string(SCHEMA).with_context(|| format!("reading {SCHEMA}"))?;
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .context("creating the PowerDNS database")?;
    sqlx::raw_sql(&schema)
        .execute(&mut conn)
        .await
        .context("loading the PowerDNS schema")?;
    conn.close().await?;
    Ok(())
}

/// `dig @127.0.0.1 -p <port> +short <name> <type>`: the answers, one a line (empty:
/// none).
pub async fn dig(port: u16, name: &str, kind: &str) -> anyhow::Result<Vec<String>> {
    let dig = dig_binary().context("dig not found")?;
    let out = tokio::process::Command::new(dig)
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+tries=2",
            "+time=2",
            name,
            kind,
        ])
        .output()
        .await
        .context("running dig")?;
    if !out.status.success() {
        bail!(
            "dig {name} {kind} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    Ok(lines)
}
