//! Lodge's use cases. Both HTTP dialects, the CLI and the worker call these; this is the only
//! layer that opens transactions. Pricing lives in `lodge_core`, SQL in `lodge_store`.

use std::sync::Arc;

use lodge_core::{Clock, Currency};
use lodge_store::{Store, StoreError};
use secrecy::SecretString;

pub mod auth;
pub mod billing;
pub mod catalog;
pub mod commit;
pub mod countries;
pub mod crypto;
pub mod databases;
pub mod demo;
pub mod dns;
pub mod drivers;
pub mod errors;
pub mod events;
pub mod gateway;
pub mod hosting;
pub mod idempotency;
pub mod logins;
pub mod mail;
pub mod mariadb;
pub mod model;
pub mod orders;
pub mod payment_tokens;
pub mod plan_change;
pub mod provisioning;
pub mod queries;
pub mod refunds;
pub mod registrar;
pub mod renewals;
pub mod servers;
pub mod storefront;
pub mod tenancy;
pub mod tls;
pub mod webhooks;
pub mod websites;

pub use errors::{FieldCode, FieldError, FieldErrors, Validator};

/// `"5.00 USD"`, as the API writes amounts: an amount in a currency stored as its code,
/// for the words people read (mail notices, refusals).
pub(crate) fn amount_text(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => lodge_core::Money::new(minor, c).to_string(),
        Err(_) => format!("{minor} (minor units) {currency}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("invalid input")]
    Invalid(FieldErrors),
    #[error("{0}")]
    Conflict(String),
    /// The account credit does not cover what a payment from it asked; nothing was paid
    /// (`/v1` answers it `409` as any conflict, `/apiv2` `402` as InterServer documents
    /// "balance insufficient").
    #[error("{0}")]
    InsufficientCredit(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
    /// The request's `Idempotency-Key` is held already: by a request that committed (its
    /// stored response is the answer) or one still in flight.
    #[error("the Idempotency-Key is already in use")]
    KeyTaken,
    /// The request's `Idempotency-Key` was used with another request.
    #[error("the Idempotency-Key was already used with a different request")]
    KeyReused,
    /// The server is another node's to act on (its `node`, the first field): a job is put
    /// back for that node's worker, not failed.
    #[error("{1}")]
    OtherNode(String, String),
    /// A job's work must wait until the time given (unix microseconds), e.g. a termination
    /// while the account is still being created on its panel: put back, the attempt not
    /// counted, the reason (the second field) its last error.
    #[error("{1}")]
    NotYet(i64, String),
    /// Another server refused for good what a job asked, by a code Lodge read itself (an
    /// SMTP server's 550, 551 or 553 for the recipient; never words in an answer, which a
    /// customer's input may carry): the job is dead at once rather than retried for hours.
    #[error("{0}")]
    Refused(String),
    /// A service Lodge needs for this request (the registrar) cannot answer at the moment:
    /// nothing was done, and the caller may retry (answered 503 with `Retry-After`, the
    /// message telling which service).
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Settings the services need (the CLI builds them from the layered configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    pub currency: Currency,
    pub key_prefix: String,
    /// This node's name: a server whose `node` is another's is not acted on here.
    pub node_name: String,
    pub jwt_secret: SecretString,
    /// Lifetime of an access token, seconds.
    pub access_ttl_secs: i64,
    /// Lifetime of a refresh token, seconds.
    pub refresh_ttl_secs: i64,
    /// Lifetime of an `/apiv2` session, seconds.
    pub session_ttl_secs: i64,
    /// Bank-transfer instructions shown on the payment page (empty: not offered).
    pub bank_transfer_instructions: String,
    /// `/apiv2` orders must carry `tos` (terms accepted); off by default, as InterServer's own
    /// web client does not send it.
    pub require_tos: bool,
    /// Days after which an unpaid first invoice expires (its order is cancelled).
    pub invoice_expiry_days: i64,
    /// Days jobs done, webhook delivery attempts and the mail log are kept (0: forever;
    /// never fewer than the termination grace: [`Lodge::forget_old_records`]).
    pub retention_days: i64,
    /// When renewals are billed, and what an unpaid one leads to.
    pub policy: lodge_core::renewal::Policy,
    /// The nginx driver's paths and command.
    pub nginx: drivers::nginx::NginxConfig,
    /// A PHP-FPM pool per nginx account (`None`: no PHP).
    pub php: Option<drivers::php::PhpConfig>,
    /// Webhook endpoints may be loopback, private, link-local or unspecified addresses
    /// (`--webhooks-allow-private`; off: every address of an endpoint's host must be public).
    pub webhooks_allow_private: bool,
    /// SMTP and the notices' settings; `None`: mail is off.
    pub mail: Option<mail::MailSettings>,
}

/// [`Settings::retention_days`] unless configured.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

impl Settings {
    pub fn new(currency: Currency, jwt_secret: SecretString) -> Self {
        Settings {
            currency,
            key_prefix: "sk-lodge-".to_owned(),
            node_name: "lodge".to_owned(),
            jwt_secret,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 7 * 24 * 3600,
            session_ttl_secs: 24 * 3600,
            bank_transfer_instructions: String::new(),
            require_tos: false,
            invoice_expiry_days: 14,
            retention_days: DEFAULT_RETENTION_DAYS,
            policy: lodge_core::renewal::Policy::default(),
            nginx: drivers::nginx::NginxConfig::default_under(std::path::Path::new("lodge-data")),
            php: None,
            webhooks_allow_private: false,
            mail: None,
        }
    }
}

/// The services of one Lodge node: storage, clock, settings and the in-memory catalog.
#[derive(Clone, Debug)]
pub struct Lodge {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub catalog: catalog::CatalogCache,
    /// Seals secrets stored in the database.
    pub sealer: crypto::Sealer,
    /// The configured registrar; `None` when domains cannot be registered or transferred.
    pub registrar: Option<Arc<dyn registrar::Registrar>>,
    /// Provisioning drivers by name.
    pub drivers: drivers::Drivers,
    /// Group commit of orders (SQLite's batch writer, PostgreSQL).
    pub batcher: Option<orders::OrderBatcher>,
    /// Group commit of payments from credit (SQLite's batch writer, or PostgreSQL).
    pub payments: Option<billing::PaymentBatcher>,
    /// Recently checked API keys.
    pub key_cache: auth::KeyCache,
    /// The card gateway (Stripe); `None` when card payments are not configured.
    pub stripe: Option<Arc<gateway::Stripe>>,
    /// DNS zones on PowerDNS; `None` when DNS hosting is off.
    pub dns: Option<Arc<dns::PowerDns>>,
    /// TLS certificates by ACME for hosted sites; `None` when off.
    pub acme: Option<Arc<tls::AcmeSettings>>,
    /// A MariaDB database per account whose plan has databases; `None` when off.
    pub mariadb: Option<Arc<mariadb::MariaDb>>,
}

impl Lodge {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: Settings,
        sealer: crypto::Sealer,
    ) -> Self {
        let group_commit =
            store.has_batch_writer() || store.engine() == lodge_store::Engine::Postgres;
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        let batcher = (group_commit && runtime)
            .then(|| orders::OrderBatcher::start("lodge-orders", store.clone()));
        let payments = (group_commit && runtime)
            .then(|| billing::PaymentBatcher::start("lodge-payments", store.clone()));
        let drivers = drivers::Drivers::default();
        drivers.register(Arc::new(
            drivers::nginx::NginxDriver::new(settings.nginx.clone(), clock.clone())
                .with_php(settings.php.clone()),
        ));
        drivers.register_panels();
        Lodge {
            store,
            clock,
            settings: Arc::new(settings),
            catalog: catalog::CatalogCache::new(),
            sealer,
            registrar: Some(Arc::new(registrar::ManualRegistrar)),
            drivers,
            batcher,
            payments,
            key_cache: auth::KeyCache::default(),
            stripe: None,
            dns: None,
            acme: None,
            mariadb: None,
        }
    }

    /// Today (UTC) by Lodge's clock.
    pub fn today(&self) -> jiff::civil::Date {
        self.clock.today()
    }

    /// Now, in stored form (unix microseconds).
    pub fn now_us(&self) -> i64 {
        lodge_store::micros(self.clock.now())
    }
}
