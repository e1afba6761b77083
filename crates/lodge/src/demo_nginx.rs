//! `serve --demo`'s own nginx: where nginx is installed, the demo runs a private instance
//! (its configuration, pid file, logs and temp files under `./lodge-data/nginx`), listening
//! on a free loopback port, and points the nginx driver at it, so the first paid order
//! serves its welcome page at once. It is stopped when Lodge stops; one left running by a
//! Lodge that was killed is stopped at the next start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lodge_services::drivers::nginx::NginxConfig;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx binary: the configured one when it is a path or on the `PATH`, else the
/// usual locations (`/usr/sbin` is not on every user's `PATH`). `None`: not installed.
pub fn find_binary(configured: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if configured.components().count() > 1 {
        return executable(configured).then(|| configured.to_owned());
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(configured));
    in_path
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"]
                .iter()
                .map(|d| Path::new(d).join(configured)),
        )
        .find(|p| executable(p))
}

/// A running demo nginx. [`DemoNginx::stop`] ends it; dropping it without stopping kills
/// the master (its workers then exit on their own).
#[derive(Debug)]
pub struct DemoNginx {
    binary: PathBuf,
    prefix: PathBuf,
    conf: PathBuf,
    error_log: PathBuf,
    port: u16,
    child: tokio::process::Child,
}

/// Absolute, from the working directory (nginx reads relative paths from its prefix).
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()
            .context("reading the working directory")?
            .join(p))
    }
}

/// The loopback port the operator asked the demo's nginx to listen on (`--nginx-listen`
/// `127.0.0.1:PORT` or `PORT`), `None` for the default (`80`: the demo then picks a free
/// port, as it runs unprivileged beside a system nginx). Any other address is refused: the
/// demo's sites answer on loopback only (found by the /apiv2 audit: the option was ignored
/// without a word and the sites answered on a port of the demo's choosing).
pub fn requested_port(listen: &str) -> anyhow::Result<Option<u16>> {
    let listen = listen.trim();
    if listen == "80" {
        return Ok(None);
    }
    let port = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip() == std::net::Ipv4Addr::LOCALHOST => Some(a.port()),
        Ok(_) => None,
        Err(_) => listen.parse::<u16>().ok(),
    };
    match port {
        Some(p) if p != 0 => Ok(Some(p)),
        _ => anyhow::bail!(
            "the demo's nginx listens on loopback: give --nginx-listen as 127.0.0.1:PORT or \
             PORT (not {listen:?}), or leave it out for a free port"
        ),
    }
}

/// Whether the demo finds an nginx to run (else it runs without one, and `--nginx-listen`
/// is not its concern).
pub fn installed(nginx: &NginxConfig) -> bool {
    find_binary(&nginx.binary).is_some()
}

impl DemoNginx {
    /// Starts nginx for the demo under `data_dir/nginx`, serving `nginx.sites_dir`; returns
    /// it with the driver's configuration pointed at it. `Ok(None)`: nginx is not installed.
    /// It listens on the port `nginx.listen` asks for ([`requested_port`]), else on the
    /// port of its last run when free, else on a free one.
    pub async fn start(
        data_dir: &Path,
        nginx: &NginxConfig,
    ) -> anyhow::Result<Option<(DemoNginx, NginxConfig)>> {
        let Some(binary) = find_binary(&nginx.binary) else {
            return Ok(None);
        };
        let requested = requested_port(&nginx.listen)?;
        let prefix = absolute(&data_dir.join("nginx"))?;
        let sites_dir = absolute(&nginx.sites_dir)?;
        for dir in [
            prefix.join("logs"),
            prefix.join("temp/client_body"),
            prefix.join("temp/proxy"),
            prefix.join("temp/fastcgi"),
            prefix.join("temp/uwsgi"),
            prefix.join("temp/scgi"),
            sites_dir.clone(),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conf = prefix.join("nginx.conf");
        let error_log = prefix.join("logs/error.log");
        // One left running by a Lodge that was killed holds the port: stop it first.
        stop_stale(&binary, &prefix, &conf, &error_log).await;
        let port_file = prefix.join("port");
        // The same port as last time when it is free: the sites' server blocks name it.
        let previous: Option<u16> = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let mut last_error = None;
        for attempt in 0..5 {
            let port = match (requested, previous.filter(|_| attempt == 0)) {
                (Some(p), _) => p,
                (None, Some(p)) if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
                _ => free_port()?,
            };
            std::fs::write(&conf, main_conf(&prefix, &sites_dir, port, &conf)?)
                .with_context(|| format!("writing {}", conf.display()))?;
            relisten_sites(&sites_dir, port)?;
            let mut demo = DemoNginx {
                binary: binary.clone(),
                prefix: prefix.clone(),
                conf: conf.clone(),
                error_log: error_log.clone(),
                port,
                child: spawn(&binary, &prefix, &conf, &error_log)?,
            };
            match demo.wait_ready().await {
                Ok(()) => {
                    std::fs::write(&port_file, format!("{port}\n"))
                        .with_context(|| format!("writing {}", port_file.display()))?;
                    let cfg = NginxConfig {
                        binary,
                        args: demo.args(),
                        sites_dir,
                        web_root: absolute(&nginx.web_root)?,
                        archive_dir: absolute(&nginx.archive_dir)?,
                        listen: format!("127.0.0.1:{port}"),
                        tls_listen: nginx.tls_listen.clone(),
                    };
                    return Ok(Some((demo, cfg)));
                }
                Err(e) => {
                    let _ = demo.child.kill().await;
                    let busy = format!("{e:#}").contains("Address already in use");
                    last_error = Some(e);
                    if !busy || requested.is_some() {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
    }

    /// The loopback port the sites answer on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its configuration file.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The arguments every nginx call of the driver needs to reach this instance.
    fn args(&self) -> Vec<String> {
        vec![
            "-c".into(),
            self.conf.display().to_string(),
            "-p".into(),
            format!("{}/", self.prefix.display()),
            "-e".into(),
            self.error_log.display().to_string(),
        ]
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.prefix.join("nginx.pid");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "nginx exited ({status}); error log:\n{}",
                    tail(&self.error_log)
                );
            }
            let up = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok();
            if up && pid_file.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx did not start on 127.0.0.1:{}; error log:\n{}",
                    self.port,
                    tail(&self.error_log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops nginx (a fast shutdown) and waits for it.
    pub async fn stop(mut self) {
        let _ = tokio::process::Command::new(&self.binary)
            .args(self.args())
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(START_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn spawn(
    binary: &Path,
    prefix: &Path,
    conf: &Path,
    error_log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(binary)
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-e")
        .arg(error_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", binary.display()))
}

/// Stops an nginx of this prefix that is still running (its pid file names a live nginx).
async fn stop_stale(binary: &Path, prefix: &Path, conf: &Path, error_log: &Path) {
    let pid_file = prefix.join("nginx.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let is_nginx = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("nginx"))
    };
    if !is_nginx(pid) || !conf.exists() {
        let _ = std::fs::remove_file(&pid_file);
        return;
    }
    tracing::info!(pid, "stopping the demo nginx a previous run left running");
    let _ = tokio::process::Command::new(binary)
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-e")
        .arg(error_log)
        .args(["-s", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    let deadline = Instant::now() + START_TIMEOUT;
    while is_nginx(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Points the sites Lodge wrote for an earlier run (on another port) at `port`.
fn relisten_sites(sites: &Path, port: u16) -> anyhow::Result<()> {
    let listen = format!("    listen 127.0.0.1:{port};");
    for entry in std::fs::read_dir(sites).with_context(|| format!("reading {}", sites.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.starts_with("# Managed by Lodge") {
            continue;
        }
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("    listen 127.0.0.1:") {
                    listen.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let new = format!("{}\n", new.join("\n"));
        if new != text {
            std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn main_conf(prefix: &Path, sites: &Path, port: u16, conf: &Path) -> anyhow::Result<String> {
    // Run by root, the workers would be `nobody`, who cannot read document roots in a
    // private home directory: the demo's workers run as its owner (root) then.
    let root = std::fs::metadata(conf)
        .or_else(|_| std::fs::metadata(prefix))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        })
        .context("reading the demo nginx directory")?;
    let user = if root { "user root root;\n" } else { "" };
    let mime = if Path::new("/etc/nginx/mime.types").exists() {
        "include /etc/nginx/mime.types;"
    } else {
        "types { text/html html htm; text/css css; application/javascript js; application/json json; text/plain txt; }"
    };
    let d = prefix.display();
    Ok(format!(
        "# Lodge's demo nginx (lodge serve --demo). Rewritten at every start.\n\
         {user}daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/logs/error.log notice;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n    {mime}\n    default_type application/octet-stream;\n    access_log {d}/logs/access.log;\n    client_body_temp_path {d}/temp/client_body;\n    proxy_temp_path {d}/temp/proxy;\n    fastcgi_temp_path {d}/temp/fastcgi;\n    uwsgi_temp_path {d}/temp/uwsgi;\n    scgi_temp_path {d}/temp/scgi;\n    server_names_hash_bucket_size 512;\n    include {sites}/*.conf;\n    server {{\n        listen 127.0.0.1:{port} default_server;\n        return 404;\n    }}\n}}\n",
        sites = sites.display(),
    ))
}

fn tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(20);
            lines.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::requested_port;

    #[test]
    fn the_demo_listens_where_asked_on_loopback_only() {
        assert_eq!(requested_port("80").unwrap(), None);
        assert_eq!(requested_port("127.0.0.1:24202").unwrap(), Some(24202));
        assert_eq!(requested_port("8081").unwrap(), Some(8081));
        for refused in [
            "0.0.0.0:8080",
            "[::]:80",
            "example.com:80",
            "127.0.0.1:0",
            "x",
        ] {
            assert!(requested_port(refused).is_err(), "{refused}");
        }
    }
}
