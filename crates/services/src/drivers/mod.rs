//! Provisioning drivers: the control panels (or this machine's nginx) that hold hosting
//! accounts, behind one narrow trait. Every operation is idempotent: `create` finds an
//! account it already made, `terminate` of a gone account succeeds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

pub mod cpanel;
pub mod directadmin;
pub mod http;
pub mod nginx;
pub mod php;
pub mod plesk;

/// What a driver needs to know about an account.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account's login on the server (letters and digits).
    pub username: String,
    /// The ASCII domain name it serves.
    pub domain: String,
    /// The panel package (plan) name.
    pub package: String,
    /// A password for the panel, when one was chosen or generated.
    pub password: Option<String>,
    /// The server's hostname.
    pub server: String,
    /// The plan's limits, from the catalog (what a driver enforces or records of them is
    /// its own: see each driver).
    pub limits: PlanLimits,
    /// The customer's address, when asking for a login link (Plesk binds its session to
    /// it: `create_session`'s `user_ip`); `None` otherwise.
    pub client_ip: Option<std::net::IpAddr>,
}

/// A plan's limits as the catalog gives them (0: none, or for disk and bandwidth: no cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanLimits {
    pub disk_space_mb: i64,
    pub bandwidth_mb: i64,
    pub max_email_accounts: i64,
    pub max_databases: i64,
    pub max_subdomains: i64,
    pub max_addon_domains: i64,
    pub max_parked_domains: i64,
    pub max_ftp_accounts: i64,
}

impl PlanLimits {
    /// The limits of a catalog plan.
    pub fn of(p: &lodge_store::catalog::PlanRow) -> Self {
        PlanLimits {
            disk_space_mb: p.disk_space_mb,
            bandwidth_mb: p.bandwidth_mb,
            max_email_accounts: p.max_email_accounts,
            max_databases: p.max_databases,
            max_subdomains: p.max_subdomains,
            max_addon_domains: p.max_addon_domains,
            max_parked_domains: p.max_parked_domains,
            max_ftp_accounts: p.max_ftp_accounts,
        }
    }

    /// `key = value` lines, the form the nginx driver records beside a site.
    pub fn to_lines(&self) -> String {
        format!(
            "disk_space_mb = {}\nbandwidth_mb = {}\nmax_email_accounts = {}\nmax_databases = {}\nmax_subdomains = {}\nmax_addon_domains = {}\nmax_parked_domains = {}\nmax_ftp_accounts = {}\n",
            self.disk_space_mb,
            self.bandwidth_mb,
            self.max_email_accounts,
            self.max_databases,
            self.max_subdomains,
            self.max_addon_domains,
            self.max_parked_domains,
            self.max_ftp_accounts,
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

/// Marks an error no retry can cure (the panel refused: the name is someone else's, …).
pub const REFUSED: &str = "refused by the panel: ";

impl DriverError {
    /// The panel refused for good: the job fails at once, its reason shown on the account.
    pub fn refused(reason: impl std::fmt::Display) -> Self {
        DriverError(format!("{REFUSED}{reason}"))
    }

    pub fn is_refused(&self) -> bool {
        self.0.contains(REFUSED)
    }
}

/// Names no panel accepts as an account login (cPanel's reserved list and system users;
/// DirectAdmin and Plesk refuse the same system names).
pub const RESERVED_USERNAMES: &[&str] = &[
    "all",
    "admin",
    "administrator",
    "apache",
    "bin",
    "cpanel",
    "cpanelsolr",
    "daemon",
    "diradmin",
    "directadmin",
    "dovecot",
    "exim",
    "ftp",
    "games",
    "halt",
    "httpd",
    "lp",
    "mail",
    "mailman",
    "mysql",
    "named",
    "news",
    "nginx",
    "nobody",
    "operator",
    "postgres",
    "psaadm",
    "psaftp",
    "root",
    "shutdown",
    "sync",
    "system",
    "test",
    "tomcat",
    "toor",
    "virtfs",
    "webmaster",
    "whm",
    "www",
    "wwwdata",
];

/// A login for a control panel account: lowercase letters of the domain, then the
/// account's number in decimal, at most 8 characters while the number has at most 7 digits
/// (cPanel's first 8 characters must be unique; DirectAdmin allows 3 to 10 by default);
/// starting with a letter, never starting with `test`, never a reserved name (those hold
/// no digit).
///
/// Two accounts never share it: the stem holds no digit and the number no letter, so the
/// name splits back into the two at its first digit, and the numbers differ. (Letters and
/// digits of the domain followed by the number in base 36 did not split back:
/// `shop.de` 46 and `shopde1.com` 10 were both `shopde1a`; found by the panels audit.)
/// A password Lodge makes for a panel account: 24 characters with upper- and lower-case
/// letters, digits and symbols, shuffled, strong enough for the strictest setting of each
/// panel's policy (WHM's strength 100, Plesk's "Very strong": 16 or more characters of
/// mixed classes); found by review against their documentation: 20 letters and digits
/// could fail a strict WHM, and one in thirty had no digit at all.
pub fn strong_password() -> String {
    use rand::seq::SliceRandom;
    use rand::Rng;
    const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGITS: &[u8] = b"23456789";
    const SYMBOLS: &[u8] = b"-_.#@!";
    let mut rng = rand::thread_rng();
    let mut pick = |set: &[u8], n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                set.get(rng.gen_range(0..set.len()))
                    .copied()
                    .unwrap_or(b'x')
            })
            .collect()
    };
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
    let mut chars = [
        pick(LOWER, 4),
        pick(UPPER, 4),
        pick(DIGITS, 4),
        pick(SYMBOLS, 2),
        pick(&all, 10),
    ]
    .concat();
    chars.shuffle(&mut rand::thread_rng());
    String::from_utf8(chars).unwrap_or_default()
}

pub fn panel_username(domain: &str, legacy_id: i64) -> String {
    let id = legacy_id.unsigned_abs().to_string();
    login_name(domain, 8_usize.saturating_sub(id.len()).max(1), &id)
}

/// A stem of at most `room` lowercase letters of `domain` (`u` first when it has none or
/// starts with `test`), then `id` (digits only): see [`panel_username`] for why it is
/// unique.
pub(crate) fn login_name(domain: &str, room: usize, id: &str) -> String {
    let mut stem: String = domain
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    if stem.is_empty() || stem.starts_with("test") {
        stem.insert(0, 'u');
    }
    let stem: String = stem.chars().take(room.max(1)).collect();
    format!("{stem}{id}")
}

/// Where a panel server is and how to log in to it: the server's hostname and its
/// credentials, opened from their sealed form for the call (never logged: Debug redacts).
#[derive(Clone)]
pub struct ServerAccess {
    pub hostname: String,
    pub credentials: Option<String>,
}

impl std::fmt::Debug for ServerAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAccess")
            .field("hostname", &self.hostname)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Makes a driver bound to one panel server (its address, login, certificate pin).
pub trait PanelFactory: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    fn connect(&self, server: &ServerAccess) -> Result<Arc<dyn Provisioner>, DriverError>;
}

#[async_trait]
pub trait Provisioner: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    async fn create(&self, a: &Account) -> Result<(), DriverError>;
    async fn suspend(&self, a: &Account) -> Result<(), DriverError>;
    async fn unsuspend(&self, a: &Account) -> Result<(), DriverError>;
    async fn terminate(&self, a: &Account) -> Result<(), DriverError>;
    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError>;
    async fn change_password(&self, a: &Account, password: &str) -> Result<(), DriverError>;
    /// Where the customer logs in to manage the account, if the driver has such a page.
    async fn login_url(&self, a: &Account) -> Result<Option<String>, DriverError>;

    /// The login a new account gets (called once; the hosting row keeps it).
    fn username(&self, domain: &str, legacy_id: i64) -> String {
        crate::provisioning::username_for(domain, legacy_id)
    }

    /// ACME HTTP-01: serves `key_authorization` at
    /// `http://<domain>/.well-known/acme-challenge/<token>`. `false`: this driver cannot.
    async fn put_acme_challenge(
        &self,
        _a: &Account,
        _token: &str,
        _key_authorization: &str,
    ) -> Result<bool, DriverError> {
        Ok(false)
    }

    /// Removes the account's ACME challenge files (after validation).
    async fn remove_acme_challenges(&self, _a: &Account) -> Result<(), DriverError> {
        Ok(())
    }

    /// Installs a certificate chain and its key (PEM) for the site (its suspension page
    /// when `suspended`) and reloads. `false`: this driver does not serve TLS.
    async fn install_certificate(
        &self,
        _a: &Account,
        _chain_pem: &str,
        _key_pem: &str,
        _suspended: bool,
    ) -> Result<bool, DriverError> {
        Ok(false)
    }

    /// The certificate chain installed for the site, if any.
    async fn has_certificate(&self, _a: &Account) -> Result<Option<String>, DriverError> {
        Ok(None)
    }

    /// Checks that the server answers and takes the credentials; says what it found.
    async fn check(&self) -> Result<String, DriverError> {
        Ok(format!("{}: nothing to check", self.name()))
    }
}

/// The drivers a node knows, by name (`nginx`, …).
#[derive(Debug, Clone, Default)]
pub struct Drivers {
    inner: Arc<RwLock<HashMap<String, Arc<dyn Provisioner>>>>,
    panels: Arc<RwLock<HashMap<String, Arc<dyn PanelFactory>>>>,
}

impl Drivers {
    pub fn register(&self, driver: Arc<dyn Provisioner>) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(driver.name().to_owned(), driver);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Provisioner>> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    /// Registers a panel driver (one connection per server).
    pub fn register_panel(&self, factory: Arc<dyn PanelFactory>) {
        let mut map = self.panels.write().unwrap_or_else(|e| e.into_inner());
        map.insert(factory.name().to_owned(), factory);
    }

    /// The three control panels: `directadmin`, `cpanel` and `plesk`.
    pub fn register_panels(&self) {
        self.register_panel(Arc::new(directadmin::Factory));
        self.register_panel(Arc::new(cpanel::Factory));
        self.register_panel(Arc::new(plesk::Factory));
    }

    /// Whether `name` is a control panel (its accounts have a panel login page).
    pub fn is_panel(&self, name: &str) -> bool {
        let map = self.panels.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(name)
    }

    /// Whether a driver of this name is known.
    pub fn knows(&self, name: &str) -> bool {
        self.get(name).is_some() || {
            let map = self.panels.read().unwrap_or_else(|e| e.into_inner());
            map.contains_key(name)
        }
    }

    /// The driver `name` for one server: a registered driver as it is, a panel connected to
    /// the server. `None` for an unknown name.
    pub fn for_server(
        &self,
        name: &str,
        server: &ServerAccess,
    ) -> Option<Result<Arc<dyn Provisioner>, DriverError>> {
        if let Some(d) = self.get(name) {
            return Some(Ok(d));
        }
        let factory = {
            let map = self.panels.read().unwrap_or_else(|e| e.into_inner());
            map.get(name).cloned()
        };
        factory.map(|f| f.connect(server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_usernames_follow_the_panels_rules() {
        assert_eq!(panel_username("shop.example.com", 42), "shopex42");
        assert_eq!(panel_username("123.example.com", 7), "example7");
        assert_eq!(panel_username("testing.com", 1), "utestin1");
        assert_eq!(panel_username("a.io", 1), "aio1");
        assert_eq!(panel_username("x.y", 5), "xy5");
        assert_eq!(panel_username("r.o", 1), "ro1");
        assert_eq!(panel_username("1.2", 3), "u3");
        // The audit's collisions.
        assert_ne!(
            panel_username("shop.de", 46),
            panel_username("shopde1.com", 10)
        );
        assert_ne!(
            panel_username("foo.io", 1667),
            panel_username("fooio1ab.net", 371)
        );
        for (d, id) in [("root.com", 1), ("admin.net", 99_999_999_999), ("é.fr", 3)] {
            let u = panel_username(d, id);
            assert!(u.len() <= 8 || id >= 10_000_000, "{u}");
            assert!(u.starts_with(|c: char| c.is_ascii_lowercase()), "{u}");
            assert!(!RESERVED_USERNAMES.contains(&u.as_str()));
        }
    }

    proptest::proptest! {
        /// Two accounts (two numbers) never get one login, whatever their domains.
        #[test]
        fn two_accounts_never_share_a_login(
            a in "[a-z0-9.-]{1,20}", b in "[a-z0-9.-]{1,20}",
            x in 1_i64..100_000_000, y in 1_i64..100_000_000,
        ) {
            proptest::prop_assume!(x != y);
            proptest::prop_assert_ne!(panel_username(&a, x), panel_username(&b, y));
            proptest::prop_assert_ne!(
                crate::provisioning::username_for(&a, x),
                crate::provisioning::username_for(&b, y)
            );
        }
    }
}

#[cfg(test)]
mod password_tests {
    #[test]
    fn made_passwords_have_every_class() {
        for _ in 0..2000 {
            let p = super::strong_password();
            assert_eq!(p.len(), 24, "{p}");
            assert!(crate::provisioning::panel_password_ok(&p), "{p}");
            for class in [
                |c: char| c.is_ascii_lowercase(),
                |c: char| c.is_ascii_uppercase(),
                |c: char| c.is_ascii_digit(),
                |c: char| !c.is_ascii_alphanumeric(),
            ] {
                assert!(p.chars().any(class), "{p}");
            }
        }
    }
}
