//! A private MariaDB server for database tests.
//!
//! [`MariaDbInstance::start`] makes a data directory with `mariadb-install-db` in a temp
//! dir and runs `mariadbd` (Debian `mariadb-server`) on it: TCP on a free 127.0.0.1 port,
//! a unix socket in the temp dir, `--user=root` when the test runs as root, no binary log,
//! grants checked (never `--skip-grant-tables`). It then creates an administrative user
//! with a random password ([`MariaDbInstance::admin_url`]), the login Lodge is given. It is
//! stopped on drop, and a `/proc` watchdog stops it should the test process die without
//! dropping it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{
    find_in_path, is_executable, listening, running_as_root, stop_process_group, tail,
    wait_until_ready,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Args: $1 mariadbd, $2 data dir, $3 socket, $4 port, $5 pid file, $6 error log,
/// $7 test pid, $8 `--user=…`, $9 `--tmpdir=…`.
const WATCHDOG: &str = r#"
"$1" --no-defaults --datadir="$2" --socket="$3" --port="$4" --bind-address=127.0.0.1 \
  --pid-file="$5" --log-error="$6" "$8" "$9" --skip-log-bin --innodb-buffer-pool-size=16M \
  --skip-name-resolve --max-connections=50 >/dev/null 2>&1 &
md=$!
while [ -d "/proc/$7" ] && kill -0 $md 2>/dev/null; do sleep 0.5; done
kill -TERM $md 2>/dev/null
wait $md
"#;

/// `--tmpdir=<dir>/tmp`, the directory made.
fn tmpdir_arg(dir: &Path) -> anyhow::Result<String> {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).context("the server's temporary directory")?;
    Ok(format!("--tmpdir={}", tmp.display()))
}

fn binary(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    find_in_path(name)
        .into_iter()
        .chain(dirs.iter().map(|d| Path::new(d).join(name)))
        .find(|p| is_executable(p))
}

/// `mariadbd`: `$LODGE_MARIADBD_BIN`, `PATH`, then `/usr/sbin`.
pub fn mariadbd_binary() -> Option<PathBuf> {
    std::env::var_os("LODGE_MARIADBD_BIN")
        .map(PathBuf::from)
        .filter(|p| is_executable(p))
        .or_else(|| binary("mariadbd", &["/usr/sbin", "/usr/local/sbin"]))
}

/// `mariadb-install-db`.
pub fn install_db_binary() -> Option<PathBuf> {
    binary("mariadb-install-db", &["/usr/bin", "/usr/local/bin"])
}

/// `mariadb-dump` (Debian `mariadb-client`).
pub fn dump_binary() -> Option<PathBuf> {
    binary("mariadb-dump", &["/usr/bin", "/usr/local/bin"])
}

/// Why MariaDB cannot run here (`None`: it can).
pub fn missing() -> Option<String> {
    if mariadbd_binary().is_none() {
        return Some("mariadbd not found (Debian mariadb-server)".into());
    }
    if install_db_binary().is_none() {
        return Some("mariadb-install-db not found (Debian mariadb-server)".into());
    }
    if dump_binary().is_none() {
        return Some("mariadb-dump not found (Debian mariadb-client)".into());
    }
    None
}

/// A running MariaDB owned by the test; stopped on drop.
#[derive(Debug)]
pub struct MariaDbInstance {
    dir: tempfile::TempDir,
    port: u16,
    admin_password: String,
    watchdog: std::process::Child,
}

/// The administrative user the tests give Lodge.
pub const ADMIN_USER: &str = "lodge_admin";

/// Whether root connects over `socket` within a few seconds.
async fn root_answers(socket: &Path) -> bool {
    use sqlx::mysql::MySqlConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    for _ in 0..20 {
        let opts = MySqlConnectOptions::new().socket(socket).username("root");
        if let Ok(c) = opts.connect().await {
            let _ = c.close().await;
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

impl MariaDbInstance {
    /// Starts MariaDB. `Ok(None)` when it is not installed (call [`crate::skip_or_fail`]
    /// with [`missing`]'s reason).
    pub async fn start() -> anyhow::Result<Option<MariaDbInstance>> {
        if missing().is_some() {
            return Ok(None);
        }
        let mariadbd = mariadbd_binary().context("mariadbd")?;
        let install = install_db_binary().context("mariadb-install-db")?;
        let dir = tempfile::Builder::new()
            .prefix("lodge-mariadb-")
            .tempdir()?;
        let d = dir.path();
        let data = d.join("data");
        // Each server's temporary files in its own directory: servers sharing /tmp (tests
        // at once) collide on temporary table names there, and `mariadb-install-db` then
        // fails ("Could not remove temporary table '/tmp/#sql-temptable-…'", about half of
        // six run at once on this machine; none of 24 with their own directories).
        let tmp = tmpdir_arg(d)?;
        let user = if running_as_root() {
            "--user=root".to_owned()
        } else {
            format!("--user={}", std::env::var("USER").unwrap_or_default())
        };
        let out = tokio::process::Command::new(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(&user)
            .arg(&tmp)
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .output()
            .await
            .context("running mariadb-install-db")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut attempt = 1;
        loop {
            match Self::start_on_a_free_port(&mariadbd, &dir, &user).await {
                Err(e) if attempt < 5 && format!("{e:#}").contains("in use") => attempt += 1,
                // Its socket made, but nobody answers on it: the port it was given was
                // taken meanwhile by another test's server (whose port then looked like
                // this one's), and it gave up (once in a whole suite: "Connection refused"
                // as root). Again on another port.
                Ok((_, mut watchdog))
                    if attempt < 5 && !root_answers(&dir.path().join("mysqld.sock")).await =>
                {
                    stop_process_group(&mut watchdog, Duration::ZERO);
                    attempt += 1;
                }
                Ok((port, watchdog)) => {
                    let mut instance = MariaDbInstance {
                        dir,
                        port,
                        admin_password: format!("Adm{}", uuid::Uuid::new_v4().simple()),
                        watchdog,
                    };
                    instance.create_admin().await?;
                    return Ok(Some(instance));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_on_a_free_port(
        mariadbd: &Path,
        dir: &tempfile::TempDir,
        user: &str,
    ) -> anyhow::Result<(u16, std::process::Child)> {
        let d = dir.path();
        let port = crate::free_port()?;
        let socket = d.join("mysqld.sock");
        let pid_file = d.join("mysqld.pid");
        let log = d.join("error.log");
        let _ = std::fs::remove_file(&log);
        let pid_arg = std::process::id().to_string();
        let port_arg = port.to_string();
        let data = d.join("data");
        let tmp = tmpdir_arg(d)?;
        let mut watchdog = crate::spawn_watchdog(
            WATCHDOG,
            &[
                mariadbd.as_os_str(),
                data.as_os_str(),
                socket.as_os_str(),
                port_arg.as_ref(),
                pid_file.as_os_str(),
                log.as_os_str(),
                pid_arg.as_ref(),
                user.as_ref(),
                tmp.as_ref(),
            ],
            None,
        )
        .context("spawning mariadbd")?;
        let ready = wait_until_ready(
            &mut watchdog,
            &format!("mariadbd (127.0.0.1:{port})"),
            TIMEOUT,
            || tail(&log, 30),
            || listening(port) && socket.exists(),
        )
        .await;
        match ready {
            Ok(()) => Ok((port, watchdog)),
            Err(e) => {
                stop_process_group(&mut watchdog, Duration::ZERO);
                Err(e)
            }
        }
    }

    /// Connects as root over the socket (no password: a fresh data directory's root) and
    /// creates the administrative user, on 127.0.0.1 and localhost.
    async fn create_admin(&mut self) -> anyhow::Result<()> {
        use sqlx::mysql::MySqlConnectOptions;
        use sqlx::{ConnectOptions, Connection};
        let mut conn = MySqlConnectOptions::new()
            .socket(self.socket())
            .username("root")
            .connect()
            .await
            .context("connecting to MariaDB as root")?;
        for host in ["127.0.0.1", "localhost"] {
            for sql in [
                format!(
                    "CREATE USER '{ADMIN_USER}'@'{host}' IDENTIFIED BY '{}'",
                    self.admin_password
                ),
                format!("GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'{host}' WITH GRANT OPTION"),
            ] {
                sqlx::raw_sql(&sql)
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("creating the admin user ({host})"))?;
            }
        }
        conn.close().await?;
        Ok(())
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// `mysql://lodge_admin:…@127.0.0.1:<port>/`: the administrative login.
    pub fn admin_url(&self) -> String {
        format!(
            "mysql://{ADMIN_USER}:{}@127.0.0.1:{}/",
            self.admin_password, self.port
        )
    }

    /// The server's error log so far (for failure messages).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("error.log"), 40)
    }
}

impl Drop for MariaDbInstance {
    fn drop(&mut self) {
        stop_process_group(&mut self.watchdog, Duration::from_secs(10));
    }
}
