//! The `nginx` driver: hosts sites on the Lodge machine itself, so one box can sell real
//! hosting without a panel licence. Each account gets a document root with a welcome page
//! and an nginx server block for its domain and `www.`; every change is checked with
//! `nginx -t` before the reload. Suspension serves a suspension page; termination removes
//! the site and keeps its files in an archive directory. With PHP configured, each account
//! also gets its own PHP-FPM pool ([`super::php`]) and its `*.php` go to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lodge_core::Clock;
use tokio::process::Command;

use super::{Account, DriverError, Provisioner};

/// Where the driver writes and how it runs nginx (all from configuration).
#[derive(Debug, Clone)]
pub struct NginxConfig {
    /// The nginx binary.
    pub binary: PathBuf,
    /// Extra arguments for every nginx invocation (e.g. `-c /etc/nginx/nginx.conf`).
    pub args: Vec<String>,
    /// Directory of server blocks that nginx includes (`include <dir>/*.conf;`).
    pub sites_dir: PathBuf,
    /// Parent of each account's document root.
    pub web_root: PathBuf,
    /// Where a terminated account's files are kept.
    pub archive_dir: PathBuf,
    /// The `listen` value of each server block (e.g. `80` or `127.0.0.1:8088`).
    pub listen: String,
    /// The `listen … ssl` value of a site with a certificate (e.g. `443`).
    pub tls_listen: String,
}

impl NginxConfig {
    /// Defaults under `./lodge-data`.
    pub fn default_under(base: &Path) -> Self {
        NginxConfig {
            binary: PathBuf::from("nginx"),
            args: vec![],
            sites_dir: base.join("nginx-sites"),
            web_root: base.join("www"),
            archive_dir: base.join("archive"),
            listen: "80".into(),
            tls_listen: "443".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NginxDriver {
    cfg: NginxConfig,
    clock: Arc<dyn Clock>,
    /// nginx reloads are serialised on this machine.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Each account's PHP-FPM pool (`None`: no PHP).
    php: Option<super::php::PhpPools>,
}

fn err(context: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError(format!("{context}: {e}"))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl NginxDriver {
    pub fn new(cfg: NginxConfig, clock: Arc<dyn Clock>) -> Self {
        NginxDriver {
            cfg,
            clock,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            php: None,
        }
    }

    /// Gives each account a PHP-FPM pool, its server block passing `*.php` to it.
    pub fn with_php(mut self, php: Option<super::php::PhpConfig>) -> Self {
        self.php = php.map(super::php::PhpPools::new);
        self
    }

    /// Writes the plan's limits beside the site (`<web root>/<user>/limits`, outside its
    /// document root), for the operator's own tooling.
    async fn write_limits(&self, a: &Account) -> Result<(), DriverError> {
        let home = self.home(a);
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| err("creating the account's directory", e))?;
        let tmp = home.join("limits.tmp");
        tokio::fs::write(&tmp, a.limits.to_lines())
            .await
            .map_err(|e| err("writing the limits", e))?;
        tokio::fs::rename(&tmp, home.join("limits"))
            .await
            .map_err(|e| err("installing the limits", e))
    }

    fn check_account(a: &Account) -> Result<(), DriverError> {
        let user_ok = !a.username.is_empty()
            && a.username.len() <= 32
            && a.username
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let domain_ok = !a.domain.is_empty()
            && a.domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if user_ok && domain_ok {
            Ok(())
        } else {
            Err(DriverError(format!(
                "refusing unsafe account name {:?} / {:?}",
                a.username, a.domain
            )))
        }
    }

    fn home(&self, a: &Account) -> PathBuf {
        self.cfg.web_root.join(&a.username)
    }

    fn conf_path(&self, a: &Account) -> PathBuf {
        self.cfg.sites_dir.join(format!("{}.conf", a.username))
    }

    fn server_block(&self, a: &Account, root: &Path) -> String {
        // PHP only on the site itself (never on the suspension page).
        let php = match &self.php {
            Some(p) if root == self.home(a).join("public_html") => p.location(a),
            _ => String::new(),
        };
        // With PHP, `index.php` is an index too, and a path that is no file goes to it (a
        // front controller's routes; found by the stack audit: a site of `index.php` alone
        // answered 403). Without one there, such a path is still a 404 (the PHP location
        // tries the file first).
        let (index, fallback) = if php.is_empty() {
            ("index.html", "=404")
        } else {
            ("index.html index.php", "/index.php$is_args$args")
        };
        format!(
            "# Managed by Lodge: account {user}. Changes here are overwritten.\n\
             server {{\n    listen {listen};\n{tls}    server_name {domain} www.{domain};\n    root {root};\n    index {index};\n{acme}    location / {{ try_files $uri $uri/ {fallback}; }}\n{php}}}\n",
            user = a.username,
            listen = self.cfg.listen,
            tls = self.tls_lines(a),
            acme = self.acme_location(a),
            domain = a.domain,
            root = root.display(),
        )
    }

    /// The account's TLS directory: `fullchain.pem` and `privkey.pem` (0600), outside the
    /// document root; archived with the site on termination.
    fn tls_dir(&self, a: &Account) -> PathBuf {
        self.home(a).join("tls")
    }

    /// `listen … ssl` and the certificate, once one is installed (else nothing).
    fn tls_lines(&self, a: &Account) -> String {
        let dir = self.tls_dir(a);
        let (chain, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
        if !(chain.is_file() && key.is_file()) {
            return String::new();
        }
        format!(
            "    listen {} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n",
            self.cfg.tls_listen,
            chain.display(),
            key.display()
        )
    }

    /// ACME HTTP-01: `/.well-known/acme-challenge/` from the account's challenge directory
    /// (whatever the site serves, suspended or not).
    fn acme_location(&self, a: &Account) -> String {
        format!(
            "    location ^~ /.well-known/acme-challenge/ {{ alias {}/; default_type text/plain; }}\n",
            self.challenge_dir(a).display()
        )
    }

    fn challenge_dir(&self, a: &Account) -> PathBuf {
        self.home(a).join("acme-challenge")
    }

    /// Writes a file readable by its owner only (through a temporary file and a rename).
    async fn write_private(path: &Path, contents: &str) -> Result<(), DriverError> {
        use tokio::io::AsyncWriteExt;
        let tmp = path.with_extension("tmp");
        let mut opts = tokio::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true).mode(0o600);
        let mut f = opts
            .open(&tmp)
            .await
            .map_err(|e| err("writing a certificate file", e))?;
        f.write_all(contents.as_bytes())
            .await
            .map_err(|e| err("writing a certificate file", e))?;
        f.sync_all()
            .await
            .map_err(|e| err("writing a certificate file", e))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| err("installing a certificate file", e))
    }

    async fn nginx(&self, extra: &[&str]) -> Result<(), DriverError> {
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.args(&self.cfg.args).args(extra);
        let out = cmd.output().await.map_err(|e| {
            err(
                &format!("cannot run nginx ({})", self.cfg.binary.display()),
                e,
            )
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(DriverError(format!(
                "nginx {} failed: {}",
                extra.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Writes a server block, tests the whole configuration and reloads; on a failed test the
    /// previous block is put back.
    async fn apply(&self, a: &Account, root: &Path) -> Result<(), DriverError> {
        let _guard = self.lock.lock().await;
        tokio::fs::create_dir_all(&self.cfg.sites_dir)
            .await
            .map_err(|e| err("creating the sites directory", e))?;
        let path = self.conf_path(a);
        let previous = tokio::fs::read_to_string(&path).await.ok();
        let block = self.server_block(a, root);
        if previous.as_deref() == Some(block.as_str()) {
            // Already in place: still make sure nginx runs with it.
            return self.nginx(&["-s", "reload"]).await;
        }
        let tmp = path.with_extension("conf.tmp");
        tokio::fs::write(&tmp, &block)
            .await
            .map_err(|e| err("writing the server block", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| err("installing the server block", e))?;
        if let Err(e) = self.nginx(&["-t"]).await {
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
        self.nginx(&["-s", "reload"]).await
    }

    /// `nginx -t`, then a reload: nginx takes the configuration on disk only once it passes.
    async fn test_and_reload(&self) -> Result<(), DriverError> {
        self.nginx(&["-t"]).await?;
        self.nginx(&["-s", "reload"]).await
    }

    async fn write_page(dir: &Path, html: &str) -> Result<(), DriverError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| err("creating the document root", e))?;
        tokio::fs::write(dir.join("index.html"), html)
            .await
            .map_err(|e| err("writing the page", e))
    }
}

#[async_trait]
impl Provisioner for NginxDriver {
    fn name(&self) -> &str {
        "nginx"
    }

    async fn create(&self, a: &Account) -> Result<(), DriverError> {
        Self::check_account(a)?;
        let public = self.home(a).join("public_html");
        if !public.join("index.html").exists() {
            let domain = escape_html(&a.domain);
            let html = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{domain}</title></head>\n<body><h1>Welcome to {domain}</h1>\n<p>This site is hosted by Lodge (account {user}). Upload your files to replace this page.</p></body></html>\n",
                user = escape_html(&a.username),
            );
            Self::write_page(&public, &html).await?;
        }
        self.write_limits(a).await?;
        if let Some(php) = &self.php {
            php.install(a, &self.home(a)).await?;
        }
        self.apply(a, &public).await
    }

    async fn suspend(&self, a: &Account) -> Result<(), DriverError> {
        Self::check_account(a)?;
        let dir = self.home(a).join("suspended");
        let html = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Suspended</title></head>\n<body><h1>This site is suspended</h1>\n<p>{} is temporarily unavailable. The owner has been notified.</p></body></html>\n",
            escape_html(&a.domain)
        );
        Self::write_page(&dir, &html).await?;
        self.apply(a, &dir).await?;
        if let Some(php) = &self.php {
            php.remove(a).await?;
        }
        Ok(())
    }

    async fn unsuspend(&self, a: &Account) -> Result<(), DriverError> {
        Self::check_account(a)?;
        let public = self.home(a).join("public_html");
        if let Some(php) = &self.php {
            php.install(a, &self.home(a)).await?;
        }
        self.apply(a, &public).await
    }

    async fn terminate(&self, a: &Account) -> Result<(), DriverError> {
        Self::check_account(a)?;
        let _guard = self.lock.lock().await;
        // First the site leaves nginx; if the new configuration fails its test or the reload,
        // the block is put back and nothing changed (the retry does it all again). Only
        // then are the files archived. With no block but the files still there, an attempt
        // was cut off between removing the block and the reload (found by the crash audit:
        // nginx went on serving the site): nginx is reloaded all the same.
        let path = self.conf_path(a);
        if let Ok(block) = tokio::fs::read_to_string(&path).await {
            tokio::fs::remove_file(&path)
                .await
                .map_err(|e| err("removing the server block", e))?;
            if let Err(e) = self.test_and_reload().await {
                let _ = tokio::fs::write(&path, block).await;
                return Err(e);
            }
        } else if self.home(a).exists() {
            self.test_and_reload().await?;
        }
        drop(_guard);
        if let Some(php) = &self.php {
            php.remove(a).await?;
        }
        let home = self.home(a);
        if home.exists() {
            tokio::fs::create_dir_all(&self.cfg.archive_dir)
                .await
                .map_err(|e| err("creating the archive directory", e))?;
            let stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ").to_string();
            let dest = self.cfg.archive_dir.join(format!("{}-{stamp}", a.username));
            tokio::fs::rename(&home, &dest)
                .await
                .map_err(|e| err("archiving the site's files", e))?;
        }
        Ok(())
    }

    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError> {
        // The package, and the plan's limits, are recorded beside the site's files
        // (`<web root>/<user>/package` and `limits`, outside its document root), for the
        // operator's own tooling; what is enforced (the PHP pool's upload size, nginx's
        // body size) is written again for the new plan below. Writing them again is
        // harmless.
        Self::check_account(a)?;
        let home = self.home(a);
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| err("creating the account's directory", e))?;
        let path = home.join("package");
        let tmp = home.join("package.tmp");
        tokio::fs::write(&tmp, format!("{package}\n"))
            .await
            .map_err(|e| err("writing the package", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| err("installing the package", e))?;
        self.write_limits(a).await?;
        // The pool and the server block carry the plan's limits (found by the panels
        // audit: a plan change left the old ones enforced). A suspended site stays so: its
        // pool is installed again, with the new plan's limits, when it is unsuspended.
        // A site not served (never made: the account failed) is left as it is.
        let suspended_root = self.home(a).join("suspended").display().to_string();
        match tokio::fs::read_to_string(self.conf_path(a)).await {
            Ok(block) if !block.contains(&suspended_root) => {}
            _ => return Ok(()),
        }
        if let Some(php) = &self.php {
            php.install(a, &home).await?;
        }
        self.apply(a, &home.join("public_html")).await
    }

    async fn change_password(&self, _a: &Account, _password: &str) -> Result<(), DriverError> {
        // No panel login on this driver: nothing holds a password.
        Ok(())
    }

    async fn login_url(&self, a: &Account) -> Result<Option<String>, DriverError> {
        Ok(Some(format!("http://{}/", a.domain)))
    }

    /// What provisioning needs of this machine: the sites directory and the web root can
    /// be made, and `nginx -t` (with the configured binary and arguments) passes (found by
    /// the operator audit: a missing nginx binary was reported "nothing to check").
    async fn check(&self) -> Result<String, DriverError> {
        for dir in [&self.cfg.sites_dir, &self.cfg.web_root] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| err(&format!("creating {}", dir.display()), e))?;
        }
        self.nginx(&["-t"]).await?;
        Ok(format!(
            "nginx: {} -t passed; sites in {}, web roots in {}",
            self.cfg.binary.display(),
            self.cfg.sites_dir.display(),
            self.cfg.web_root.display()
        ))
    }

    async fn put_acme_challenge(
        &self,
        a: &Account,
        token: &str,
        key_authorization: &str,
    ) -> Result<bool, DriverError> {
        Self::check_account(a)?;
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DriverError(format!("refusing the ACME token {token:?}")));
        }
        let dir = self.challenge_dir(a);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| err("creating the challenge directory", e))?;
        tokio::fs::write(dir.join(token), key_authorization)
            .await
            .map_err(|e| err("writing the challenge", e))?;
        // A site made before TLS existed has no challenge location yet.
        let block = tokio::fs::read_to_string(self.conf_path(a))
            .await
            .unwrap_or_default();
        if !block.contains("/.well-known/acme-challenge/") {
            let root = if block.contains(&format!("{}/suspended;", self.home(a).display())) {
                self.home(a).join("suspended")
            } else {
                self.home(a).join("public_html")
            };
            self.apply(a, &root).await?;
        }
        Ok(true)
    }

    async fn remove_acme_challenges(&self, a: &Account) -> Result<(), DriverError> {
        Self::check_account(a)?;
        match tokio::fs::remove_dir_all(self.challenge_dir(a)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(err("removing the challenges", e))
            }
            _ => Ok(()),
        }
    }

    async fn install_certificate(
        &self,
        a: &Account,
        chain_pem: &str,
        key_pem: &str,
        suspended: bool,
    ) -> Result<bool, DriverError> {
        Self::check_account(a)?;
        let dir = self.tls_dir(a);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| err("creating the TLS directory", e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(|e| err("securing the TLS directory", e))?;
        }
        // The key first: nginx only uses the pair once both are there.
        Self::write_private(&dir.join("privkey.pem"), key_pem).await?;
        Self::write_private(&dir.join("fullchain.pem"), chain_pem).await?;
        let root = self.home(a).join(if suspended {
            "suspended"
        } else {
            "public_html"
        });
        // Same block, new files: `apply` still reloads nginx, which reads them again.
        self.apply(a, &root).await?;
        Ok(true)
    }

    async fn has_certificate(&self, a: &Account) -> Result<Option<String>, DriverError> {
        Self::check_account(a)?;
        Ok(
            tokio::fs::read_to_string(self.tls_dir(a).join("fullchain.pem"))
                .await
                .ok(),
        )
    }
}
