//! Configuration, layered: defaults < `lodge.toml` < environment (`LODGE_*`) < flags.
//! The environment and flags arrive through clap (each flag names its variable); the file
//! fills what they leave unset.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lodge_core::renewal::Policy;
use lodge_services::dns::DnsSettings;
use lodge_services::drivers::nginx::NginxConfig;
use lodge_services::drivers::php::PhpConfig;
use lodge_services::gateway::stripe::{StripeSettings, DEFAULT_API_BASE};
use lodge_services::mail::{MailSettings, TlsMode};
use lodge_services::mariadb::MariaDbSettings;
use lodge_services::registrar::config::RegistrarFile;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The fewest characters a configured JWT secret may have.
pub const MIN_JWT_SECRET_LEN: usize = 32;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://lodge.db";

/// The `lodge.toml` file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub database_pool_size: Option<u32>,
    pub public_base_url: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub login_failures_per_email: Option<u32>,
    pub login_failures_per_address: Option<u32>,
    pub login_max_wait_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<u32>,
    pub metrics_token: Option<String>,
    pub metrics_listen: Option<String>,
    pub jwt_secret: Option<String>,
    pub key_prefix: Option<String>,
    pub node_name: Option<String>,
    pub currency: Option<String>,
    pub log_format: Option<String>,
    pub secret_key: Option<String>,
    pub bank_transfer_instructions: Option<String>,
    pub invoice_expiry_days: Option<i64>,
    pub retention_days: Option<i64>,
    pub renewal_lead_days: Option<i64>,
    pub suspension_grace_days: Option<i64>,
    pub termination_grace_days: Option<i64>,
    pub require_tos: Option<bool>,
    pub nginx_binary: Option<String>,
    pub nginx_args: Option<String>,
    pub nginx_sites_dir: Option<String>,
    pub nginx_web_root: Option<String>,
    pub nginx_archive_dir: Option<String>,
    pub nginx_listen: Option<String>,
    pub nginx_tls_listen: Option<String>,
    pub stripe_secret_key: Option<String>,
    pub stripe_publishable_key: Option<String>,
    pub stripe_webhook_secrets: Option<Vec<String>>,
    pub stripe_api_base: Option<String>,
    pub webhooks_allow_private: Option<bool>,
    pub cors_origins: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub mail_host: Option<String>,
    pub mail_port: Option<u16>,
    pub mail_tls: Option<String>,
    pub mail_username: Option<String>,
    pub mail_password: Option<String>,
    pub mail_from: Option<String>,
    pub mail_installation_name: Option<String>,
    pub mail_postal_address: Option<String>,
    pub mail_base_url: Option<String>,
    pub mail_templates_dir: Option<String>,
    pub mail_timeout_secs: Option<u64>,
    pub mail_ca_file: Option<String>,
    /// Registrars (EPP), each serving its TLDs; the rest stay manual (`[[registrars]]`).
    pub registrars: Option<Vec<RegistrarFile>>,
    /// DNS zones on PowerDNS (`[dns]`; off without it).
    pub dns: Option<DnsFile>,
    /// TLS certificates by ACME for hosted sites (`[acme]`; off without it).
    pub acme: Option<AcmeFile>,
    /// A PHP-FPM pool per nginx account (`[php]`; off without a pool directory).
    pub php: Option<PhpFile>,
    /// A MariaDB database per account (`[mariadb]`; off without a URL).
    pub mariadb: Option<MariaDbFile>,
}

/// `[acme]` of `lodge.toml`: the ACME CA that issues the hosted sites' certificates. On when
/// `directory_url` or `contact_email` is given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    /// The CA's directory (default Let's Encrypt's production directory).
    pub directory_url: Option<String>,
    /// The ACME account's contact e-mail.
    pub contact_email: Option<String>,
    /// `http-01` (through the nginx driver; the default) or `dns-01` (through PowerDNS).
    pub challenge: Option<String>,
    /// A PEM file of root CAs to trust for the ACME server (e.g. pebble's test CA).
    pub ca_file: Option<String>,
}

/// `[php]` of `lodge.toml`: the nginx driver's PHP-FPM pools.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhpFile {
    /// Directory of pool files the php-fpm master includes; turns PHP on.
    pub pool_dir: Option<String>,
    /// php-fpm binary for the configuration test (default php-fpm8.2).
    pub fpm_binary: Option<String>,
    /// Extra arguments of the test, e.g. "-y /etc/php/8.2/fpm/php-fpm.conf".
    pub fpm_args: Option<String>,
    /// Where the pools' sockets go (default lodge-data/php-sockets).
    pub socket_dir: Option<String>,
    /// The master's pid file (reloads send USR2; default /run/php/php8.2-fpm.pid).
    pub pid_file: Option<String>,
    /// A reload command instead of USR2, e.g. "systemctl reload php8.2-fpm".
    pub reload_command: Option<String>,
    /// System user of the pools (default www-data; `{user}`: the account's own).
    pub pool_user: Option<String>,
    /// Group of the pools (default: the pool user's name).
    pub pool_group: Option<String>,
    /// Group allowed on the sockets, nginx's workers' (default www-data).
    pub listen_group: Option<String>,
    /// pm.max_children of each pool (default 5).
    pub max_children: Option<u32>,
    /// memory_limit in MB (default 128).
    pub memory_limit_mb: Option<u32>,
    /// upload_max_filesize/post_max_size in MB (default 64, never above the disk quota).
    pub upload_max_mb: Option<u32>,
    /// nginx's FastCGI parameters file (default /etc/nginx/fastcgi_params).
    pub fastcgi_params: Option<String>,
}

/// `[mariadb]` of `lodge.toml`: accounts' databases.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariaDbFile {
    /// Administrative login, mysql://user:password@host:port/ (or ?socket=…); turns it on.
    pub url: Option<String>,
    /// Host shown to customers (default: the URL's host).
    pub host: Option<String>,
    /// Port shown to customers (default: the URL's port, else 3306).
    pub port: Option<u16>,
    /// Host part of the accounts' users (default localhost).
    pub user_host: Option<String>,
    /// mariadb-dump (default: on the PATH).
    pub dump_binary: Option<String>,
    /// MAX_USER_CONNECTIONS of each account's user (default 10).
    pub max_user_connections: Option<u32>,
}

impl std::fmt::Debug for MariaDbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbFile")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user_host", &self.user_host)
            .field("dump_binary", &self.dump_binary)
            .field("max_user_connections", &self.max_user_connections)
            .finish()
    }
}

/// `[dns]` of `lodge.toml`: PowerDNS's authoritative HTTP API.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// e.g. `http://127.0.0.1:8081` (PowerDNS's `webserver-address`/`-port`).
    pub api_url: Option<String>,
    /// PowerDNS's `api-key` (prefer `LODGE_PDNS_API_KEY`, out of the file).
    pub api_key: Option<String>,
    /// PowerDNS's server id (default `localhost`).
    pub server_id: Option<String>,
    /// TTL of the records Lodge writes, seconds (default 3600).
    pub ttl: Option<u32>,
}

impl std::fmt::Debug for DnsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsFile")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("server_id", &self.server_id)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl FileConfig {
    /// Reads `path`, or `./lodge.toml` when no path is given and that file exists.
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let path: PathBuf = match path {
            Some(p) => p.to_owned(),
            None => {
                let p = PathBuf::from("lodge.toml");
                if !p.exists() {
                    return Ok(FileConfig::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub database_url: String,
    /// The most connections this node opens to PostgreSQL.
    pub database_pool_size: u32,
    pub public_base_url: String,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Login throttling (see `lodge_http::login_guard`).
    pub login: lodge_http::login_guard::LoginLimits,
    /// Slow clients: how long a connection may take to send a request's headers, its body,
    /// and how long it may stay idle between requests; and how many may be open at once.
    pub conn: ConnLimits,
    /// A bearer token `/metrics` requires (`None`: open to whoever reaches it).
    pub metrics_token: Option<SecretString>,
    /// `/metrics` on an address of its own (then not on `listen`).
    pub metrics_listen: Option<String>,
    /// `None`: a random secret for this process only (tokens do not survive a restart).
    pub jwt_secret: Option<SecretString>,
    pub key_prefix: String,
    /// This node's name (servers whose `node` names it have their jobs run here only).
    pub node_name: String,
    pub currency: String,
    /// 64 hex digits sealing secrets at rest; `None`: a key file beside the database.
    pub secret_key: Option<SecretString>,
    pub bank_transfer_instructions: String,
    pub invoice_expiry_days: i64,
    /// Days jobs done, webhook deliveries and the mail log are kept (0: forever).
    pub retention_days: i64,
    pub renewal_lead_days: i64,
    pub suspension_grace_days: i64,
    pub termination_grace_days: i64,
    pub require_tos: bool,
    pub nginx: NginxConfig,
    /// Card payments through Stripe (`None`: not offered). Its `Debug` redacts the secrets.
    pub stripe: Option<StripeSettings>,
    /// Stripe settings given without a secret key (refused at start).
    pub stripe_without_key: Vec<&'static str>,
    /// Webhook endpoints may be private addresses (`--webhooks-allow-private`).
    pub webhooks_allow_private: bool,
    /// Web clients' origins allowed to call `/apiv2` from a browser (`--cors-origins`):
    /// `scheme://host[:port]`, no trailing slash. Empty: none.
    pub cors_origins: Vec<String>,
    /// The reverse proxies whose `X-Forwarded-For` names the client (`--trusted-proxies`:
    /// addresses or CIDR blocks; loopback by default, `none` for none).
    pub trusted_proxies: Vec<String>,
    /// SMTP and the notices (`mail_settings` checks and builds them).
    pub mail: MailConfig,
    /// The configuration file's registrars (built, and their passwords opened, at start).
    pub registrars: Vec<RegistrarFile>,
    /// DNS zones on PowerDNS (`None`: off). Its `Debug` redacts the key.
    pub dns: Option<DnsSettings>,
    /// What of `[dns]` was given without the rest (refused at start).
    pub dns_incomplete: Option<&'static str>,
    /// TLS certificates by ACME (`None`: off).
    pub acme: Option<AcmeConfig>,
    /// PHP-FPM pools of the nginx driver (`None`: no PHP).
    pub php: Option<PhpConfig>,
    /// Accounts' MariaDB databases (`None`: off). Its `Debug` redacts the URL.
    pub mariadb: Option<MariaDbSettings>,
    /// Why `[mariadb]` cannot be used (refused at start).
    pub mariadb_problem: Option<String>,
}

/// `[acme]` as given (checked by `validate`; the CA file is read at start).
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory_url: String,
    pub contact_email: Option<String>,
    pub challenge: String,
    pub ca_file: Option<PathBuf>,
}

impl AcmeConfig {
    /// The services' settings, with the extra root CAs read from `ca_file`.
    pub fn settings(&self) -> anyhow::Result<lodge_services::tls::AcmeSettings> {
        let challenge = match self.challenge.as_str() {
            "http-01" => lodge_services::tls::Challenge::Http01,
            "dns-01" => lodge_services::tls::Challenge::Dns01,
            other => anyhow::bail!("--acme-challenge must be http-01 or dns-01, not {other:?}"),
        };
        if let Some(p) = &self.ca_file {
            let pem = std::fs::read_to_string(p)
                .with_context(|| format!("reading --acme-ca-file {}", p.display()))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!("--acme-ca-file {} holds no PEM certificate", p.display());
            }
        }
        Ok(lodge_services::tls::AcmeSettings {
            directory_url: self.directory_url.clone(),
            contact_email: self.contact_email.clone(),
            challenge,
            ca_file: self.ca_file.clone(),
        })
    }
}

/// The mail settings as given (no SMTP host: mail is off). The password's `Debug` is
/// redacted (`SecretString`).
#[derive(Clone, Default, Debug)]
pub struct MailConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub from: Option<String>,
    pub installation_name: Option<String>,
    pub postal_address: Option<String>,
    /// Base of the links in messages (default: the public base URL).
    pub base_url: Option<String>,
    pub templates_dir: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
    /// Certificates (PEM) trusted for the SMTP server besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// The limits on client connections (see `lodge::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// From a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// From the end of a request's headers to the end of its body (else 408 and closed).
    pub body_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Connections open at once; over it a new connection is answered 503 and closed.
    pub max_connections: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Whether `s` is a web origin: `http(s)://host[:port]` and nothing more.
pub fn is_origin(s: &str) -> bool {
    let Some((scheme, authority)) = s.split_once("://") else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
        && port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

/// The longest an unpaid first invoice may stay open: a year.
pub const MAX_INVOICE_EXPIRY_DAYS: i64 = 365;
/// The longest retention window one can set (a hundred years; 0 keeps forever).
pub const MAX_RETENTION_DAYS: i64 = 36_500;

impl Config {
    /// The renewal policy, or why these settings cannot be one (refused at start).
    pub fn policy(&self) -> anyhow::Result<Policy> {
        Policy::new(
            self.renewal_lead_days,
            self.suspension_grace_days,
            self.termination_grace_days,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Refuses a JWT secret too short to sign with, for the commands that sign or check
    /// login tokens (`serve`); others do not use it and are not refused for it (found by
    /// the re-audit: `lodge migrate`, the upgrade step, was).
    pub fn check_jwt_secret(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.jwt_secret {
            // An empty or short secret lets anyone sign a staff login token (found by the
            // secrets audit: `LODGE_JWT_SECRET=` from an unset variable was taken).
            let len = secret.expose_secret().trim().len();
            if len < MIN_JWT_SECRET_LEN {
                anyhow::bail!(
                    "the JWT secret (--jwt-secret, LODGE_JWT_SECRET, jwt_secret) is {len} characters: it must be at least {MIN_JWT_SECRET_LEN} (e.g. `openssl rand -hex 32`), or left out for a random one per process"
                );
            }
        }
        Ok(())
    }

    /// Refuses settings that would act on everything at once (an expiry of 0 days cancels
    /// every pending order within a minute) with a message naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !lodge_services::servers::is_node_name(&self.node_name) {
            anyhow::bail!(
                "--node-name must be 1 to 100 letters, digits, dots, hyphens and underscores (got {:?})",
                self.node_name
            );
        }
        if !(lodge_store::MIN_POOL_SIZE..=1000).contains(&self.database_pool_size) {
            anyhow::bail!(
                "--database-pool-size must be between {} and 1000 connections (got {})",
                lodge_store::MIN_POOL_SIZE,
                self.database_pool_size
            );
        }
        if !(0..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            anyhow::bail!(
                "--retention-days must be between 0 (keep forever) and {MAX_RETENTION_DAYS} days (got {})",
                self.retention_days
            );
        }
        if !(1..=MAX_INVOICE_EXPIRY_DAYS).contains(&self.invoice_expiry_days) {
            anyhow::bail!(
                "--invoice-expiry-days must be between 1 and {MAX_INVOICE_EXPIRY_DAYS} days (got {})",
                self.invoice_expiry_days
            );
        }
        self.policy()?;
        // Before the base URL, which defaults to `http://` and this address: a bad port
        // was reported as a bad --public-base-url the operator never set (found by the
        // operator audit).
        if !self
            .listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            anyhow::bail!(
                "--listen must be an address and a port (0-65535), e.g. 127.0.0.1:8080, not {:?}",
                self.listen
            );
        }
        // Payment links, mail and the login page are built on it: a bare host or a path
        // gave customers links that lead nowhere (found by the docs audit).
        match reqwest::Url::parse(&self.public_base_url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() => {}
            _ => anyhow::bail!(
                "--public-base-url must be an http:// or https:// URL (as customers reach \
                 Lodge, e.g. https://billing.example.com), not {:?}",
                self.public_base_url
            ),
        }
        for (name, d) in [
            ("--header-timeout-secs", self.conn.header_timeout),
            ("--body-timeout-secs", self.conn.body_timeout),
            ("--idle-timeout-secs", self.conn.idle_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(24 * 3600) {
                anyhow::bail!("{name} must be between 1 and 86400 seconds");
            }
        }
        if self.conn.max_connections == 0 {
            anyhow::bail!("--max-connections must be at least 1");
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().is_empty())
        {
            anyhow::bail!("--metrics-token must not be empty");
        }
        if let Some(acme) = &self.acme {
            if !acme.directory_url.starts_with("https://") {
                anyhow::bail!("--acme-directory-url must be an https:// URL");
            }
            if acme
                .contact_email
                .as_deref()
                .is_some_and(|e| !e.contains('@') || e.contains(char::is_whitespace))
            {
                anyhow::bail!("--acme-contact-email must be an e-mail address");
            }
            match acme.challenge.as_str() {
                "http-01" => {}
                "dns-01" if self.dns.is_some() => {}
                "dns-01" => anyhow::bail!(
                    "--acme-challenge dns-01 needs DNS hosting on PowerDNS (--pdns-api-url)"
                ),
                other => {
                    anyhow::bail!("--acme-challenge must be http-01 or dns-01, not {other:?}")
                }
            }
        }
        if let Some(problem) = &self.mariadb_problem {
            anyhow::bail!("{problem}");
        }
        if let Some(p) = &self.php {
            if p.pid_file.is_none() && p.reload_command.is_none() {
                anyhow::bail!("[php] needs a pid_file or a reload_command to reload php-fpm");
            }
            if p.max_children == 0 {
                anyhow::bail!("[php] max_children must be at least 1");
            }
        }
        if let Some(what) = self.dns_incomplete {
            anyhow::bail!("{what} (DNS hosting needs both)");
        }
        if let Some(d) = &self.dns {
            let scheme_ok = d.api_url.starts_with("http://") || d.api_url.starts_with("https://");
            if !scheme_ok {
                anyhow::bail!("--pdns-api-url must be an http:// or https:// URL");
            }
            if !(60..=604_800).contains(&d.ttl) {
                anyhow::bail!("[dns] ttl must be between 60 and 604800 seconds");
            }
        }
        if !self.stripe_without_key.is_empty() {
            anyhow::bail!(
                "{} given without --stripe-secret-key (card payments need the secret key)",
                self.stripe_without_key.join(", ")
            );
        }
        self.trusted_proxies()?;
        for origin in &self.cors_origins {
            if !is_origin(origin) {
                anyhow::bail!(
                    "--cors-origins: {origin:?} is not an origin (scheme://host[:port], e.g. https://my.example.com)"
                );
            }
        }
        if let Some(stripe) = &self.stripe {
            let problems = stripe.problems();
            if !problems.is_empty() {
                anyhow::bail!("{}", problems.join("; "));
            }
            if let Some(why) = lodge_services::gateway::stripe::currency_problem(&self.currency) {
                anyhow::bail!("{why}");
            }
        }
        self.mail_settings().map(drop)
    }

    /// The mail settings, `None` when no SMTP host is configured (mail is off), or why
    /// they cannot send (refused at start).
    pub fn mail_settings(&self) -> anyhow::Result<Option<MailSettings>> {
        let m = &self.mail;
        let Some(host) = m.host.as_deref().map(str::trim).filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let tls = match m.tls.as_deref() {
            Some(t) => TlsMode::parse(t).map_err(|e| anyhow::anyhow!("--mail-tls: {e}"))?,
            None => TlsMode::Starttls,
        };
        let settings = MailSettings {
            host: host.to_owned(),
            port: m.port.unwrap_or_else(|| tls.default_port()),
            tls,
            username: m.username.clone().filter(|u| !u.is_empty()),
            password: m.password.clone(),
            from: m.from.clone().ok_or_else(|| {
                anyhow::anyhow!("--mail-from is required when --mail-host is set")
            })?,
            installation_name: m
                .installation_name
                .clone()
                .unwrap_or_else(|| "Lodge".to_owned()),
            postal_address: m
                .postal_address
                .clone()
                .unwrap_or_default()
                .replace("\\n", "\n"),
            base_url: m
                .base_url
                .clone()
                .unwrap_or_else(|| self.public_base_url.clone())
                .trim_end_matches('/')
                .to_owned(),
            templates_dir: m.templates_dir.clone(),
            timeout: std::time::Duration::from_secs(m.timeout_secs.unwrap_or(60)),
            ca_file: m.ca_file.clone(),
        };
        settings.validate().map_err(|e| anyhow::anyhow!(e))?;
        Ok(Some(settings))
    }
}

/// Values from flags or the environment (clap fills these; `None` when neither was given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub database_pool_size: Option<u32>,
    pub public_base_url: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub login_failures_per_email: Option<u32>,
    pub login_failures_per_address: Option<u32>,
    pub login_max_wait_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<u32>,
    pub metrics_token: Option<String>,
    pub metrics_listen: Option<String>,
    pub jwt_secret: Option<String>,
    pub key_prefix: Option<String>,
    pub node_name: Option<String>,
    pub currency: Option<String>,
    pub secret_key: Option<String>,
    pub bank_transfer_instructions: Option<String>,
    pub invoice_expiry_days: Option<i64>,
    pub retention_days: Option<i64>,
    pub renewal_lead_days: Option<i64>,
    pub suspension_grace_days: Option<i64>,
    pub termination_grace_days: Option<i64>,
    pub require_tos: Option<bool>,
    pub nginx_binary: Option<String>,
    pub nginx_args: Option<String>,
    pub nginx_sites_dir: Option<String>,
    pub nginx_web_root: Option<String>,
    pub nginx_archive_dir: Option<String>,
    pub nginx_listen: Option<String>,
    pub nginx_tls_listen: Option<String>,
    pub stripe_secret_key: Option<String>,
    pub stripe_publishable_key: Option<String>,
    pub stripe_webhook_secrets: Option<Vec<String>>,
    pub stripe_api_base: Option<String>,
    pub webhooks_allow_private: Option<bool>,
    pub cors_origins: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub mail_host: Option<String>,
    pub mail_port: Option<u16>,
    pub mail_tls: Option<String>,
    pub mail_username: Option<String>,
    pub mail_password: Option<String>,
    pub mail_from: Option<String>,
    pub mail_installation_name: Option<String>,
    pub mail_postal_address: Option<String>,
    pub mail_base_url: Option<String>,
    pub mail_templates_dir: Option<String>,
    pub mail_timeout_secs: Option<u64>,
    pub mail_ca_file: Option<String>,
    pub pdns_api_url: Option<String>,
    pub pdns_api_key: Option<String>,
    pub acme_directory_url: Option<String>,
    pub acme_contact_email: Option<String>,
    pub acme_challenge: Option<String>,
    pub acme_ca_file: Option<String>,
    pub php_pool_dir: Option<String>,
    pub php_fpm_binary: Option<String>,
    pub php_fpm_args: Option<String>,
    pub php_socket_dir: Option<String>,
    pub php_fpm_pid_file: Option<String>,
    pub php_reload_command: Option<String>,
    pub php_pool_user: Option<String>,
    pub php_listen_group: Option<String>,
    pub mariadb_url: Option<String>,
    pub mariadb_host: Option<String>,
    pub mariadb_port: Option<u16>,
    pub mariadb_user_host: Option<String>,
    pub mariadb_dump_binary: Option<String>,
}

/// Proxies trusted by default: a reverse proxy on the same machine.
pub const DEFAULT_TRUSTED_PROXIES: [&str; 2] = ["127.0.0.0/8", "::1"];

impl Config {
    /// [`Config::trusted_proxies`] parsed: each an address (one host) or a CIDR block.
    pub fn trusted_proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--trusted-proxies: {p:?} is not an address or a CIDR block (e.g. 10.0.0.0/8), nor none"
                        )
                    })
            })
            .collect()
    }

    pub fn resolve(o: Overrides, f: FileConfig) -> Config {
        let listen = o
            .listen
            .or(f.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let public_base_url = o
            .public_base_url
            .or(f.public_base_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        let stripe_key = o.stripe_secret_key.or(f.stripe_secret_key);
        let stripe_pk = o.stripe_publishable_key.or(f.stripe_publishable_key);
        let stripe_secrets = o.stripe_webhook_secrets.or(f.stripe_webhook_secrets);
        let stripe_base = o.stripe_api_base.or(f.stripe_api_base);
        let mut stripe_without_key = Vec::new();
        if stripe_key.is_none() {
            for (given, name) in [
                (stripe_pk.is_some(), "--stripe-publishable-key"),
                (stripe_secrets.is_some(), "--stripe-webhook-secret"),
                (stripe_base.is_some(), "--stripe-api-base"),
            ] {
                if given {
                    stripe_without_key.push(name);
                }
            }
        }
        let stripe = stripe_key.map(|key| StripeSettings {
            secret_key: SecretString::from(key),
            publishable_key: stripe_pk.filter(|p| !p.trim().is_empty()),
            webhook_secrets: stripe_secrets
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(SecretString::from)
                .collect(),
            api_base: stripe_base
                .map(|b| b.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| DEFAULT_API_BASE.to_owned()),
        });
        let dns_file = f.dns.unwrap_or_default();
        let dns_url = o
            .pdns_api_url
            .or(dns_file.api_url)
            .filter(|u| !u.trim().is_empty());
        let dns_key = o
            .pdns_api_key
            .or(dns_file.api_key)
            .filter(|k| !k.trim().is_empty());
        let dns_incomplete = match (&dns_url, &dns_key) {
            (Some(_), None) => Some("--pdns-api-url given without --pdns-api-key"),
            (None, Some(_)) => Some("--pdns-api-key given without --pdns-api-url"),
            _ => None,
        };
        let dns = dns_url.zip(dns_key).map(|(url, key)| DnsSettings {
            api_url: url.trim().trim_end_matches('/').to_owned(),
            api_key: SecretString::from(key.trim().to_owned()),
            server_id: dns_file
                .server_id
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "localhost".to_owned()),
            ttl: dns_file.ttl.unwrap_or(3600),
        });
        let acme_file = f.acme.unwrap_or_default();
        let nonempty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let acme_url = nonempty(o.acme_directory_url.or(acme_file.directory_url));
        let acme_email = nonempty(o.acme_contact_email.or(acme_file.contact_email));
        let acme = (acme_url.is_some() || acme_email.is_some()).then(|| AcmeConfig {
            directory_url: acme_url.unwrap_or_else(|| lodge_services::tls::LETS_ENCRYPT.to_owned()),
            contact_email: acme_email,
            challenge: nonempty(o.acme_challenge.or(acme_file.challenge))
                .unwrap_or_else(|| "http-01".to_owned()),
            ca_file: nonempty(o.acme_ca_file.or(acme_file.ca_file)).map(PathBuf::from),
        });
        let nginx = {
            let d = NginxConfig::default_under(Path::new("lodge-data"));
            NginxConfig {
                binary: o
                    .nginx_binary
                    .or(f.nginx_binary)
                    .map_or(d.binary, PathBuf::from),
                args: o.nginx_args.or(f.nginx_args).map_or(d.args, |a| {
                    a.split_whitespace().map(str::to_owned).collect()
                }),
                sites_dir: o
                    .nginx_sites_dir
                    .or(f.nginx_sites_dir)
                    .map_or(d.sites_dir, PathBuf::from),
                web_root: o
                    .nginx_web_root
                    .or(f.nginx_web_root)
                    .map_or(d.web_root, PathBuf::from),
                archive_dir: o
                    .nginx_archive_dir
                    .or(f.nginx_archive_dir)
                    .map_or(d.archive_dir, PathBuf::from),
                listen: o.nginx_listen.or(f.nginx_listen).unwrap_or(d.listen),
                tls_listen: o
                    .nginx_tls_listen
                    .or(f.nginx_tls_listen)
                    .unwrap_or(d.tls_listen),
            }
        };
        let php_file = f.php.unwrap_or_default();
        let words =
            |s: String| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
        let php = o
            .php_pool_dir
            .or(php_file.pool_dir)
            .filter(|d| !d.trim().is_empty())
            .map(|pool_dir| {
                let d = PhpConfig::default_under(Path::new("lodge-data"));
                let reload_command = o
                    .php_reload_command
                    .or(php_file.reload_command)
                    .map(words)
                    .filter(|w| !w.is_empty());
                PhpConfig {
                    fpm_binary: o
                        .php_fpm_binary
                        .or(php_file.fpm_binary)
                        .map_or(d.fpm_binary, PathBuf::from),
                    fpm_args: o
                        .php_fpm_args
                        .or(php_file.fpm_args)
                        .map_or(d.fpm_args, words),
                    pool_dir: PathBuf::from(pool_dir),
                    socket_dir: o
                        .php_socket_dir
                        .or(php_file.socket_dir)
                        .map_or(d.socket_dir, PathBuf::from),
                    pid_file: o
                        .php_fpm_pid_file
                        .or(php_file.pid_file)
                        .map(PathBuf::from)
                        .or(d.pid_file),
                    reload_command,
                    pool_user: o
                        .php_pool_user
                        .or(php_file.pool_user)
                        .unwrap_or(d.pool_user),
                    pool_group: php_file.pool_group,
                    listen_group: o
                        .php_listen_group
                        .or(php_file.listen_group)
                        .unwrap_or(d.listen_group),
                    max_children: php_file.max_children.unwrap_or(d.max_children),
                    memory_limit_mb: php_file.memory_limit_mb.unwrap_or(d.memory_limit_mb),
                    upload_max_mb: php_file.upload_max_mb.unwrap_or(d.upload_max_mb),
                    fastcgi_params: php_file
                        .fastcgi_params
                        .map_or(d.fastcgi_params, PathBuf::from),
                }
            });
        let my_file = f.mariadb.unwrap_or_default();
        let mut mariadb_problem = None;
        let mariadb = o
            .mariadb_url
            .or(my_file.url)
            .filter(|u| !u.trim().is_empty())
            .and_then(|url| {
                let parsed = match reqwest::Url::parse(url.trim()) {
                    Ok(u) if u.scheme() == "mysql" || u.scheme() == "mariadb" => u,
                    _ => {
                        mariadb_problem = Some(
                            "--mariadb-url must be a mysql:// URL (mysql://user:password@host:port/)"
                                .to_owned(),
                        );
                        return None;
                    }
                };
                Some(MariaDbSettings {
                    host: o
                        .mariadb_host
                        .or(my_file.host)
                        .or_else(|| parsed.host_str().map(str::to_owned))
                        .unwrap_or_else(|| "localhost".to_owned()),
                    port: o
                        .mariadb_port
                        .or(my_file.port)
                        .or(parsed.port())
                        .unwrap_or(3306),
                    url: SecretString::from(url.trim().replacen("mariadb://", "mysql://", 1)),
                    user_host: o
                        .mariadb_user_host
                        .or(my_file.user_host)
                        .unwrap_or_else(|| "localhost".to_owned()),
                    dump_binary: o
                        .mariadb_dump_binary
                        .or(my_file.dump_binary)
                        .map_or_else(|| PathBuf::from("mariadb-dump"), PathBuf::from),
                    max_user_connections: my_file.max_user_connections.unwrap_or(10),
                    archive_dir: nginx.archive_dir.clone(),
                })
            });
        Config {
            acme,
            dns,
            dns_incomplete,
            php,
            mariadb,
            mariadb_problem,
            nginx,
            stripe,
            stripe_without_key,
            database_url: o
                .database_url
                .or(f.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            database_pool_size: o
                .database_pool_size
                .or(f.database_pool_size)
                .unwrap_or(lodge_store::DEFAULT_POOL_SIZE),
            public_base_url,
            listen,
            rate_limit_per_minute: o
                .rate_limit_per_minute
                .or(f.rate_limit_per_minute)
                .unwrap_or(1000),
            rate_limit_burst: o.rate_limit_burst.or(f.rate_limit_burst).unwrap_or(100),
            login: {
                let d = lodge_http::login_guard::LoginLimits::default();
                lodge_http::login_guard::LoginLimits {
                    free_per_email: o
                        .login_failures_per_email
                        .or(f.login_failures_per_email)
                        .unwrap_or(d.free_per_email),
                    free_per_address: o
                        .login_failures_per_address
                        .or(f.login_failures_per_address)
                        .unwrap_or(d.free_per_address),
                    max_wait_secs: o
                        .login_max_wait_secs
                        .or(f.login_max_wait_secs)
                        .unwrap_or(d.max_wait_secs)
                        .max(1),
                    ..d
                }
            },
            conn: {
                let d = ConnLimits::default();
                let secs = |o: Option<u64>, f: Option<u64>, d: Duration| {
                    o.or(f).map_or(d, Duration::from_secs)
                };
                ConnLimits {
                    header_timeout: secs(
                        o.header_timeout_secs,
                        f.header_timeout_secs,
                        d.header_timeout,
                    ),
                    body_timeout: secs(o.body_timeout_secs, f.body_timeout_secs, d.body_timeout),
                    idle_timeout: secs(o.idle_timeout_secs, f.idle_timeout_secs, d.idle_timeout),
                    max_connections: o
                        .max_connections
                        .or(f.max_connections)
                        .unwrap_or(d.max_connections),
                }
            },
            metrics_token: o.metrics_token.or(f.metrics_token).map(SecretString::from),
            metrics_listen: o.metrics_listen.or(f.metrics_listen),
            jwt_secret: o.jwt_secret.or(f.jwt_secret).map(SecretString::from),
            key_prefix: o
                .key_prefix
                .or(f.key_prefix)
                .unwrap_or_else(|| "sk-lodge-".to_owned()),
            node_name: o
                .node_name
                .or(f.node_name)
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(default_node_name),
            currency: o
                .currency
                .or(f.currency)
                .unwrap_or_else(|| "USD".to_owned()),
            secret_key: o.secret_key.or(f.secret_key).map(SecretString::from),
            bank_transfer_instructions: o
                .bank_transfer_instructions
                .or(f.bank_transfer_instructions)
                .unwrap_or_default(),
            invoice_expiry_days: o
                .invoice_expiry_days
                .or(f.invoice_expiry_days)
                .unwrap_or(14),
            retention_days: o
                .retention_days
                .or(f.retention_days)
                .unwrap_or(lodge_services::DEFAULT_RETENTION_DAYS),
            renewal_lead_days: o
                .renewal_lead_days
                .or(f.renewal_lead_days)
                .unwrap_or(Policy::default().lead_days),
            suspension_grace_days: o
                .suspension_grace_days
                .or(f.suspension_grace_days)
                .unwrap_or(Policy::default().suspend_after_days),
            termination_grace_days: o
                .termination_grace_days
                .or(f.termination_grace_days)
                .unwrap_or(Policy::default().terminate_after_days),
            require_tos: o.require_tos.or(f.require_tos).unwrap_or(false),
            webhooks_allow_private: o
                .webhooks_allow_private
                .or(f.webhooks_allow_private)
                .unwrap_or(false),
            trusted_proxies: o
                .trusted_proxies
                .or(f.trusted_proxies)
                .unwrap_or_else(|| {
                    DEFAULT_TRUSTED_PROXIES
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                })
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("none"))
                .collect(),
            cors_origins: o
                .cors_origins
                .or(f.cors_origins)
                .unwrap_or_default()
                .iter()
                .map(|s| s.trim().trim_end_matches('/').to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            mail: MailConfig {
                host: o.mail_host.or(f.mail_host),
                port: o.mail_port.or(f.mail_port),
                tls: o.mail_tls.or(f.mail_tls),
                username: o.mail_username.or(f.mail_username),
                password: o.mail_password.or(f.mail_password).map(SecretString::from),
                from: o.mail_from.or(f.mail_from),
                installation_name: o.mail_installation_name.or(f.mail_installation_name),
                postal_address: o.mail_postal_address.or(f.mail_postal_address),
                base_url: o.mail_base_url.or(f.mail_base_url),
                templates_dir: o
                    .mail_templates_dir
                    .or(f.mail_templates_dir)
                    .map(PathBuf::from),
                timeout_secs: o.mail_timeout_secs.or(f.mail_timeout_secs),
                ca_file: o.mail_ca_file.or(f.mail_ca_file).map(PathBuf::from),
            },
            registrars: f.registrars.unwrap_or_default(),
        }
    }
}

/// The machine's host name (`HOSTNAME`, else `/etc/hostname`), else `lodge`.
fn default_node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| lodge_services::servers::is_node_name(n))
        .unwrap_or_else(|| "lodge".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrars_are_read_from_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
            [[registrars]]
            name = "epp-example"
            host = "epp.registry.example"
            client_id = "lodge"
            password_sealed = "sealed"
            tlds = ["com", "net"]
            "#,
        )
        .unwrap();
        let cfg = Config::resolve(Overrides::default(), file);
        assert_eq!(cfg.registrars.len(), 1);
        let r = &cfg.registrars[0];
        assert_eq!((r.port, r.kind.as_str()), (700, "epp"), "the defaults");
        assert_eq!(r.tlds, ["com", "net"]);
        // A misspelt key is refused, not ignored.
        let bad = toml::from_str::<FileConfig>(
            "[[registrars]]\nname = \"x\"\nhost = \"h\"\nclient_id = \"c\"\npassword = \"plain\"\ntlds = []",
        );
        assert!(bad.is_err());
        assert!(Config::resolve(Overrides::default(), FileConfig::default())
            .registrars
            .is_empty());
    }

    #[test]
    fn layers_in_order() {
        let file = FileConfig {
            listen: Some("127.0.0.1:9000".into()),
            database_url: Some("sqlite://file.db".into()),
            rate_limit_burst: Some(7),
            ..Default::default()
        };
        let flags = Overrides {
            database_url: Some("sqlite://flag.db".into()),
            ..Default::default()
        };
        let c = Config::resolve(flags, file);
        assert_eq!(c.listen, "127.0.0.1:9000", "file beats default");
        assert_eq!(c.database_url, "sqlite://flag.db", "flag/env beats file");
        assert_eq!(c.rate_limit_burst, 7);
        assert_eq!(c.rate_limit_per_minute, 1000, "default");
        assert_eq!(c.public_base_url, "http://127.0.0.1:9000");
    }

    #[test]
    fn trusted_proxies_are_loopback_by_default_and_checked() {
        let with = |p: Option<Vec<&str>>| {
            Config::resolve(
                Overrides::default(),
                FileConfig {
                    trusted_proxies: p.map(|v| v.into_iter().map(str::to_owned).collect()),
                    ..Default::default()
                },
            )
        };
        let nets = |c: Config| -> Vec<String> {
            c.trusted_proxies()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(nets(with(None)), ["127.0.0.0/8", "::1/128"]);
        assert!(nets(with(Some(vec!["none"]))).is_empty());
        assert_eq!(
            nets(with(Some(vec![" 10.1.2.3", "fd00::/8"]))),
            ["10.1.2.3/32", "fd00::/8"]
        );
        for bad in ["10.0.0.0/33", "proxy.example", "10.0.0.1-10.0.0.9"] {
            let e = with(Some(vec![bad])).validate().expect_err(bad);
            assert!(e.to_string().contains("--trusted-proxies"), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_that_would_act_on_everything_are_refused() {
        let with = |f: FileConfig| Config::resolve(Overrides::default(), f).validate();
        assert!(with(FileConfig::default()).is_ok(), "the defaults hold");
        for url in [
            "notaurl",
            "billing.example.com",
            "ftp://x.example",
            "https://a@b.example/",
        ] {
            let e = with(FileConfig {
                public_base_url: Some(url.into()),
                ..Default::default()
            })
            .expect_err(url);
            assert!(e.to_string().contains("--public-base-url"), "{url}: {e}");
        }
        for url in ["https://billing.example.com", "http://[::1]:8080/lodge/"] {
            let f = FileConfig {
                public_base_url: Some(url.into()),
                ..Default::default()
            };
            assert!(with(f).is_ok(), "{url}");
        }
        for (f, word) in [
            (
                FileConfig {
                    invoice_expiry_days: Some(0),
                    ..Default::default()
                },
                "--invoice-expiry-days",
            ),
            (
                FileConfig {
                    invoice_expiry_days: Some(-1),
                    ..Default::default()
                },
                "--invoice-expiry-days",
            ),
            (
                FileConfig {
                    retention_days: Some(-1),
                    ..Default::default()
                },
                "--retention-days",
            ),
            (
                FileConfig {
                    retention_days: Some(36_501),
                    ..Default::default()
                },
                "--retention-days",
            ),
            (
                FileConfig {
                    suspension_grace_days: Some(0),
                    ..Default::default()
                },
                "--suspension-grace-days",
            ),
            (
                FileConfig {
                    termination_grace_days: Some(-5),
                    ..Default::default()
                },
                "--termination-grace-days",
            ),
            (
                FileConfig {
                    renewal_lead_days: Some(-1),
                    ..Default::default()
                },
                "--renewal-lead-days",
            ),
            (
                FileConfig {
                    suspension_grace_days: Some(30),
                    termination_grace_days: Some(7),
                    ..Default::default()
                },
                "longer than",
            ),
        ] {
            let e = with(f).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn stripe_is_configured_whole_or_refused() {
        let file: FileConfig = toml::from_str(
            r#"
            stripe_secret_key = "sk_test_file"
            stripe_webhook_secrets = ["whsec_old", "whsec_new"]
            stripe_api_base = "http://127.0.0.1:8420/"
            "#,
        )
        .unwrap();
        let c = Config::resolve(Overrides::default(), file);
        c.validate().unwrap();
        // A currency Stripe counts in another unit is refused with cards on.
        for code in ["ISK", "KWD", "mga"] {
            let f: FileConfig = toml::from_str(&format!(
                "stripe_secret_key = \"sk_test_file\"\nstripe_webhook_secrets = [\"whsec_x\"]\ncurrency = \"{code}\"\n"
            ))
            .unwrap();
            let e = Config::resolve(Overrides::default(), f)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("not taken in"), "{code}: {e}");
        }
        let s = c.stripe.as_ref().unwrap();
        assert_eq!(s.webhook_secrets.len(), 2);
        assert_eq!(s.api_base, "http://127.0.0.1:8420");
        assert!(s.publishable_key.is_none());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("sk_test_file") && !shown.contains("whsec_"),
            "{shown}"
        );

        let flags = Overrides {
            stripe_publishable_key: Some("pk_test_x".into()),
            ..Default::default()
        };
        let e = Config::resolve(flags, FileConfig::default())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--stripe-publishable-key"), "{e}");

        let flags = Overrides {
            stripe_secret_key: Some("sk_test_flag".into()),
            ..Default::default()
        };
        let e = Config::resolve(flags, FileConfig::default())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--stripe-webhook-secret"), "{e}");
        assert!(!e.contains("sk_test_flag"), "{e}");
    }

    #[test]
    fn private_webhook_targets_are_refused_unless_allowed() {
        let off = Config::resolve(Overrides::default(), FileConfig::default());
        assert!(!off.webhooks_allow_private, "refused by default");
        let file: FileConfig = toml::from_str("webhooks_allow_private = true").unwrap();
        assert!(Config::resolve(Overrides::default(), file).webhooks_allow_private);
        let file: FileConfig = toml::from_str("webhooks_allow_private = true").unwrap();
        let flag = Overrides {
            webhooks_allow_private: Some(false),
            ..Default::default()
        };
        assert!(
            !Config::resolve(flag, file).webhooks_allow_private,
            "flag beats file"
        );
    }

    #[test]
    fn mail_is_off_without_a_host_and_checked_with_one() {
        let c = Config::resolve(Overrides::default(), FileConfig::default());
        assert!(c.mail_settings().unwrap().is_none());
        let file = FileConfig {
            mail_host: Some("smtp.example.com".into()),
            mail_from: Some("Acme <billing@acme.test>".into()),
            mail_password: Some("hunter2".into()),
            mail_username: Some("acme".into()),
            mail_postal_address: Some("1 Main St\\nSpringfield".into()),
            ..Default::default()
        };
        let c = Config::resolve(Overrides::default(), file);
        let m = c.mail_settings().unwrap().unwrap();
        assert_eq!((m.port, m.tls), (587, TlsMode::Starttls));
        assert_eq!(m.postal_address, "1 Main St\nSpringfield");
        assert_eq!(m.base_url, "http://127.0.0.1:8080");
        assert!(!format!("{c:?}").contains("hunter2"));
        let no_from = FileConfig {
            mail_host: Some("smtp.example.com".into()),
            ..Default::default()
        };
        let e = Config::resolve(Overrides::default(), no_from)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--mail-from"), "{e}");
        let bad_tls = FileConfig {
            mail_host: Some("smtp.example.com".into()),
            mail_from: Some("billing@acme.test".into()),
            mail_tls: Some("ssl".into()),
            ..Default::default()
        };
        let e = Config::resolve(Overrides::default(), bad_tls)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--mail-tls"), "{e}");
    }

    #[test]
    fn connection_limits_layer_and_are_checked() {
        let c = Config::resolve(Overrides::default(), FileConfig::default());
        assert_eq!(c.conn, ConnLimits::default());
        assert_eq!(c.conn.header_timeout, Duration::from_secs(10));
        let file: FileConfig = toml::from_str(
            "header_timeout_secs = 3\nbody_timeout_secs = 4\nidle_timeout_secs = 5\nmax_connections = 6\nmetrics_listen = \"127.0.0.1:9100\"",
        )
        .unwrap();
        let flags = Overrides {
            idle_timeout_secs: Some(7),
            ..Default::default()
        };
        let c = Config::resolve(flags, file);
        assert_eq!(
            c.conn,
            ConnLimits {
                header_timeout: Duration::from_secs(3),
                body_timeout: Duration::from_secs(4),
                idle_timeout: Duration::from_secs(7),
                max_connections: 6,
            }
        );
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
        for (f, word) in [
            ("header_timeout_secs = 0", "--header-timeout-secs"),
            ("max_connections = 0", "--max-connections"),
            ("metrics_token = \" \"", "--metrics-token"),
            ("database_pool_size = 4", "--database-pool-size"),
            ("database_pool_size = 1001", "--database-pool-size"),
        ] {
            let file: FileConfig = toml::from_str(f).unwrap();
            let e = Config::resolve(Overrides::default(), file)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains(word), "{e}");
        }
        let file: FileConfig = toml::from_str("metrics_token = \"s3cret\"").unwrap();
        let c = Config::resolve(Overrides::default(), file);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn php_and_mariadb_are_off_unless_configured_and_layer() {
        let c = Config::resolve(Overrides::default(), FileConfig::default());
        assert!(c.php.is_none() && c.mariadb.is_none());
        let file: FileConfig = toml::from_str(
            r#"
            [php]
            pool_dir = "/var/lib/lodge/php-pools"
            fpm_args = "-y /etc/php/8.2/fpm/php-fpm.conf"
            max_children = 3
            upload_max_mb = 32
            [mariadb]
            url = "mysql://lodge_admin:s3cret@127.0.0.1:3307/"
            max_user_connections = 4
            "#,
        )
        .unwrap();
        let flags = Overrides {
            php_pool_user: Some("{user}".into()),
            mariadb_host: Some("db.example.com".into()),
            ..Default::default()
        };
        let c = Config::resolve(flags, file);
        c.validate().unwrap();
        let php = c.php.as_ref().unwrap();
        assert_eq!(php.pool_dir, PathBuf::from("/var/lib/lodge/php-pools"));
        assert_eq!(php.fpm_args, ["-y", "/etc/php/8.2/fpm/php-fpm.conf"]);
        assert_eq!((php.max_children, php.upload_max_mb), (3, 32));
        assert_eq!(php.pool_user, "{user}", "flag beats file and default");
        assert_eq!(
            php.pid_file.as_deref(),
            Some(Path::new("/run/php/php8.2-fpm.pid"))
        );
        let m = c.mariadb.as_ref().unwrap();
        assert_eq!((m.host.as_str(), m.port), ("db.example.com", 3307));
        assert_eq!(
            (m.user_host.as_str(), m.max_user_connections),
            ("localhost", 4)
        );
        assert_eq!(m.archive_dir, c.nginx.archive_dir);
        assert!(!format!("{c:?}").contains("s3cret"), "the URL is redacted");
        let bad = Overrides {
            mariadb_url: Some("postgres://x@y/".into()),
            ..Default::default()
        };
        let e = Config::resolve(bad, FileConfig::default())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--mariadb-url"), "{e}");
        assert!(toml::from_str::<FileConfig>(
            "[php]
pool_dri = \"x\""
        )
        .is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn cors_origins_are_origins_and_none_by_default() {
        assert!(Config::resolve(Overrides::default(), FileConfig::default())
            .cors_origins
            .is_empty());
        let file: FileConfig =
            toml::from_str("cors_origins = [\"https://my.example.com/\"]").unwrap();
        let c = Config::resolve(Overrides::default(), file);
        assert_eq!(c.cors_origins, ["https://my.example.com"]);
        for good in [
            "https://my.example.com",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "my.example.com",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
            "https://a:b:c",
            "https://u@a.example",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
        let flagged = Config::resolve(
            Overrides {
                cors_origins: Some(vec!["https://a.example/x".into()]),
                ..Default::default()
            },
            FileConfig::default(),
        );
        assert!(flagged.validate().is_err());
    }

    #[test]
    fn acme_is_off_unless_configured_and_checked() {
        let c = Config::resolve(Overrides::default(), FileConfig::default());
        assert!(c.acme.is_none());
        assert_eq!(c.nginx.tls_listen, "443");
        // A contact alone: Let's Encrypt, HTTP-01.
        let file: FileConfig = toml::from_str(
            "nginx_tls_listen = \"127.0.0.1:8443\"\n[acme]\ncontact_email = \"ops@example.com\"",
        )
        .unwrap();
        let c = Config::resolve(Overrides::default(), file);
        let acme = c.acme.clone().expect("on");
        assert_eq!(acme.directory_url, lodge_services::tls::LETS_ENCRYPT);
        assert_eq!(acme.challenge, "http-01");
        assert_eq!(c.nginx.tls_listen, "127.0.0.1:8443");
        c.validate().expect("valid");
        let s = acme.settings().expect("settings");
        assert_eq!(s.challenge, lodge_services::tls::Challenge::Http01);
        // Flags win; dns-01 needs PowerDNS; a bad address, URL or challenge is refused.
        let refused = |o: Overrides| {
            Config::resolve(o, FileConfig::default())
                .validate()
                .unwrap_err()
                .to_string()
        };
        let dir = Some("https://ca.test/dir".to_owned());
        assert!(refused(Overrides {
            acme_directory_url: dir.clone(),
            acme_challenge: Some("dns-01".into()),
            ..Default::default()
        })
        .contains("PowerDNS"));
        assert!(refused(Overrides {
            acme_directory_url: dir.clone(),
            acme_challenge: Some("tls-alpn-01".into()),
            ..Default::default()
        })
        .contains("http-01 or dns-01"));
        assert!(refused(Overrides {
            acme_directory_url: Some("http://ca.test/dir".into()),
            ..Default::default()
        })
        .contains("https://"));
        assert!(refused(Overrides {
            acme_contact_email: Some("not an address".into()),
            ..Default::default()
        })
        .contains("e-mail"));
        let dns01 = Config::resolve(
            Overrides {
                acme_directory_url: dir,
                acme_challenge: Some("dns-01".into()),
                pdns_api_url: Some("http://127.0.0.1:8081".into()),
                pdns_api_key: Some("k".into()),
                ..Default::default()
            },
            FileConfig::default(),
        );
        dns01.validate().expect("dns-01 with PowerDNS");
        // A CA file that is no certificate is refused at start.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "nothing").unwrap();
        let with_file = AcmeConfig {
            ca_file: Some(bad),
            ..acme
        };
        assert!(with_file.settings().is_err());
    }
}
