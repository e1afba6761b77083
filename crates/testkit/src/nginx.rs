//! Private nginx instances for provisioning tests.
//!
//! [`NginxInstance::start`] runs `nginx` (foreground master, one worker) with
//! a generated config in a temp prefix dir. It includes `<sites_dir>/*.conf`
//! and listens on a free 127.0.0.1 port ([`NginxInstance::port`]); site
//! configs written by tests must `listen 127.0.0.1:<port>` too. nginx is
//! stopped on drop, and a `/proc` watchdog stops it should the test process
//! die without dropping it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{find_in_path, is_alive, is_executable, proc_stat as stat, running_as_root, tail};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Args: $1 nginx binary, $2 conf, $3 prefix, $4 error log, $5 test pid.
const WATCHDOG: &str = r#"
"$1" -c "$2" -p "$3/" -e "$4" &
ng=$!
while [ -d "/proc/$5" ]; do sleep 0.5; done
kill -TERM $ng 2>/dev/null
wait $ng
rm -rf "$3"
"#;

/// The nginx binary: `$LODGE_NGINX_BIN`, `PATH`, then the usual locations.
pub fn nginx_binary() -> Option<PathBuf> {
    std::env::var_os("LODGE_NGINX_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(find_in_path("nginx"))
        .chain(
            [
                "/usr/sbin/nginx",
                "/usr/local/sbin/nginx",
                "/usr/local/nginx/sbin/nginx",
            ]
            .map(PathBuf::from),
        )
        .find(|p| is_executable(p))
}

/// A running nginx owned by the test; stopped (and its prefix removed) on drop.
#[derive(Debug)]
pub struct NginxInstance {
    binary: PathBuf,
    prefix: tempfile::TempDir,
    conf: PathBuf,
    error_log: PathBuf,
    port: u16,
    watchdog: std::process::Child,
}

impl NginxInstance {
    /// Starts nginx including `<sites_dir>/*.conf`. `Ok(None)` when nginx is
    /// not installed (call [`crate::skip_or_fail`]).
    pub fn start(sites_dir: &Path) -> anyhow::Result<Option<NginxInstance>> {
        let Some(binary) = nginx_binary() else {
            return Ok(None);
        };
        let sites_dir = sites_dir
            .canonicalize()
            .with_context(|| format!("sites dir {}", sites_dir.display()))?;
        // Another process may bind the chosen port before nginx does: try
        // another one then.
        let mut attempt = 1;
        loop {
            match Self::start_on_a_free_port(&binary, &sites_dir) {
                Err(e) if attempt < 5 && format!("{e:#}").contains("Address already in use") => {
                    attempt += 1;
                }
                result => return result.map(Some),
            }
        }
    }

    fn start_on_a_free_port(binary: &Path, sites_dir: &Path) -> anyhow::Result<NginxInstance> {
        use std::os::unix::fs::PermissionsExt;

        let binary = binary.to_path_buf();
        let prefix = tempfile::Builder::new().prefix("lodge-nginx-").tempdir()?;
        let p = prefix.path();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
        for dir in [
            "logs",
            "temp/client_body",
            "temp/proxy",
            "temp/fastcgi",
            "temp/uwsgi",
            "temp/scgi",
        ] {
            fs::create_dir_all(p.join(dir))?;
        }
        let port = crate::free_port()?;
        let d = p.display();
        // Workers of a root master would otherwise run as `nobody` and could
        // not read roots inside 0700 temp dirs.
        let user = if running_as_root() {
            "user root root;\n"
        } else {
            ""
        };
        let mime = if Path::new("/etc/nginx/mime.types").exists() {
            "include /etc/nginx/mime.types;".to_owned()
        } else {
            "types { text/html html htm; text/css css; application/javascript js; \
             application/json json; text/plain txt; }"
                .to_owned()
        };
        let conf_text = format!(
            "{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log notice;
events {{ worker_connections 256; }}
http {{
    {mime}
    default_type application/octet-stream;
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/temp/client_body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    server_names_hash_bucket_size 512;
    include {sites}/*.conf;
    server {{
        listen 127.0.0.1:{port} default_server;
        return 404;
    }}
}}
",
            sites = sites_dir.display()
        );
        let conf = p.join("nginx.conf");
        fs::write(&conf, conf_text)?;
        let error_log = p.join("logs/error.log");

        let port_less = NginxPaths {
            binary: &binary,
            conf: &conf,
            prefix: p,
            error_log: &error_log,
        };
        port_less.test_config()?;

        let pid_arg = std::process::id().to_string();
        let watchdog = crate::spawn_watchdog(
            WATCHDOG,
            &[
                binary.as_os_str(),
                conf.as_os_str(),
                p.as_os_str(),
                error_log.as_os_str(),
                pid_arg.as_ref(),
            ],
            None,
        )
        .context("spawning nginx")?;
        let instance = NginxInstance {
            binary,
            prefix,
            conf,
            error_log,
            port,
            watchdog,
        };
        instance.wait_ready()?;
        Ok(instance)
    }

    fn paths(&self) -> NginxPaths<'_> {
        NginxPaths {
            binary: &self.binary,
            conf: &self.conf,
            prefix: self.prefix.path(),
            error_log: &self.error_log,
        }
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if up && self.master_pid().is_some() {
                return Ok(());
            }
            let log = fs::read_to_string(&self.error_log).unwrap_or_default();
            if log.contains("[emerg]") || Instant::now() >= deadline {
                bail!(
                    "nginx did not start on 127.0.0.1:{}; error log:\n{}",
                    self.port,
                    tail(&self.error_log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.prefix.path().join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The port of the catch-all server (and for the sites to listen on).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated main config file.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The temp prefix dir (logs, pid file, temp paths).
    pub fn prefix(&self) -> &Path {
        self.prefix.path()
    }

    /// `nginx -t`; the error carries nginx's output.
    pub fn test_config(&self) -> anyhow::Result<()> {
        self.paths().test_config()
    }

    /// Validates the config, then reloads and waits until new workers have
    /// replaced the old ones (so the next request sees the new config).
    pub fn reload(&self) -> anyhow::Result<()> {
        self.test_config()?;
        let master = self.master_pid().context("nginx pid file missing")?;
        let old = live_children(master);
        let out = self.paths().run(&["-s", "reload"])?;
        if !out.status.success() {
            bail!("nginx -s reload failed: {}", output_text(&out));
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let now = live_children(master);
            let replaced = now.iter().any(|p| !old.contains(p));
            if replaced && now.iter().all(|p| !old.contains(p)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if replaced {
                    // New config is live; old workers are still draining.
                    return Ok(());
                }
                bail!(
                    "nginx did not start new workers after reload; error log:\n{}",
                    tail(&self.error_log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NginxInstance {
    fn drop(&mut self) {
        if let Some(pid) = self.master_pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + TIMEOUT;
            while is_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        // nginx runs in the watchdog's process group: end them together, so an nginx that
        // never wrote its pid file (a failed start) does not outlive the test.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.watchdog.id())])
            .status();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        // The TempDir field then removes the prefix.
    }
}

struct NginxPaths<'a> {
    binary: &'a Path,
    conf: &'a Path,
    prefix: &'a Path,
    error_log: &'a Path,
}

impl NginxPaths<'_> {
    fn run(&self, extra: &[&str]) -> anyhow::Result<Output> {
        let mut prefix = self.prefix.as_os_str().to_owned();
        prefix.push("/");
        Command::new(self.binary)
            .arg("-c")
            .arg(self.conf)
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(self.error_log)
            .args(extra)
            .output()
            .with_context(|| format!("running {}", self.binary.display()))
    }

    fn test_config(&self) -> anyhow::Result<()> {
        let out = self.run(&["-t"])?;
        if !out.status.success() {
            bail!("nginx config test failed: {}", output_text(&out));
        }
        Ok(())
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(state, ppid)` from `/proc/<pid>/stat`.
/// Non-zombie children of `parent`.
fn live_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(
            |&pid| matches!(stat(pid), Some((s, ppid)) if ppid == parent && s != 'Z' && s != 'X'),
        )
        .collect()
}

/// Minimal HTTP/1.0 GET against 127.0.0.1:`port` with the given `Host`.
/// Returns the status code and the body.
pub async fn http_get(port: u16, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .context("HTTP request timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nginx_serves_site() {
        let sites = tempfile::tempdir().unwrap();
        let Some(nginx) = NginxInstance::start(sites.path()).unwrap() else {
            crate::skip_or_fail("nginx", "nginx binary not found");
            return;
        };
        let port = nginx.port();
        let (status, _) = http_get(port, "example.test", "/").await.unwrap();
        assert_eq!(status, 404, "no site configured yet");

        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("index.html"), "hello from lodge testkit\n").unwrap();
        let site = format!(
            "server {{\n    listen 127.0.0.1:{port};\n    server_name example.test;\n    \
             root {};\n    index index.html;\n}}\n",
            root.path().display()
        );
        fs::write(sites.path().join("example.test.conf"), site).unwrap();
        nginx.reload().unwrap();

        let (status, body) = http_get(port, "example.test", "/").await.unwrap();
        assert_eq!(status, 200, "body: {body}");
        assert_eq!(body, "hello from lodge testkit\n");
        let (status, _) = http_get(port, "other.test", "/").await.unwrap();
        assert_eq!(status, 404);

        // A broken site is rejected and the running config stays in place.
        fs::write(sites.path().join("broken.conf"), "server { nonsense; }\n").unwrap();
        assert!(nginx.test_config().is_err());
        assert!(nginx.reload().is_err());
        let (status, _) = http_get(port, "example.test", "/").await.unwrap();
        assert_eq!(status, 200);

        let prefix = nginx.prefix().to_path_buf();
        drop(nginx);
        assert!(!prefix.exists(), "prefix removed on drop");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nginx stopped on drop"
        );
    }
}
