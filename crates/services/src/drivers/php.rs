//! PHP-FPM pools of the `nginx` driver (off unless configured): each account gets its own
//! pool file `<pool_dir>/<user>.conf` (included by the operator's php-fpm master), its own
//! unix socket, `open_basedir` = its home, its own temporary, upload and session
//! directories under the home, and limits from its plan and the configuration. Every change
//! is tested (`php-fpm -t`) before the master is reloaded (USR2 to its pid, or the
//! configured command), and the driver waits until the pool's socket answers (or is gone).
//! A suspended or terminated account has no pool: no PHP of it runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::{Account, DriverError};

/// How the driver writes pools and runs php-fpm (all from configuration).
#[derive(Debug, Clone)]
pub struct PhpConfig {
    /// The php-fpm binary used to test the configuration (`php-fpm8.2 -t`).
    pub fpm_binary: PathBuf,
    /// Extra arguments of the test, e.g. `-y /etc/php/8.2/fpm/php-fpm.conf`.
    pub fpm_args: Vec<String>,
    /// Directory of pool files the master includes (`include = <dir>/*.conf`).
    pub pool_dir: PathBuf,
    /// Where the pools' unix sockets are made.
    pub socket_dir: PathBuf,
    /// The master's pid file: reloads send it USR2 (unless `reload_command` is set).
    pub pid_file: Option<PathBuf>,
    /// A command reloading the master instead (e.g. `systemctl reload php8.2-fpm`).
    pub reload_command: Option<Vec<String>>,
    /// The system user the pools run as; `{user}` stands for the account's login (one
    /// system user per account, which the operator creates).
    pub pool_user: String,
    /// The pools' group (default: the pool user's name, `{user}` as above).
    pub pool_group: Option<String>,
    /// The group that may connect to the sockets (nginx's workers' group).
    pub listen_group: String,
    /// `pm.max_children` of each pool (`pm = ondemand`).
    pub max_children: u32,
    /// `memory_limit`, MB.
    pub memory_limit_mb: u32,
    /// `upload_max_filesize` and `post_max_size`, MB (never above the plan's disk quota).
    pub upload_max_mb: u32,
    /// The FastCGI parameters nginx includes (Debian: `/etc/nginx/fastcgi_params`).
    pub fastcgi_params: PathBuf,
}

impl PhpConfig {
    /// Defaults for Debian's php8.2-fpm, pools and sockets under `base`.
    pub fn default_under(base: &Path) -> Self {
        PhpConfig {
            fpm_binary: PathBuf::from("php-fpm8.2"),
            fpm_args: vec![],
            pool_dir: base.join("php-pools"),
            socket_dir: base.join("php-sockets"),
            pid_file: Some(PathBuf::from("/run/php/php8.2-fpm.pid")),
            reload_command: None,
            pool_user: "www-data".into(),
            pool_group: None,
            listen_group: "www-data".into(),
            max_children: 5,
            memory_limit_mb: 128,
            upload_max_mb: 64,
            fastcgi_params: PathBuf::from("/etc/nginx/fastcgi_params"),
        }
    }
}

/// The functions no account's PHP may call: those running a command, and those that let a
/// script choose what a command it starts runs. `putenv` is the known way around
/// `open_basedir` (`putenv("LD_PRELOAD=<its own library>")`, then `mail()` starts
/// sendmail with it, running any code as the pool's user: found by the stack audit, one
/// account reading another's files); `imap_open` and `imap_mail` start `rsh` or sendmail
/// with what the script says. `mail()` itself stays (sites send their notices): its
/// sendmail options are fixed by `mail.force_extra_parameters` (else its fifth argument
/// reaches sendmail, e.g. exim's `-be` expanding `${run{…}}`).
const DISABLED_FUNCTIONS: [&str; 10] = [
    "exec",
    "passthru",
    "shell_exec",
    "system",
    "proc_open",
    "popen",
    "pcntl_exec",
    "putenv",
    "imap_open",
    "imap_mail",
];

fn err(context: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError(format!("php-fpm: {context}: {e}"))
}

/// An absolute form of `p` (relative paths are taken from the working directory).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The pools of the nginx driver's accounts.
#[derive(Debug, Clone)]
pub struct PhpPools {
    cfg: PhpConfig,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl PhpPools {
    pub fn new(cfg: PhpConfig) -> Self {
        PhpPools {
            cfg,
            lock: std::sync::Arc::default(),
        }
    }

    pub fn config(&self) -> &PhpConfig {
        &self.cfg
    }

    fn pool_path(&self, a: &Account) -> PathBuf {
        self.cfg.pool_dir.join(format!("{}.conf", a.username))
    }

    /// The account's socket (absolute).
    pub fn socket(&self, a: &Account) -> PathBuf {
        absolute(&self.cfg.socket_dir).join(format!("{}.sock", a.username))
    }

    /// `upload_max_filesize`/`post_max_size` of the account: the configured size, never
    /// above the plan's disk quota (0: no quota).
    pub fn upload_mb(&self, a: &Account) -> u32 {
        let quota = u32::try_from(a.limits.disk_space_mb.max(0)).unwrap_or(u32::MAX);
        if quota == 0 {
            self.cfg.upload_max_mb
        } else {
            self.cfg.upload_max_mb.min(quota)
        }
    }

    /// The `location` passing the site's `*.php` to its pool (inside its server block).
    pub fn location(&self, a: &Account) -> String {
        format!(
            "    location ~ \\.php$ {{\n        try_files $uri =404;\n        fastcgi_pass unix:{sock};\n        include {params};\n        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n        client_max_body_size {mb}m;\n    }}\n",
            sock = self.socket(a).display(),
            params = self.cfg.fastcgi_params.display(),
            mb = self.upload_mb(a),
        )
    }

    /// The system user and group the account's pool runs as.
    pub fn pool_identity(&self, a: &Account) -> (String, String) {
        let user = self.cfg.pool_user.replace("{user}", &a.username);
        let group = self
            .cfg
            .pool_group
            .as_deref()
            .map_or_else(|| user.clone(), |g| g.replace("{user}", &a.username));
        (user, group)
    }

    /// The numeric ids of the pool's user and group, looked up as the system does (NSS).
    async fn pool_ids(
        &self,
        a: &Account,
    ) -> Result<(nix::unistd::Uid, nix::unistd::Gid), DriverError> {
        let (user, group) = self.pool_identity(a);
        tokio::task::spawn_blocking(move || {
            let uid = nix::unistd::User::from_name(&user)
                .map_err(|e| err(&format!("looking up the pool's user {user}"), e))?
                .ok_or_else(|| {
                    err(
                        "the pool's user",
                        format!("{user} does not exist (create it, or set the PHP pool user)"),
                    )
                })?
                .uid;
            let gid = nix::unistd::Group::from_name(&group)
                .map_err(|e| err(&format!("looking up the pool's group {group}"), e))?
                .ok_or_else(|| err("the pool's group", format!("{group} does not exist")))?
                .gid;
            Ok((uid, gid))
        })
        .await
        .map_err(|e| err("looking up the pool's user", e))?
    }

    /// The pool file of an account whose home is `home`.
    pub fn pool_file(&self, a: &Account, home: &Path) -> String {
        let home = absolute(home);
        let (user, group) = self.pool_identity(a);
        let tmp = home.join("tmp");
        let mb = self.upload_mb(a);
        format!(
            "; Managed by Lodge: account {name}. Changes here are overwritten.\n\
             [{name}]\n\
             user = {user}\n\
             group = {group}\n\
             listen = {sock}\n\
             listen.owner = {user}\n\
             listen.group = {listen_group}\n\
             listen.mode = 0660\n\
             pm = ondemand\n\
             pm.max_children = {children}\n\
             pm.process_idle_timeout = 10s\n\
             pm.max_requests = 500\n\
             chdir = {home}/\n\
             security.limit_extensions = .php\n\
             php_admin_value[open_basedir] = {home}/\n\
             php_admin_value[upload_tmp_dir] = {tmp}\n\
             php_admin_value[sys_temp_dir] = {tmp}\n\
             php_admin_value[session.save_path] = {tmp}/sessions\n\
             php_admin_value[memory_limit] = {memory}M\n\
             php_admin_value[upload_max_filesize] = {mb}M\n\
             php_admin_value[post_max_size] = {mb}M\n\
             php_admin_flag[allow_url_include] = off\n\
             php_admin_value[disable_functions] = {disabled}\n\
             php_admin_value[mail.force_extra_parameters] = -i\n",
            name = a.username,
            sock = self.socket(a).display(),
            listen_group = self.cfg.listen_group,
            children = self.cfg.max_children.max(1),
            home = home.display(),
            tmp = tmp.display(),
            memory = self.cfg.memory_limit_mb,
            disabled = DISABLED_FUNCTIONS.join(","),
        )
    }

    async fn run(&self, program: &Path, args: &[String]) -> Result<(), DriverError> {
        let out = Command::new(program)
            .args(args)
            .output()
            .await
            .map_err(|e| err(&format!("cannot run {}", program.display()), e))?;
        if out.status.success() {
            Ok(())
        } else {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Err(DriverError(format!(
                "php-fpm: {} {} failed: {}",
                program.display(),
                args.join(" "),
                text.trim()
            )))
        }
    }

    /// `php-fpm -t` with the configured arguments.
    async fn test(&self) -> Result<(), DriverError> {
        let mut args = self.cfg.fpm_args.clone();
        args.push("-t".into());
        self.run(&self.cfg.fpm_binary, &args).await
    }

    /// Reloads the master: the configured command, else USR2 to its pid.
    async fn reload(&self) -> Result<(), DriverError> {
        if let Some((program, args)) = self
            .cfg
            .reload_command
            .as_ref()
            .and_then(|c| c.split_first())
        {
            return self.run(Path::new(program), args).await;
        }
        let Some(pid_file) = &self.cfg.pid_file else {
            return Err(err(
                "reload",
                "neither a pid file nor a reload command is configured",
            ));
        };
        let pid = tokio::fs::read_to_string(pid_file)
            .await
            .map_err(|e| err(&format!("reading {}", pid_file.display()), e))?;
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|e| err(&format!("the pid in {}", pid_file.display()), e))?;
        self.run(Path::new("kill"), &["-USR2".into(), pid.to_string()])
            .await
    }

    async fn answers(sock: &Path) -> bool {
        tokio::net::UnixStream::connect(sock).await.is_ok()
    }

    /// Waits until the socket answers (`want`) or is gone (`!want`), 15 s at most.
    async fn wait_socket(sock: &Path, want: bool) -> Result<(), DriverError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if Self::answers(sock).await == want {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(err(
                    "after the reload",
                    format!(
                        "{} {}",
                        sock.display(),
                        if want {
                            "does not answer"
                        } else {
                            "still answers"
                        }
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts the account's pool in place (its directories, its pool file), tested and
    /// loaded; idempotent.
    pub async fn install(&self, a: &Account, home: &Path) -> Result<(), DriverError> {
        let _guard = self.lock.lock().await;
        let tmp = home.join("tmp");
        let (uid, gid) = self.pool_ids(a).await?;
        for dir in [tmp.clone(), tmp.join("sessions")] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| err("creating the account's temporary directory", e))?;
            // The pool's user's alone: uploads and sessions are nobody else's to read, and
            // a directory others may write to would let another account plant a session
            // file (`sess_<id>`) that this account's PHP then trusts.
            std::os::unix::fs::chown(&dir, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(|e| err("giving the temporary directory to the pool's user", e))?;
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(|e| err("setting the temporary directory's mode", e))?;
        }
        for dir in [&self.cfg.pool_dir, &self.cfg.socket_dir] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| err(&format!("creating {}", dir.display()), e))?;
        }
        let path = self.pool_path(a);
        let sock = self.socket(a);
        let pool = self.pool_file(a, home);
        let previous = tokio::fs::read_to_string(&path).await.ok();
        if previous.as_deref() == Some(pool.as_str()) && Self::answers(&sock).await {
            return Ok(()); // already loaded
        }
        if previous.as_deref() != Some(pool.as_str()) {
            let tmp_path = path.with_extension("conf.tmp");
            tokio::fs::write(&tmp_path, &pool)
                .await
                .map_err(|e| err("writing the pool", e))?;
            tokio::fs::rename(&tmp_path, &path)
                .await
                .map_err(|e| err("installing the pool", e))?;
        }
        if let Err(e) = self.test().await {
            match previous {
                Some(p) => {
                    let _ = tokio::fs::write(&path, p).await;
                }
                None => {
                    let _ = tokio::fs::remove_file(&path).await;
                }
            }
            return Err(e);
        }
        self.reload().await?;
        Self::wait_socket(&sock, true).await
    }

    /// Takes the account's pool out (no PHP of it runs); idempotent.
    pub async fn remove(&self, a: &Account) -> Result<(), DriverError> {
        let _guard = self.lock.lock().await;
        let path = self.pool_path(a);
        let sock = self.socket(a);
        if let Ok(pool) = tokio::fs::read_to_string(&path).await {
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| err("removing the pool", e))?;
            let reloaded = match self.test().await {
                Ok(()) => self.reload().await,
                Err(e) => Err(e),
            };
            if let Err(e) = reloaded {
                let _ = tokio::fs::write(&path, pool).await;
                return Err(e);
            }
        } else if !Self::answers(&sock).await {
            return Ok(());
        } else {
            // The file is gone but the master still runs the pool (a reload was lost).
            self.reload().await?;
        }
        Self::wait_socket(&sock, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            username: name.into(),
            domain: "example.com".into(),
            package: "starter".into(),
            password: None,
            server: "localhost".into(),
            limits: Default::default(),
            client_ip: None,
        }
    }

    #[tokio::test]
    async fn a_pool_user_that_does_not_exist_is_named() {
        let base = tempfile::tempdir().unwrap();
        let mut cfg = PhpConfig::default_under(base.path());
        cfg.pool_user = "lodge-{user}".into();
        let pools = PhpPools::new(cfg);
        let a = account("nosuchacct1");
        assert_eq!(
            pools.pool_identity(&a),
            (
                "lodge-nosuchacct1".to_owned(),
                "lodge-nosuchacct1".to_owned()
            )
        );
        let e = pools
            .install(&a, &base.path().join("home"))
            .await
            .unwrap_err();
        assert!(e.0.contains("lodge-nosuchacct1 does not exist"), "{e:?}");
        assert!(
            !base.path().join("home").join("tmp").exists(),
            "nothing made"
        );
        // The system's own user (root here, or whoever runs the tests) is found.
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap();
        let mut cfg = PhpConfig::default_under(base.path());
        cfg.pool_user = me.name;
        let (uid, _) = PhpPools::new(cfg).pool_ids(&a).await.unwrap();
        assert_eq!(uid, nix::unistd::geteuid());
    }
}
