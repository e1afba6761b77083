//! A private PHP-FPM master for PHP tests.
//!
//! [`PhpFpmInstance::start`] runs `php-fpm8.2` (Debian `php8.2-fpm`) in the foreground
//! (`-F`) with its own configuration (`-y`), pid file and error log in a temp dir. The
//! configuration includes `<dir>/pools/*.conf` (where the nginx driver writes its pools)
//! and keeps one pool of its own, `lodge-base` (php-fpm refuses to run without any pool,
//! so an account's pool can come and go). Run as root, the master gets `-R` and the pools
//! run as root; otherwise as the test's user. It is stopped on drop, and a `/proc`
//! watchdog stops it should the test process die without dropping it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{
    find_in_path, is_alive, is_executable, running_as_root, signal, stop_process_group, tail,
    wait_until_ready,
};

const TIMEOUT: Duration = Duration::from_secs(15);

/// Args: $1 php-fpm, $2 config, $3 log, $4 test pid, $5 `-R` (as root) or `-F` again.
const WATCHDOG: &str = r#"
"$1" -F -y "$2" "$5" >"$3" 2>&1 &
pf=$!
while [ -d "/proc/$4" ] && kill -0 $pf 2>/dev/null; do sleep 0.5; done
kill -TERM $pf 2>/dev/null
wait $pf
"#;

/// `php-fpm8.2`: `$LODGE_PHP_FPM_BIN`, `PATH`, then `/usr/sbin`.
pub fn php_fpm_binary() -> Option<PathBuf> {
    std::env::var_os("LODGE_PHP_FPM_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(find_in_path("php-fpm8.2"))
        .chain(find_in_path("php-fpm"))
        .chain(["/usr/sbin/php-fpm8.2", "/usr/sbin/php-fpm"].map(PathBuf::from))
        .find(|p| is_executable(p))
}

/// Why PHP-FPM cannot run here (`None`: it can).
pub fn missing() -> Option<String> {
    php_fpm_binary()
        .is_none()
        .then(|| "php-fpm8.2 not found (Debian php8.2-fpm)".to_owned())
}

/// A running PHP-FPM master owned by the test; stopped on drop.
#[derive(Debug)]
pub struct PhpFpmInstance {
    dir: tempfile::TempDir,
    binary: PathBuf,
    conf: PathBuf,
    user: String,
    watchdog: std::process::Child,
}

fn current_user() -> String {
    if running_as_root() {
        return "root".into();
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "nobody".into())
}

impl PhpFpmInstance {
    /// Starts the master. `Ok(None)` when php-fpm is not installed (call
    /// [`crate::skip_or_fail`] with [`missing`]'s reason).
    pub async fn start() -> anyhow::Result<Option<PhpFpmInstance>> {
        let Some(binary) = php_fpm_binary() else {
            return Ok(None);
        };
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("lodge-php-").tempdir()?;
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir_all(d.join("pools"))?;
        std::fs::create_dir_all(d.join("sockets"))?;
        let user = current_user();
        let conf = d.join("php-fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 pid = {d}/php-fpm.pid\n\
                 error_log = {d}/error.log\n\
                 daemonize = no\n\
                 include = {d}/pools/*.conf\n\
                 [lodge-base]\n\
                 user = {user}\n\
                 group = {group}\n\
                 listen = {d}/base.sock\n\
                 pm = ondemand\n\
                 pm.max_children = 1\n",
                d = d.display(),
                group = if user == "root" { "root" } else { "" },
            )
            .replace("group = \n", ""),
        )?;
        let log = d.join("out.log");
        let pid_arg = std::process::id().to_string();
        let flag = if running_as_root() { "-R" } else { "-F" };
        let watchdog = crate::spawn_watchdog(
            WATCHDOG,
            &[
                binary.as_os_str(),
                conf.as_os_str(),
                log.as_os_str(),
                pid_arg.as_ref(),
                flag.as_ref(),
            ],
            None,
        )
        .context("spawning php-fpm")?;
        let mut instance = PhpFpmInstance {
            dir,
            binary,
            conf,
            user,
            watchdog,
        };
        instance.wait_ready().await?;
        Ok(Some(instance))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let base = self.dir.path().join("base.sock");
        let (pid_file, dir) = (self.pid_file(), self.dir.path().to_owned());
        wait_until_ready(
            &mut self.watchdog,
            "php-fpm",
            TIMEOUT,
            || master_log(&dir),
            || pid_file.is_file() && std::os::unix::net::UnixStream::connect(&base).is_ok(),
        )
        .await
    }

    /// The php-fpm binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Arguments of a configuration test of this master (`-y <conf>`, and `-R` as root).
    pub fn test_args(&self) -> Vec<String> {
        let mut args = vec!["-y".to_owned(), self.conf.display().to_string()];
        if running_as_root() {
            args.push("-R".into());
        }
        args
    }

    /// The directory of pools the master includes.
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.path().join("pools")
    }

    /// A directory for the pools' sockets.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sockets")
    }

    /// The master's pid file (USR2 reloads it).
    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("php-fpm.pid")
    }

    /// The user the pools may run as (root when the test runs as root).
    pub fn pool_user(&self) -> &str {
        &self.user
    }

    /// The master's logs so far (for failure messages).
    pub fn log(&self) -> String {
        master_log(self.dir.path())
    }
}

/// The logs of the master whose directory is `dir`.
fn master_log(dir: &Path) -> String {
    format!(
        "{}\n{}",
        tail(&dir.join("out.log"), 20),
        tail(&dir.join("error.log"), 40)
    )
}

impl Drop for PhpFpmInstance {
    fn drop(&mut self) {
        // php-fpm makes itself a session leader (even with -F): it is not in the
        // watchdog's process group, so it is stopped by its pid first.
        let master = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = master {
            signal("-TERM", &pid.to_string());
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal("-KILL", &pid.to_string());
        }
        stop_process_group(&mut self.watchdog, Duration::from_secs(5));
    }
}
