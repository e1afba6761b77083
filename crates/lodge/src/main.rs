//! `lodge`: the command line of the Lodge server. Logs go to stderr; stdout carries only what
//! a command prints on purpose (credentials, JSON).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use lodge::config::{Config, FileConfig, Overrides};
use lodge::out;
use lodge_core::{OrganizationId, UserId};
use lodge_services::tenancy::{NewOrganization, NewUser};
use lodge_services::{Lodge, ServiceError};

#[derive(Parser, Debug)]
#[command(
    name = "lodge",
    version,
    about = "Lodge: an open-source server for companies that sell web hosting",
    long_about = "Lodge sells web hosting: a catalog of plans, orders with domains, invoices, \
account credit, payments and provisioning. It speaks OnetSolutions' API under /v1 and \
InterServer's under /apiv2.\n\nConfiguration is layered: defaults < lodge.toml < environment \
(LODGE_*) < flags."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Configuration file (default: ./lodge.toml when it exists).
    #[arg(long, global = true, env = "LODGE_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://path (default sqlite://lodge.db) or postgres://user@host/db.
    #[arg(
        long,
        global = true,
        env = "LODGE_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// PostgreSQL: the most connections this node opens (8 to 1000, default 32). Every node
    /// opens up to this many (those left idle for a minute are closed again): keep nodes ×
    /// this under the server's max_connections, with room for psql and backups.
    #[arg(long, global = true, env = "LODGE_DATABASE_POOL_SIZE")]
    database_pool_size: Option<u32>,
    /// Log format: text or json.
    #[arg(long, global = true, env = "LODGE_LOG_FORMAT")]
    log_format: Option<String>,
    /// Currency the installation sells in (ISO 4217, default USD).
    #[arg(long, global = true, env = "LODGE_CURRENCY")]
    currency: Option<String>,
    /// Key sealing secrets at rest (64 hex digits). Without it, lodge-secret.key beside the
    /// SQLite database (or in the working directory) is used, created on first start.
    #[arg(long, global = true, env = "LODGE_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// This node's name: a server whose `node` names it has its jobs run by this node's
    /// worker only (the nginx driver works on its own machine). Default: the machine's host
    /// name.
    #[arg(long, global = true, env = "LODGE_NODE_NAME")]
    node_name: Option<String>,
    /// Days after which an unpaid first invoice expires and its order is cancelled, and an
    /// upgrade's unpaid invoice lapses with its plan change (default 14).
    #[arg(
        long,
        global = true,
        env = "LODGE_INVOICE_EXPIRY_DAYS",
        allow_negative_numbers = true
    )]
    invoice_expiry_days: Option<i64>,
    /// Days finished jobs, webhook delivery attempts, the mail log and dead webhook deliveries
    /// and mails are kept before the scheduler forgets them (default 90; 0: kept forever).
    /// Events, other dead jobs and billing records are always kept.
    #[arg(
        long,
        global = true,
        env = "LODGE_RETENTION_DAYS",
        allow_negative_numbers = true
    )]
    retention_days: Option<i64>,
    /// Days before a period ends that its renewal invoice is issued (default 14; 0: on the day).
    #[arg(
        long,
        global = true,
        env = "LODGE_RENEWAL_LEAD_DAYS",
        allow_negative_numbers = true
    )]
    renewal_lead_days: Option<i64>,
    /// Days after its due date that an unpaid renewal suspends its accounts (default 7).
    #[arg(
        long,
        global = true,
        env = "LODGE_SUSPENSION_GRACE_DAYS",
        allow_negative_numbers = true
    )]
    suspension_grace_days: Option<i64>,
    /// Days after its due date that an unpaid renewal is cancelled and its accounts
    /// terminated (default 30; longer than the suspension grace).
    #[arg(
        long,
        global = true,
        env = "LODGE_TERMINATION_GRACE_DAYS",
        allow_negative_numbers = true
    )]
    termination_grace_days: Option<i64>,
    /// The nginx binary of the nginx driver (default: nginx on the PATH).
    #[arg(long, global = true, env = "LODGE_NGINX_BINARY")]
    nginx_binary: Option<String>,
    /// Extra arguments for every nginx call, e.g. "-c /etc/nginx/nginx.conf".
    #[arg(
        long,
        global = true,
        env = "LODGE_NGINX_ARGS",
        allow_hyphen_values = true
    )]
    nginx_args: Option<String>,
    /// Directory of the server blocks nginx includes (default lodge-data/nginx-sites).
    #[arg(long, global = true, env = "LODGE_NGINX_SITES_DIR")]
    nginx_sites_dir: Option<String>,
    /// Parent of the accounts' document roots (default lodge-data/www).
    #[arg(long, global = true, env = "LODGE_NGINX_WEB_ROOT")]
    nginx_web_root: Option<String>,
    /// Where terminated accounts' files are archived (default lodge-data/archive).
    #[arg(long, global = true, env = "LODGE_NGINX_ARCHIVE_DIR")]
    nginx_archive_dir: Option<String>,
    /// The listen value of the sites' server blocks (default 80).
    #[arg(long, global = true, env = "LODGE_NGINX_LISTEN")]
    nginx_listen: Option<String>,
    /// The `listen … ssl` value of sites with a certificate from ACME (default 443).
    #[arg(long, global = true, env = "LODGE_NGINX_TLS_LISTEN")]
    nginx_tls_listen: Option<String>,
    /// The ACME CA's directory URL for the sites' TLS certificates (default, when
    /// --acme-contact-email is given: Let's Encrypt's production directory). ACME is off
    /// unless this or --acme-contact-email is given (also `[acme]` in lodge.toml).
    #[arg(long, global = true, env = "LODGE_ACME_DIRECTORY_URL")]
    acme_directory_url: Option<String>,
    /// The ACME account's contact e-mail.
    #[arg(long, global = true, env = "LODGE_ACME_CONTACT_EMAIL")]
    acme_contact_email: Option<String>,
    /// How the CA checks a site: http-01 (through the nginx driver; default) or dns-01
    /// (through PowerDNS, with --pdns-api-url).
    #[arg(long, global = true, env = "LODGE_ACME_CHALLENGE")]
    acme_challenge: Option<String>,
    /// A PEM file of the CAs to trust for the ACME server, every certificate in it, instead
    /// of the system's (a private CA's bundle, or a test CA such as pebble's).
    #[arg(long, global = true, env = "LODGE_ACME_CA_FILE")]
    acme_ca_file: Option<String>,
    /// Stripe secret key (sk_… or rk_…): turns on card payments. Prefer the environment
    /// variable, which stays out of the process list.
    #[arg(
        long,
        global = true,
        env = "LODGE_STRIPE_SECRET_KEY",
        hide_env_values = true
    )]
    stripe_secret_key: Option<String>,
    /// Stripe publishable key (pk_…): the payment page then takes the card with Stripe
    /// Elements.
    #[arg(long, global = true, env = "LODGE_STRIPE_PUBLISHABLE_KEY")]
    stripe_publishable_key: Option<String>,
    /// Signing secret of Stripe's webhook endpoint (whsec_…), which sends to
    /// <public base URL>/webhooks/stripe. Repeat it or separate with commas to accept
    /// several during a rotation.
    #[arg(
        long = "stripe-webhook-secret",
        global = true,
        env = "LODGE_STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    stripe_webhook_secrets: Vec<String>,
    /// Base URL of Stripe's API (default https://api.stripe.com).
    #[arg(long, global = true, env = "LODGE_STRIPE_API_BASE")]
    stripe_api_base: Option<String>,
    /// Prefix of new API keys (the server's and `lodge keys create`'s alike).
    #[arg(long, global = true, env = "LODGE_KEY_PREFIX")]
    key_prefix: Option<String>,
    /// Let webhook endpoints be loopback, private, link-local or unspecified addresses
    /// (default: refused; every address of an endpoint's host must be public).
    #[arg(long, global = true, env = "LODGE_WEBHOOKS_ALLOW_PRIVATE",
          num_args = 0..=1, default_missing_value = "true")]
    webhooks_allow_private: Option<bool>,
    /// PowerDNS's HTTP API (e.g. http://127.0.0.1:8081): turns on DNS zones for hosted
    /// domains (with --pdns-api-key; also `[dns]` in lodge.toml).
    #[arg(long, global = true, env = "LODGE_PDNS_API_URL")]
    pdns_api_url: Option<String>,
    /// PowerDNS's API key (never logged). Prefer the environment variable, which stays out
    /// of the process list.
    #[arg(
        long,
        global = true,
        env = "LODGE_PDNS_API_KEY",
        hide_env_values = true
    )]
    pdns_api_key: Option<String>,
    #[command(flatten)]
    mail: MailArgs,
    #[command(flatten)]
    stack: StackArgs,
}

/// PHP-FPM pools and MariaDB databases of the nginx driver's accounts (also `[php]` and
/// `[mariadb]` in lodge.toml, which hold the rest of their settings).
#[derive(Args, Debug)]
struct StackArgs {
    /// Directory of PHP-FPM pool files that the php-fpm master includes: turns on a pool
    /// per nginx account.
    #[arg(long, global = true, env = "LODGE_PHP_POOL_DIR")]
    php_pool_dir: Option<String>,
    /// php-fpm binary for the configuration test before each reload (default php-fpm8.2).
    #[arg(long, global = true, env = "LODGE_PHP_FPM_BINARY")]
    php_fpm_binary: Option<String>,
    /// Extra arguments of that test, e.g. "-y /etc/php/8.2/fpm/php-fpm.conf".
    #[arg(
        long,
        global = true,
        env = "LODGE_PHP_FPM_ARGS",
        allow_hyphen_values = true
    )]
    php_fpm_args: Option<String>,
    /// Directory of the pools' unix sockets (default lodge-data/php-sockets).
    #[arg(long, global = true, env = "LODGE_PHP_SOCKET_DIR")]
    php_socket_dir: Option<String>,
    /// The php-fpm master's pid file: reloads send it USR2 (default
    /// /run/php/php8.2-fpm.pid).
    #[arg(long, global = true, env = "LODGE_PHP_FPM_PID_FILE")]
    php_fpm_pid_file: Option<String>,
    /// A command reloading php-fpm instead of USR2, e.g. "systemctl reload php8.2-fpm".
    #[arg(long, global = true, env = "LODGE_PHP_RELOAD_COMMAND")]
    php_reload_command: Option<String>,
    /// System user of the pools (default www-data; {user}: the account's own user).
    #[arg(long, global = true, env = "LODGE_PHP_POOL_USER")]
    php_pool_user: Option<String>,
    /// Group allowed to connect to the pools' sockets: nginx's workers' (default www-data).
    #[arg(long, global = true, env = "LODGE_PHP_LISTEN_GROUP")]
    php_listen_group: Option<String>,
    /// MariaDB administrative login, mysql://user:password@host:port/: turns on a database
    /// per account whose plan has databases. Prefer the environment variable.
    #[arg(long, global = true, env = "LODGE_MARIADB_URL", hide_env_values = true)]
    mariadb_url: Option<String>,
    /// Database host shown to customers (default: the URL's host).
    #[arg(long, global = true, env = "LODGE_MARIADB_HOST")]
    mariadb_host: Option<String>,
    /// Database port shown to customers (default: the URL's port, else 3306).
    #[arg(long, global = true, env = "LODGE_MARIADB_PORT")]
    mariadb_port: Option<u16>,
    /// Host part of the accounts' database users (default localhost; % for any).
    #[arg(long, global = true, env = "LODGE_MARIADB_USER_HOST")]
    mariadb_user_host: Option<String>,
    /// mariadb-dump, which archives a terminated account's database (default: on the PATH).
    #[arg(long, global = true, env = "LODGE_MARIADB_DUMP_BINARY")]
    mariadb_dump_binary: Option<String>,
}

/// Mail notices over SMTP (no --mail-host: mail is off).
#[derive(Args, Debug)]
struct MailArgs {
    /// SMTP server of the notices (unset: no mail is sent).
    #[arg(long, global = true, env = "LODGE_MAIL_HOST")]
    mail_host: Option<String>,
    /// SMTP port (default 587 for starttls, 465 for tls, 25 for none).
    #[arg(long, global = true, env = "LODGE_MAIL_PORT")]
    mail_port: Option<u16>,
    /// starttls (default, required), tls (implicit TLS), or none (only to 127.0.0.1/localhost).
    #[arg(long, global = true, env = "LODGE_MAIL_TLS")]
    mail_tls: Option<String>,
    /// SMTP AUTH user name (with --mail-password).
    #[arg(long, global = true, env = "LODGE_MAIL_USERNAME")]
    mail_username: Option<String>,
    /// SMTP AUTH password (never logged).
    #[arg(
        long,
        global = true,
        env = "LODGE_MAIL_PASSWORD",
        hide_env_values = true
    )]
    mail_password: Option<String>,
    /// From address: billing@example.com or "Example Hosting <billing@example.com>".
    #[arg(long, global = true, env = "LODGE_MAIL_FROM")]
    mail_from: Option<String>,
    /// The installation's name in every message (default Lodge).
    #[arg(long, global = true, env = "LODGE_MAIL_INSTALLATION_NAME")]
    mail_installation_name: Option<String>,
    /// The installation's postal address at the foot of every message (\n between lines).
    #[arg(long, global = true, env = "LODGE_MAIL_POSTAL_ADDRESS")]
    mail_postal_address: Option<String>,
    /// Base of the links in messages, e.g. the payment page (default: the public base URL).
    #[arg(long, global = true, env = "LODGE_MAIL_BASE_URL")]
    mail_base_url: Option<String>,
    /// Directory whose files replace the built-in templates of the same name.
    #[arg(long, global = true, env = "LODGE_MAIL_TEMPLATES_DIR")]
    mail_templates_dir: Option<String>,
    /// Seconds sending one message may take, the whole SMTP exchange (default 60, at most
    /// 600).
    #[arg(long, global = true, env = "LODGE_MAIL_TIMEOUT_SECS")]
    mail_timeout_secs: Option<u64>,
    /// PEM file of certificates trusted for the SMTP server besides the system's (a relay
    /// with a private CA).
    #[arg(long, global = true, env = "LODGE_MAIL_CA_FILE")]
    mail_ca_file: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP server (migrations are applied first).
    Serve(ServeArgs),
    /// Run the job worker and scheduler alone (no HTTP), e.g. on extra nodes.
    Worker(WorkerArgs),
    /// Apply the database migrations and exit.
    Migrate,
    /// Seed the demo data (idempotent) and print fresh demo credentials.
    Demo {
        /// Print one JSON object (organization_id, project_id, api_key, admin_api_key, plans…).
        #[arg(long)]
        json: bool,
        /// Seed into a database that holds an installation the demo was never seeded into
        /// (refused otherwise: the demo overwrites plans and TLD prices of its names and adds
        /// a staff login with a published password).
        #[arg(long)]
        force: bool,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Manage organization members.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Manage the hosting catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Recurring billing: what the scheduler will do, or one pass of it now.
    #[command(subcommand)]
    Billing(BillingCommand),
    /// Mail notices: check the SMTP configuration.
    #[command(subcommand)]
    Mail(MailCommand),
    /// Provisioning servers: check one.
    #[command(subcommand)]
    Servers(ServersCommand),
    /// The job queue: dead jobs (a paid account not provisioned, a mail not sent), and
    /// putting one back.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Seal a secret read from standard input (e.g. a registrar's password) with this
    /// node's secret key, for the configuration file (`password_sealed`).
    Seal,
    /// Copy this installation's SQLite database into a new, empty PostgreSQL database, to
    /// move to PostgreSQL (and to several nodes): one consistent snapshot of the SQLite
    /// database, which is not changed, written in one transaction. Stop Lodge first: what it
    /// writes after the snapshot is not copied. The PostgreSQL nodes need the same secret
    /// key (the command says where it is).
    CopyTo {
        /// The PostgreSQL database to copy into (postgres://user:pass@host/db), new and
        /// empty; this build's migrations are applied to it first.
        #[arg(
            value_name = "POSTGRES_URL",
            env = "LODGE_COPY_TO",
            hide_env_values = true
        )]
        target: String,
    },
    /// Measure Lodge: load with ceilings, filling a database, crash checks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Drive concurrent load and report throughput, latency percentiles and errors per
    /// scenario, against /healthz and the database's bare durable-commit rate. Without --url
    /// it starts its own server (on --database-url, or a fresh SQLite file).
    Load {
        /// A running Lodge (needs --admin-key).
        #[arg(long)]
        url: Option<String>,
        /// A staff key of that Lodge.
        #[arg(long)]
        admin_key: Option<String>,
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per scenario (0.1 to 86400).
        #[arg(long, default_value_t = 10.0, value_parser = scenario_seconds)]
        seconds: f64,
        /// Scenarios (comma separated): healthz, storefront, plans, order_external,
        /// order_keyed (external, each with an Idempotency-Key), order_register,
        /// pay_credit. Default: all.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Also run a mix: the connections interleave request kinds by weight, e.g.
        /// storefront=8,order_external=1,order_register=1 (kinds as for --scenarios but
        /// pay_credit; a kind alone weighs 1). Reported as a total and per kind. Without
        /// --scenarios, only the mix runs.
        #[arg(long)]
        mix: Option<String>,
        /// Lodge servers to start on the same database, sharing the connections (connection
        /// i goes to node i mod N): the scale-out measurement. PostgreSQL only.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The scheduler's renewal pass on a large database: bulk-inserts --services hosting
    /// accounts (one organization per ten), --due of them due today, then times one pass
    /// (and an idle second one). Prints JSON. On --database-url (a fresh, empty database)
    /// or a fresh SQLite file.
    Renewals {
        /// Hosting accounts in the database.
        #[arg(long, default_value_t = 1_000_000)]
        services: u64,
        /// Of them, billed today (one per organization).
        #[arg(long, default_value_t = 50_000)]
        due: u64,
    },
    /// Fill a database with orders (each with invoice, lines and hosting account).
    Fill {
        /// How many orders.
        #[arg(long)]
        orders: u64,
    },
    /// Order load while the server is SIGKILLed and restarted; then check that every order
    /// answered 201 is complete and nothing is half-written. Exits non-zero on a problem.
    Crash {
        /// How many times to kill the server.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Concurrent order loops.
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// Simulate years of billing on a moved clock (orders on random cycles, payments on
    /// time, late and never, cancellations), then check that no period was billed twice,
    /// no paid period left unprovisioned, every ledger adds up and invoice numbers have no
    /// gap. Seeded: the same options give the same totals. Runs on --database-url (a
    /// database without orders) or a fresh SQLite file. Exits non-zero on a violation.
    Simulate {
        /// How many services are ordered (on random days of the first year).
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// How many years to simulate.
        #[arg(long, default_value_t = 3)]
        years: u32,
        /// The random seed.
        #[arg(long, default_value_t = lodge::simulate::DEFAULT_SEED)]
        seed: u64,
        /// Organizations ordering them (default: one per five services).
        #[arg(long)]
        organizations: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// Base of absolute links in what the worker sends (mail's payment links): the address
    /// customers reach the servers at, as `serve` has it (default http://127.0.0.1:8080).
    #[arg(long, env = "LODGE_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LODGE_LISTEN")]
    listen: Option<String>,
    /// Base of absolute links Lodge sends (default http:// + the listen address).
    #[arg(long, env = "LODGE_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// Requests per minute per credential (0: no limit; default 1000).
    #[arg(long, env = "LODGE_RATE_LIMIT_PER_MINUTE")]
    rate_limit_per_minute: Option<u32>,
    /// Requests per second per credential (0: no limit; default 100).
    #[arg(long, env = "LODGE_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// Failed logins of one e-mail before it must wait, doubling after each further one
    /// (0: not counted; default 5). Independent of the rate limit.
    #[arg(long, env = "LODGE_LOGIN_FAILURES_PER_EMAIL")]
    login_failures_per_email: Option<u32>,
    /// Failed logins from one client address, any e-mails, before it must wait (0: not
    /// counted; default 20).
    #[arg(long, env = "LODGE_LOGIN_FAILURES_PER_ADDRESS")]
    login_failures_per_address: Option<u32>,
    /// The longest wait a login lockout imposes, in seconds (default 900).
    #[arg(long, env = "LODGE_LOGIN_MAX_WAIT_SECS")]
    login_max_wait_secs: Option<u64>,
    /// Seconds a client may take from a request's first byte to the end of its headers
    /// before the connection is closed (default 10).
    #[arg(long, env = "LODGE_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a client may take to send a request's body after its headers; later, the
    /// answer is 408 and the connection is closed (default 30).
    #[arg(long, env = "LODGE_BODY_TIMEOUT_SECS")]
    body_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request (default 60).
    #[arg(long, env = "LODGE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Connections open at once; a connection over the cap is answered 503 with
    /// Retry-After and closed at once (default 10000).
    #[arg(long, env = "LODGE_MAX_CONNECTIONS")]
    max_connections: Option<u32>,
    /// A bearer token `/metrics` requires (kept only as a digest in memory).
    #[arg(long, env = "LODGE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Serve `/metrics` on this address only (e.g. 127.0.0.1:9100), not on --listen.
    #[arg(long, env = "LODGE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Secret that signs login tokens (JWT). Without it a random one is used per process, so
    /// tokens end with a restart and differ between nodes.
    #[arg(long, env = "LODGE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Bank-transfer instructions shown on the payment page (empty: not offered).
    #[arg(long, env = "LODGE_BANK_TRANSFER_INSTRUCTIONS")]
    bank_transfer_instructions: Option<String>,
    /// Seed the demo data first and print the demo credentials.
    #[arg(long)]
    demo: bool,
    /// Do not run the job worker and scheduler in this process.
    #[arg(long)]
    no_worker: bool,
    /// Require /apiv2 orders to carry tos=true (terms accepted). A switch
    /// (`--require-tos`), or `--require-tos false` to turn lodge.toml's off.
    #[arg(long, env = "LODGE_REQUIRE_TOS", num_args = 0..=1, default_missing_value = "true")]
    require_tos: Option<bool>,
    /// Origins of web clients (InterServer's SPA) allowed to call /apiv2 from a browser,
    /// with credentials, and to be sent back to after paying (`redirectUrl`), e.g.
    /// https://my.example.com. Repeat it or separate with commas. Default: none.
    #[arg(long, env = "LODGE_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Reverse proxies whose X-Forwarded-For names the client (for login throttling and
    /// per-address limits): addresses or CIDR blocks, comma-separated, or none. Default:
    /// loopback (127.0.0.0/8, ::1), a proxy on this machine.
    #[arg(long, env = "LODGE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create an API key for an organization; the secret is printed once.
    Create {
        /// Organization UUID.
        #[arg(long)]
        organization: String,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Scopes: read, write (default both). Repeat or separate with commas.
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Expiry as an RFC 3339 instant (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
        /// The member who holds the key, by email or user UUID (default: the first owner).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of the bare secret.
        #[arg(long)]
        json: bool,
    },
    /// Create a staff key for the admin API: it reads and changes everything (scopes read,
    /// write, admin), or only reads with --read-only (scopes read, admin).
    CreateStaff {
        /// Staff user's email.
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// A key that may only read (GET) the admin API and the organizations: refunds,
        /// payments, credit, account actions and every other change are refused (403).
        #[arg(long)]
        read_only: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the keys of an organization, or the staff keys (never their secrets), one
    /// JSON object a line.
    List {
        /// Organization UUID.
        #[arg(long, conflicts_with = "staff", required_unless_present = "staff")]
        organization: Option<String>,
        /// The staff keys (the admin API's) instead.
        #[arg(long)]
        staff: bool,
    },
    /// Revoke a key by its id (from `keys list`), a staff key too: refused from then on
    /// (within 2 s on other running nodes).
    Revoke {
        /// The key's UUID.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Create a user; the password comes from LODGE_USER_PASSWORD or --password (without one, the user cannot log in and acts only through API keys).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Password (at least 8 characters). Prefer LODGE_USER_PASSWORD, which stays out of
        /// the shell history.
        #[arg(long, env = "LODGE_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Make the user staff (admin API access).
        #[arg(long)]
        staff: bool,
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password (from LODGE_USER_PASSWORD or --password); its login sessions
    /// and refresh tokens end.
    SetPassword {
        #[arg(long)]
        email: String,
        /// At least 8 characters. Prefer LODGE_USER_PASSWORD, which stays out of the shell
        /// history.
        #[arg(long, env = "LODGE_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Shut a user out: every API key, token and session of it is refused from then on
    /// (within 2 s on other running nodes); its sessions end for good.
    Deactivate {
        #[arg(long)]
        email: String,
    },
    /// Let a deactivated user in again (its API keys work again; it logs in anew).
    Activate {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
enum OrgsCommand {
    /// Create an organization with its default project.
    Create {
        #[arg(long)]
        name: String,
        /// personal or professional.
        #[arg(long = "type")]
        organization_type: Option<String>,
        /// Email of an existing user to make owner.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum MembersCommand {
    /// Add a user to an organization (or change its role).
    Add {
        /// Organization UUID.
        #[arg(long)]
        organization: String,
        /// The user's email.
        #[arg(long)]
        email: String,
        /// owner, editor, viewer or guest.
        #[arg(long)]
        role: String,
    },
    /// Remove a user from an organization: its membership, its projects, and the API keys
    /// it held for the organization (revoked). The only owner is not removed.
    Remove {
        /// Organization UUID.
        #[arg(long)]
        organization: String,
        /// The user's email.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
enum BillingCommand {
    /// List what the scheduler will do from today through --days days ahead if nothing is
    /// paid meanwhile: renewal invoices to issue, suspensions, terminations; with today's
    /// overdue renewal invoices and suspended accounts. Writes nothing.
    Preview {
        /// Days to look ahead (0 to 366).
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Print one JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Run one scheduler pass now (renewals, overdue accounts, expiries) and print what it
    /// did; the worker runs the jobs it queued. Safe beside running nodes.
    Run,
}

#[derive(Subcommand, Debug)]
enum ServersCommand {
    /// Check a server: connect, log in with its credentials, check its pinned certificate;
    /// print what was found (exit code 1, with the reason, when it fails).
    Test {
        /// The server's id (see `GET /v1/admin/servers`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// List the jobs of a status, newest first (at most 500), one JSON object a line, as
    /// `GET /v1/admin/jobs` answers them.
    List {
        /// dead (default), queued, running or done.
        #[arg(long, default_value = "dead")]
        status: String,
    },
    /// Put a dead job back in the queue with fresh attempts (a failed account goes back to
    /// provisioning), or run now a job waiting out a failure's backoff (its attempts kept),
    /// as `POST /v1/admin/jobs/{id}/retry` does.
    Retry {
        /// The job's id (see `lodge jobs list`).
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
enum MailCommand {
    /// Send one test message with the configured SMTP and print the server's answer (exit
    /// code 1 when it fails).
    Test {
        /// The address to send it to.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
enum CatalogCommand {
    /// Import a catalog file (TOML or JSON): groups, plans with prices, offers, coupons, TLDs.
    /// Items are created or updated by slug, code or name.
    Import {
        /// The file to import.
        file: PathBuf,
    },
    /// Print the stored catalog as a catalog file (every item whole, inactive and hidden ones
    /// included): edit it and import it back to change the catalog.
    Export {
        /// `toml` or `json`.
        #[arg(long, default_value = "toml", value_parser = ["toml", "json"])]
        format: String,
    },
}

fn init_logging(format: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    // A LODGE_LOG that does not parse is said, not dropped in silence (found by the
    // operator audit: a typo logged at the default level without a word).
    // An empty one is unset; a bare word that is no level is a typo (`debgu` parses as a
    // target name and would hide every line: found by the re-audit).
    let given = std::env::var("LODGE_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let unusable = given.as_ref().and_then(|v| {
        let bare_typo = v.split(',').any(|d| {
            let d = d.trim();
            !d.is_empty()
                && !d.contains('=')
                && !["trace", "debug", "info", "warn", "error", "off"]
                    .contains(&d.to_lowercase().as_str())
                && !d.starts_with("lodge")
                && !d.contains("::")
        });
        match EnvFilter::try_new(v) {
            Err(e) => Some((v.clone(), e.to_string())),
            Ok(_) if bare_typo => Some((v.clone(), "a bare word that is no level".to_owned())),
            Ok(_) => None,
        }
    });
    let filter = given
        .as_deref()
        .filter(|_| unusable.is_none())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let filter = lodge::quiet_secret_loggers(filter);
    // Colours only on a terminal (and never with NO_COLOR): a log written to a file or the
    // journal had escape codes in every line (found by the operator audit).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    if let Some((value, e)) = unusable {
        tracing::warn!(LODGE_LOG = %value, error = %e, "LODGE_LOG is not a log filter (e.g. `info` or `info,lodge_services=debug`): logging at the default level");
    }
}

/// `LODGE_*` variables read outside the options: the log filter, and the test suite's
/// switches and service binaries.
const OTHER_VARIABLES: &[&str] = &[
    "LODGE_LOG",
    "LODGE_REQUIRE_SERVICES",
    "LODGE_VENV",
    "LODGE_UPDATE_SNAPSHOTS",
    "LODGE_PIN_NEW_MIGRATIONS",
    "LODGE_CHROMIUM",
    "LODGE_NGINX_BIN",
    "LODGE_PEBBLE_BIN",
    "LODGE_PHP_FPM_BIN",
    "LODGE_PG_BIN_DIR",
    "LODGE_PDNS_BIN",
    "LODGE_MARIADBD_BIN",
];

/// Every `LODGE_*` variable something reads: each option's of every command, and
/// [`OTHER_VARIABLES`].
fn known_variables() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned()),
        );
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out: Vec<String> = OTHER_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    walk(&<Cli as clap::CommandFactory>::command(), &mut out);
    out
}

/// The `LODGE_*` variables in `set` that nothing reads, each with the known name nearest to
/// it when one is close (a misspelt variable was ignored without a word: found by the
/// operator audit).
fn unknown_variables(
    set: impl IntoIterator<Item = String>,
    known: &[String],
) -> Vec<(String, Option<String>)> {
    let mut unknown: Vec<(String, Option<String>)> = set
        .into_iter()
        .filter(|v| v.starts_with("LODGE_") && !known.contains(v))
        .map(|v| {
            let near = known
                .iter()
                .map(|k| (strsim::levenshtein(&v, k), k))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, k)| k.clone());
            (v, near)
        })
        .collect();
    unknown.sort();
    unknown
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match FileConfig::load(cli.global.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("lodge: {e:#}");
            return ExitCode::from(2);
        }
    };
    let log_format = cli
        .global
        .log_format
        .as_deref()
        .or(file.log_format.as_deref());
    if let Some(other) = log_format.filter(|f| !matches!(*f, "text" | "json")) {
        eprintln!("lodge: --log-format (LODGE_LOG_FORMAT, log_format) must be text or json, not {other:?}");
        return ExitCode::from(2);
    }
    init_logging(log_format);
    let set = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    for (name, near) in unknown_variables(set, &known_variables()) {
        match near {
            Some(near) => {
                tracing::warn!(
                    "{name} is set, but Lodge reads no such variable: did you mean {near}?"
                );
            }
            None => tracing::warn!("{name} is set, but Lodge reads no such variable"),
        }
    }
    match run(cli, file).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Field errors from the services read best as lines.
            if let Some(ServiceError::Invalid(fields)) = e.downcast_ref::<ServiceError>() {
                for (field, msgs) in fields {
                    for m in msgs {
                        eprintln!("lodge: {field}: {m}");
                    }
                }
            } else {
                eprintln!("lodge: {e:#}{}", disk_hint(&format!("{e:#}")));
            }
            ExitCode::FAILURE
        }
    }
}

/// What to look at when SQLite's words name the disk (found by the fault audit: a start on
/// a full disk said only "(code: 4874) disk I/O error", which reads like a failing drive).
fn disk_hint(error: &str) -> &'static str {
    if error.contains("disk I/O error") || error.contains("database or disk is full") {
        "\nlodge: (is the database's disk full? `df -h` on its directory; free some space and start again)"
    } else {
        ""
    }
}

async fn run(cli: Cli, file: FileConfig) -> anyhow::Result<()> {
    let mut o = Overrides {
        database_url: cli.global.database_url.clone(),
        database_pool_size: cli.global.database_pool_size,
        currency: cli.global.currency.clone(),
        secret_key: cli.global.secret_key.clone(),
        invoice_expiry_days: cli.global.invoice_expiry_days,
        retention_days: cli.global.retention_days,
        node_name: cli.global.node_name.clone(),
        renewal_lead_days: cli.global.renewal_lead_days,
        suspension_grace_days: cli.global.suspension_grace_days,
        termination_grace_days: cli.global.termination_grace_days,
        nginx_binary: cli.global.nginx_binary.clone(),
        nginx_args: cli.global.nginx_args.clone(),
        nginx_sites_dir: cli.global.nginx_sites_dir.clone(),
        nginx_web_root: cli.global.nginx_web_root.clone(),
        nginx_archive_dir: cli.global.nginx_archive_dir.clone(),
        nginx_listen: cli.global.nginx_listen.clone(),
        nginx_tls_listen: cli.global.nginx_tls_listen.clone(),
        acme_directory_url: cli.global.acme_directory_url.clone(),
        acme_contact_email: cli.global.acme_contact_email.clone(),
        acme_challenge: cli.global.acme_challenge.clone(),
        acme_ca_file: cli.global.acme_ca_file.clone(),
        stripe_secret_key: cli.global.stripe_secret_key.clone(),
        stripe_publishable_key: cli.global.stripe_publishable_key.clone(),
        stripe_webhook_secrets: (!cli.global.stripe_webhook_secrets.is_empty())
            .then(|| cli.global.stripe_webhook_secrets.clone()),
        stripe_api_base: cli.global.stripe_api_base.clone(),
        webhooks_allow_private: cli.global.webhooks_allow_private,
        pdns_api_url: cli.global.pdns_api_url.clone(),
        pdns_api_key: cli.global.pdns_api_key.clone(),
        php_pool_dir: cli.global.stack.php_pool_dir.clone(),
        php_fpm_binary: cli.global.stack.php_fpm_binary.clone(),
        php_fpm_args: cli.global.stack.php_fpm_args.clone(),
        php_socket_dir: cli.global.stack.php_socket_dir.clone(),
        php_fpm_pid_file: cli.global.stack.php_fpm_pid_file.clone(),
        php_reload_command: cli.global.stack.php_reload_command.clone(),
        php_pool_user: cli.global.stack.php_pool_user.clone(),
        php_listen_group: cli.global.stack.php_listen_group.clone(),
        mariadb_url: cli.global.stack.mariadb_url.clone(),
        mariadb_host: cli.global.stack.mariadb_host.clone(),
        mariadb_port: cli.global.stack.mariadb_port,
        mariadb_user_host: cli.global.stack.mariadb_user_host.clone(),
        mariadb_dump_binary: cli.global.stack.mariadb_dump_binary.clone(),
        mail_host: cli.global.mail.mail_host.clone(),
        mail_port: cli.global.mail.mail_port,
        mail_tls: cli.global.mail.mail_tls.clone(),
        mail_username: cli.global.mail.mail_username.clone(),
        mail_password: cli.global.mail.mail_password.clone(),
        mail_from: cli.global.mail.mail_from.clone(),
        mail_installation_name: cli.global.mail.mail_installation_name.clone(),
        mail_postal_address: cli.global.mail.mail_postal_address.clone(),
        mail_base_url: cli.global.mail.mail_base_url.clone(),
        mail_templates_dir: cli.global.mail.mail_templates_dir.clone(),
        mail_timeout_secs: cli.global.mail.mail_timeout_secs,
        mail_ca_file: cli.global.mail.mail_ca_file.clone(),
        key_prefix: cli.global.key_prefix.clone(),
        ..Default::default()
    };
    if let Command::Worker(w) = &cli.command {
        o.public_base_url = w.public_base_url.clone();
    }
    if let Command::Serve(s) = &cli.command {
        o.listen = s.listen.clone();
        o.public_base_url = s.public_base_url.clone();
        o.rate_limit_per_minute = s.rate_limit_per_minute;
        o.rate_limit_burst = s.rate_limit_burst;
        o.login_failures_per_email = s.login_failures_per_email;
        o.login_failures_per_address = s.login_failures_per_address;
        o.login_max_wait_secs = s.login_max_wait_secs;
        o.header_timeout_secs = s.header_timeout_secs;
        o.body_timeout_secs = s.body_timeout_secs;
        o.idle_timeout_secs = s.idle_timeout_secs;
        o.max_connections = s.max_connections;
        o.metrics_token = s.metrics_token.clone();
        o.metrics_listen = s.metrics_listen.clone();
        o.jwt_secret = s.jwt_secret.clone();
        o.bank_transfer_instructions = s.bank_transfer_instructions.clone();
        o.require_tos = s.require_tos;
        o.cors_origins = (!s.cors_origins.is_empty()).then(|| s.cors_origins.clone());
        o.trusted_proxies = (!s.trusted_proxies.is_empty()).then(|| s.trusted_proxies.clone());
    }
    let mut cfg = Config::resolve(o, file);
    cfg.validate()?;
    // One server a SQLite database: a second `serve` on it (a second terminal, a service
    // started twice) is refused before it touches anything, the demo nginx of the first
    // included (found by the operator audit: it stopped the first one's nginx and its
    // worker ran the first one's jobs against its own settings). Held until exit.
    let _serve_lock = match (&cli.command, lodge::sqlite_file(&cfg.database_url)) {
        (Command::Serve(_), Some(db)) => Some(lodge::serve_lock(&db)?),
        // Workers share theirs: `copy-to` takes it alone (found by the copy audit: a copy
        // ran beside a worker, whose later writes the move would have lost).
        (Command::Worker(_), Some(db)) if db.exists() => Some(lodge::worker_lock(&db)?),
        _ => None,
    };
    if matches!(&cli.command, Command::Serve(_)) {
        cfg.check_jwt_secret()?;
        cfg.conn.max_connections = fit_to_open_files(cfg.conn.max_connections);
    }
    // `serve --demo` runs its own nginx where nginx is installed (unless nginx is
    // configured with arguments of its own), and the nginx driver is pointed at it.
    let mut demo_nginx = DemoNginxState::Unused;
    let mut _demo_lock = None;
    if matches!(&cli.command, Command::Serve(s) if s.demo) && cfg.nginx.args.is_empty() {
        _demo_lock = Some(lodge::demo_lock(Path::new("lodge-data"))?);
        // A node whose address is taken (another node running in this directory) stops
        // here, before it stops the demo nginx that other node is using (found by the
        // multi-node re-audit: its sites went down).
        if let Err(e) = std::net::TcpListener::bind(&cfg.listen) {
            anyhow::bail!("binding {}: {e}", cfg.listen);
        }
        if lodge::demo_nginx::installed(&cfg.nginx) {
            lodge::demo_nginx::requested_port(&cfg.nginx.listen)?;
        }
        demo_nginx =
            match lodge::demo_nginx::DemoNginx::start(Path::new("lodge-data"), &cfg.nginx).await {
                Ok(Some((n, nginx))) => {
                    cfg.nginx = nginx;
                    DemoNginxState::Running(Box::new(n))
                }
                Ok(None) => DemoNginxState::NotInstalled,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the demo's own nginx did not start");
                    DemoNginxState::Failed(format!("{e:#}"))
                }
            };
    }
    let database_given = cli.global.database_url.is_some();
    let command = match cli.command {
        // The benchmark starts its own servers; it does not open the configured database.
        Command::Bench(b) => return bench(&cfg, database_given, b).await,
        Command::CopyTo { target } => return copy_to(&cfg, &target).await,
        other => other,
    };
    // Only these make an installation: any other command run where there is none (another
    // directory, a mistyped URL) says so instead of creating an empty database and a key
    // file there and answering from them (found by the operator audit: `billing preview`
    // in the wrong directory reported nothing to do).
    if !matches!(
        command,
        Command::Serve(_) | Command::Migrate | Command::Demo { .. }
    ) {
        if let Some(path) = lodge::sqlite_file(&cfg.database_url) {
            if !path.exists() {
                anyhow::bail!(
                    "no database at {}: run `lodge migrate` (or `lodge serve`) there first, or \
                     point --database-url (LODGE_DATABASE_URL, database_url) at the \
                     installation's",
                    path.display()
                );
            }
        } else if !matches!(command, Command::Worker(_)) {
            // (A worker on PostgreSQL is a node, perhaps started beside the first `serve`: it
            // migrates as `serve` does.)
            // On PostgreSQL the database exists either way: an empty one (a mistyped
            // database name) is not made an installation, with a key file of its own in
            // the working directory (found by the README audit).
            let url = lodge_store::redact_url(&cfg.database_url);
            let store = lodge_store::Store::connect(&cfg.database_url)
                .await
                .with_context(|| format!("opening {url}"))?;
            let installed = store.is_installed().await;
            store.close().await;
            if !installed.with_context(|| format!("reading {url}"))? {
                anyhow::bail!(
                    "no Lodge installation in {url}: run `lodge migrate` (or `lodge serve`) \
                     with it first, or point --database-url (LODGE_DATABASE_URL, database_url) \
                     at the installation's"
                );
            }
        }
    }
    // On PostgreSQL `migrate` applies the migrations and nothing else: the installation's key
    // is the nodes' (a command given none runs with one of its own, which one installed
    // already refuses; found by the multi-node audit).
    if matches!(command, Command::Migrate) && lodge::sqlite_file(&cfg.database_url).is_none() {
        let url = lodge_store::redact_url(&cfg.database_url);
        let store = lodge_store::Store::open(&cfg.database_url)
            .await
            .with_context(|| format!("opening {url}"))?;
        store.close().await;
        eprintln!("lodge: migrations applied to {url}");
        return Ok(());
    }
    let node = matches!(
        command,
        Command::Serve(_) | Command::Worker(_) | Command::Demo { .. }
    );
    let opened = if node {
        lodge::open_node(&cfg, lodge::system_clock()).await
    } else if matches!(command, Command::Seal) {
        lodge::open_sealing(&cfg, lodge::system_clock()).await
    } else if matches!(
        command,
        Command::Catalog(CatalogCommand::Import { .. } | CatalogCommand::Export { .. })
    ) {
        lodge::open_importing(&cfg, lodge::system_clock()).await
    } else {
        lodge::open(&cfg, lodge::system_clock()).await
    };
    let lodge = match opened {
        Ok(l) => l,
        Err(e) => {
            // Refused (e.g. another installation's key): the demo nginx started for it is
            // stopped, not left running (found by the multi-node re-audit).
            if let DemoNginxState::Running(n) = demo_nginx {
                n.stop().await;
            }
            return Err(e);
        }
    };
    if matches!(command, Command::Serve(_) | Command::Worker(_)) {
        if let Err(e) = lodge::start_node(&lodge).await {
            if let DemoNginxState::Running(n) = demo_nginx {
                n.stop().await;
            }
            return Err(e);
        }
    }
    match command {
        Command::Serve(args) => {
            let registrar = lodge.registrar.clone();
            let r = serve(&cfg, lodge, args.demo, !args.no_worker, &demo_nginx).await;
            // The registries' sessions end with a `<logout>`, not a dropped connection.
            if let Some(registrar) = registrar {
                registrar.close().await;
            }
            if let DemoNginxState::Running(n) = demo_nginx {
                n.stop().await;
            }
            r
        }
        Command::Worker(_) => {
            // Its mail links to the public base URL: a worker beside `serve --no-worker`
            // that was not told it linked to its own default (found by the operator audit).
            if let Some(m) = lodge.settings.mail.as_ref() {
                if base_is_local(&m.base_url) {
                    tracing::warn!(
                        base_url = %m.base_url,
                        "mail sent by this worker links to {}: set --public-base-url (LODGE_PUBLIC_BASE_URL, public_base_url) to the address customers reach",
                        m.base_url
                    );
                }
            }
            spawn_start_checks(lodge.clone());
            let (tx, rx) = tokio::sync::watch::channel(false);
            let _aligning = lodge::keep_clock_aligned(&lodge, rx.clone());
            let _trimming = lodge::keep_pool_trimmed(&lodge, rx.clone());
            let worker = spawn_worker(&lodge, rx);
            shutdown_signal().await;
            let _ = tx.send(true);
            wait_for_worker(worker).await;
            if let Some(registrar) = &lodge.registrar {
                registrar.close().await;
            }
            Ok(())
        }
        Command::Migrate => {
            eprintln!(
                "lodge: migrations applied to {}",
                lodge_store::redact_url(&cfg.database_url)
            );
            Ok(())
        }
        Command::Demo { json, force } => {
            if !force {
                lodge.demo_allowed().await?;
            }
            let info = lodge.seed_demo().await?;
            if json {
                out!("{}", serde_json::to_string(&info)?);
            } else {
                out!("{}", demo_text(&info, None).trim_end());
            }
            Ok(())
        }
        Command::Keys(k) => keys(&lodge, k).await,
        Command::Jobs(cmd) => jobs_command(&lodge, cmd).await,
        Command::Seal => {
            let mut secret = String::new();
            std::io::stdin()
                .read_line(&mut secret)
                .context("reading the secret from standard input")?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                anyhow::bail!("nothing to seal: give the secret on standard input");
            }
            // One line is sealed: more than one is refused, not cut silently (found by the
            // operator audit).
            let mut rest = String::new();
            std::io::stdin()
                .read_line(&mut rest)
                .context("reading the secret from standard input")?;
            if !rest.trim().is_empty() {
                anyhow::bail!(
                    "the secret on standard input has more than one line: give one line (a \
                     secret of several lines cannot be sealed)"
                );
            }
            out!("{}", lodge.sealer.seal(secret)?);
            Ok(())
        }
        Command::Mail(MailCommand::Test { to }) => {
            if lodge.settings.mail.is_none() {
                anyhow::bail!(
                    "mail is off: no SMTP host configured (--mail-host or LODGE_MAIL_HOST)"
                );
            }
            let sent = lodge
                .send_test_mail(&to)
                .await
                .with_context(|| format!("sending a test message to {to}"))?;
            out!("sent to {to}: {}", sent.response);
            Ok(())
        }
        Command::Users(UsersCommand::Create {
            email,
            name,
            password,
            staff,
            json,
        }) => {
            let u = lodge
                .create_user(NewUser {
                    email: &email,
                    name: &name,
                    password: password.as_deref(),
                    is_staff: staff,
                })
                .await?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({"id": u.id, "email": u.email, "is_staff": u.is_staff()})
                );
            } else {
                out!("{}", u.id);
            }
            if u.password_hash.is_none() {
                eprintln!(
                    "lodge: {} has no password: it acts through API keys only until `lodge users set-password --email {}`",
                    u.email, u.email
                );
            }
            Ok(())
        }
        Command::Users(UsersCommand::SetPassword { email, password }) => {
            // Said here rather than by clap, which names only --password (found by the
            // operator audit).
            let password = password.context(
                "no password given: set LODGE_USER_PASSWORD (it stays out of the shell \
                 history), or pass --password",
            )?;
            let user = user_by_email(&lodge, &email).await?;
            lodge.set_user_password(user, &password).await?;
            eprintln!("lodge: the password of {email} is set; its sessions ended");
            Ok(())
        }
        Command::Users(UsersCommand::Deactivate { email }) => {
            let user = user_by_email(&lodge, &email).await?;
            lodge.set_user_active(user, false).await?;
            eprintln!("lodge: {email} is deactivated: its keys, tokens and sessions are refused");
            Ok(())
        }
        Command::Users(UsersCommand::Activate { email }) => {
            let user = user_by_email(&lodge, &email).await?;
            lodge.set_user_active(user, true).await?;
            eprintln!("lodge: {email} is active again");
            Ok(())
        }
        Command::Orgs(OrgsCommand::Create {
            name,
            organization_type,
            owner,
            json,
        }) => {
            let owner = match owner {
                Some(email) => Some(user_by_email(&lodge, &email).await?),
                None => None,
            };
            let org = lodge
                .create_organization(NewOrganization {
                    name: &name,
                    organization_type: organization_type.as_deref(),
                    company_name: None,
                    country: None,
                    owner,
                })
                .await?;
            let project =
                lodge_store::orgs::default_project(&mut lodge.store.read_conn().await?, org.id)
                    .await?
                    .context("the new organization has no default project")?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({"organization_id": org.id, "project_id": project.id, "name": org.name})
                );
            } else {
                out!("{}", org.id);
            }
            Ok(())
        }
        Command::Members(MembersCommand::Add {
            organization,
            email,
            role,
        }) => {
            let org: OrganizationId = organization.parse().context("--organization")?;
            let user = user_by_email(&lodge, &email).await?;
            lodge.add_member(org, user, &role).await?;
            eprintln!("lodge: {email} is now {role} of {org}");
            Ok(())
        }
        Command::Members(MembersCommand::Remove {
            organization,
            email,
        }) => {
            let org: OrganizationId = organization.parse().context("--organization")?;
            let user = user_by_email(&lodge, &email).await?;
            let revoked = match lodge.remove_member(org, user).await {
                Err(lodge_services::ServiceError::NotFound) => {
                    anyhow::bail!("{email} is not a member of the organization {org}")
                }
                other => other?,
            };
            eprintln!(
                "lodge: {email} is no longer a member of {org} ({revoked} API key(s) revoked)"
            );
            Ok(())
        }
        Command::Bench(_) | Command::CopyTo { .. } => Ok(()),
        Command::Billing(BillingCommand::Preview { days, json }) => {
            let p = lodge.billing_preview(days).await?;
            if json {
                out!("{}", serde_json::to_string(&p)?);
                return Ok(());
            }
            out!("From {} to {}:", p.from, p.to);
            out!("  renewal invoices to issue: {}", p.renewals.len());
            for r in &p.renewals {
                out!(
                    "    {} organization {} due {}: {} account(s), {} domain(s), {}",
                    r.issue_date,
                    r.organization_id,
                    r.due_date,
                    r.accounts.len(),
                    r.domains.len(),
                    lodge_core::Money::new(r.total_minor, lodge.settings.currency)
                );
            }
            out!("  suspensions: {}", p.suspensions.len());
            for x in &p.suspensions {
                out!("    {} account {} ({})", x.date, x.hosting_id, x.reason);
            }
            out!("  terminations: {}", p.terminations.len());
            for x in &p.terminations {
                out!("    {} account {} ({})", x.date, x.hosting_id, x.reason);
            }
            out!(
                "Today: {} overdue renewal invoice(s), {} suspended account(s)",
                p.overdue_invoices.len(),
                p.suspended.len()
            );
            Ok(())
        }
        Command::Billing(BillingCommand::Run) => {
            let pass = lodge.scheduler_pass().await?;
            // What failed is logged above; the exit status says so too (it was 0 whatever
            // failed: found by the operator audit).
            if pass.failed_steps > 0 || pass.renewals.failed > 0 {
                anyhow::bail!(
                    "the pass did not finish everything: {} step(s) and {} renewal(s) failed \
                     (see the log); the next pass tries them again. What it did: {}",
                    pass.failed_steps,
                    pass.renewals.failed,
                    serde_json::to_string(&pass)?
                );
            }
            out!("{}", serde_json::to_string(&pass)?);
            Ok(())
        }
        Command::Servers(ServersCommand::Test { id }) => {
            let id: lodge_core::ServerId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("{id:?} is not a server id"))?;
            let check = lodge.test_server(id).await?;
            if check.ok {
                out!("ok: {}", check.message);
                Ok(())
            } else {
                anyhow::bail!("server check failed: {}", check.message)
            }
        }
        Command::Catalog(CatalogCommand::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let summary = lodge.import_catalog_text(&text).await?;
            out!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Catalog(CatalogCommand::Export { format }) => {
            let file = lodge.export_catalog().await?;
            if format == "json" {
                out!("{}", serde_json::to_string_pretty(&file)?);
            } else {
                let text = toml::to_string(&file)?;
                if let Err(e) =
                    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
                {
                    lodge::output_failed(&e);
                }
            }
            Ok(())
        }
    }
}

/// `lodge copy-to`: the configured SQLite database copied into an empty PostgreSQL one
/// ([`lodge_store::copy::sqlite_to_postgres`]), and what the nodes there need besides.
async fn copy_to(cfg: &Config, target: &str) -> anyhow::Result<()> {
    let Some(source) = lodge::sqlite_file(&cfg.database_url) else {
        anyhow::bail!(
            "copy-to copies a SQLite installation into PostgreSQL: the database URL \
             (--database-url, LODGE_DATABASE_URL) names {}, not a SQLite file",
            lodge_store::redact_url(&cfg.database_url)
        );
    };
    let shown = lodge_store::redact_url(target);
    if !source.is_file() {
        anyhow::bail!(
            "no SQLite database at {}: point --database-url (LODGE_DATABASE_URL) at the \
             installation's",
            source.display()
        );
    }
    // No server or worker writes to it meanwhile (what it wrote after the snapshot would be
    // lost in the move), nor starts until the copy is done.
    let _locks = lodge::copy_locks(&source).context(
        "copy-to needs Lodge stopped on the SQLite database: what it wrote after the copy's \
         snapshot would not be copied",
    )?;
    eprintln!("lodge: copying {} into {shown}", source.display());
    let report = lodge_store::copy::sqlite_to_postgres(&source, target, |table, rows| {
        if rows > 0 {
            eprintln!(
                "lodge:   {table}: {rows} row{}",
                if rows == 1 { "" } else { "s" }
            );
        }
    })
    .await
    .context("the copy stopped, and wrote no row into the target")?;
    eprintln!(
        "lodge: copied {} rows of {} tables into {shown}",
        report.rows(),
        report.tables.len()
    );
    let key = match &cfg.secret_key {
        Some(_) => "the same LODGE_SECRET_KEY as this installation".to_owned(),
        None => {
            let file = lodge::key_file_path(&cfg.database_url);
            if file.exists() {
                format!(
                    "this installation's secret key: {} (its contents as LODGE_SECRET_KEY, or \
                     the file in their working directory)",
                    file.display()
                )
            } else {
                format!(
                    "this installation's secret key, the one its nodes were started with (there \
                     is no key file at {}: LODGE_SECRET_KEY, or a key file kept elsewhere)",
                    file.display()
                )
            }
        }
    };
    eprintln!(
        "lodge: start the nodes with --database-url {shown} and {key}; a node with another \
         key refuses to start, as the secrets in the database are sealed with this one. \
         Files beside the SQLite database (lodge-data: nginx sites, web roots, certificates) \
         are not in it: keep them on the machine that serves those sites."
    );
    Ok(())
}

async fn bench(cfg: &Config, database_given: bool, b: BenchCommand) -> anyhow::Result<()> {
    let database = database_given.then(|| cfg.database_url.clone());
    match b {
        BenchCommand::Load {
            url,
            admin_key,
            connections,
            seconds,
            scenarios,
            mix,
            nodes,
            json,
        } => {
            let report = lodge::bench::run(lodge::bench::BenchOptions {
                url,
                admin_key,
                database_url: database,
                connections: connections.max(1),
                duration: std::time::Duration::from_secs_f64(seconds),
                scenarios,
                mix,
                nodes,
            })
            .await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                lodge::bench::print_table(&report);
            }
            Ok(())
        }
        BenchCommand::Renewals { services, due } => {
            let report = lodge::bench::renewals(database, services, due).await?;
            out!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Fill { orders } => lodge::bench::fill(&cfg.database_url, orders).await,
        BenchCommand::Crash { kills, connections } => {
            let report = lodge::bench::crash(database, kills, connections.max(1)).await?;
            out!("{}", serde_json::to_string_pretty(&report)?);
            if report.problems.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} problem(s) after the crashes", report.problems.len())
            }
        }
        BenchCommand::Simulate {
            services,
            years,
            seed,
            organizations,
            json,
        } => {
            let report = lodge::simulate::simulate(lodge::simulate::SimOptions {
                database_url: database,
                services,
                years,
                seed,
                organizations,
            })
            .await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                lodge::simulate::print_report(&report);
            }
            match report.violation_count() {
                0 => Ok(()),
                n => anyhow::bail!("the simulation found {n} violation(s)"),
            }
        }
    }
}

async fn user_by_email(lodge: &Lodge, email: &str) -> anyhow::Result<UserId> {
    lodge_store::users::by_email(lodge.store.reader(), &email.trim().to_lowercase())
        .await?
        .map(|u| u.id)
        .with_context(|| format!("no user with email {email}"))
}

async fn keys(lodge: &Lodge, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            organization,
            name,
            scopes,
            expires,
            user,
            json,
        } => {
            let org: OrganizationId = organization.parse().context("--organization")?;
            // By email, as the other commands name users, or by UUID.
            let user: Option<UserId> = match user {
                None => None,
                Some(u) if u.contains('@') => {
                    Some(user_by_email(lodge, &u).await.context("--user")?)
                }
                Some(u) => Some(u.parse().context("--user must be a user's email or UUID")?),
            };
            let expires = expires
                .map(|e| lodge_core::dates::parse_instant(&e))
                .transpose()
                .map_err(|why| anyhow::anyhow!("--expires: {why}"))?;
            let scopes = (!scopes.is_empty()).then(|| scopes.join(" "));
            let issued = lodge
                .create_org_key(org, user, &name, scopes.as_deref(), expires)
                .await?;
            print_key(&issued, json)
        }
        KeysCommand::CreateStaff {
            email,
            name,
            read_only,
            json,
        } => {
            let user =
                lodge_store::users::by_email(lodge.store.reader(), &email.trim().to_lowercase())
                    .await?
                    .filter(|u| u.is_staff())
                    .with_context(|| format!("no staff user with email {email}"))?;
            let issued = lodge
                .create_key(lodge_services::auth::NewKey {
                    name: &name,
                    user: user.id,
                    organization: None,
                    scopes: Some(if read_only {
                        "read admin"
                    } else {
                        "read write admin"
                    }),
                    expires_at: None,
                })
                .await?;
            print_key(&issued, json)
        }
        KeysCommand::List {
            organization,
            staff: _,
        } => {
            let org: Option<OrganizationId> = organization
                .map(|o| o.parse())
                .transpose()
                .context("--organization")?;
            // An organization that does not exist is said so, not listed as keyless (found
            // by the operator audit).
            if let Some(o) = org {
                if lodge_store::orgs::by_id(lodge.store.reader(), o)
                    .await?
                    .is_none()
                {
                    anyhow::bail!("no organization {o}");
                }
            }
            for k in lodge.keys_of(org).await? {
                out!(
                    "{}",
                    serde_json::json!({
                        "id": k.id,
                        "prefix": k.display_prefix,
                        "name": k.name,
                        "user_id": k.user_id,
                        "organization_id": k.organization_id,
                        "scopes": k.scopes.split_whitespace().collect::<Vec<_>>(),
                        "expires_at": k.expires_at.map(micros_rfc3339),
                        "last_used_at": k.last_used_at.map(micros_rfc3339),
                        "revoked_at": k.revoked_at.map(micros_rfc3339),
                    })
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            let id: lodge_core::ApiKeyId = id.parse().context("not a key id (a UUID)")?;
            let k = match lodge.revoke_any_key(id).await {
                Err(lodge_services::ServiceError::NotFound) => anyhow::bail!("no API key {id}"),
                other => other?,
            };
            eprintln!("lodge: key {} ({}) is revoked", k.id, k.name);
            Ok(())
        }
    }
}

/// `--seconds` of `bench load`: a number of seconds from 0.1 to a day (`inf` or `1e30`
/// panicked as a `Duration`: found by the code review).
fn scenario_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if (0.1..=86_400.0).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: seconds from 0.1 to 86400")),
    }
}

/// `lodge jobs list|retry`: the queue's jobs, one JSON object a line, as the staff API shows
/// them; a dead job back in the queue.
async fn jobs_command(lodge: &Lodge, cmd: JobsCommand) -> anyhow::Result<()> {
    // The staff API's own view of a job, so both print the same fields the same way.
    let line = |j| serde_json::to_string(&lodge_http::staff_job(j));
    match cmd {
        JobsCommand::List { status } => {
            let status = lodge_core::JobStatus::parse(&status).with_context(|| {
                format!("--status {status:?}: one of queued, running, done or dead")
            })?;
            for j in lodge.jobs_with_status(status, None, 500).await? {
                out!("{}", line(j)?);
            }
            Ok(())
        }
        JobsCommand::Retry { id } => {
            let j = lodge
                .retry_job(id, "staff:cli")
                .await
                .map_err(|e| match e {
                    lodge_services::ServiceError::NotFound => anyhow::anyhow!("no job {id}"),
                    other => anyhow::anyhow!("{other}"),
                })?;
            out!("{}", line(j)?);
            Ok(())
        }
    }
}

fn micros_rfc3339(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map_or_else(|_| us.to_string(), |t| t.to_string())
}

fn print_key(issued: &lodge_services::auth::IssuedKey, json: bool) -> anyhow::Result<()> {
    if json {
        out!(
            "{}",
            serde_json::json!({
                "id": issued.row.id,
                "name": issued.row.name,
                "organization_id": issued.row.organization_id,
                "user_id": issued.row.user_id,
                "scopes": issued.row.scopes.split_whitespace().collect::<Vec<_>>(),
                "key": issued.secret,
            })
        );
    } else {
        out!("{}", issued.secret);
    }
    Ok(())
}

/// The demo's credentials as printed (by `lodge demo`, and by `serve --demo` with where to
/// try them).
fn demo_text(info: &lodge_services::demo::DemoInfo, base: Option<&str>) -> String {
    let mut t = format!(
        "Lodge demo data is ready.\n  organization_id  {}\n  project_id       {}\n  \
         api_key          {}\n  admin_api_key    {}\n  owner login      {} / {}\n  \
         staff login      {} / {}\n",
        info.organization_id,
        info.project_id,
        info.api_key,
        info.admin_api_key,
        info.owner_email,
        info.owner_password,
        info.staff_email,
        info.staff_password
    );
    if let Some(base) = base {
        t.push_str(&format!(
            "\nTry:\n  curl -H 'Authorization: Bearer {}' {base}/v1/hosting/plans\n  open {base}/docs\n",
            info.api_key
        ));
    }
    t
}

/// What a running server prints: a reader gone away (`serve --demo | head`) is no reason
/// to stop serving (nor to skip stopping its nginx and worker cleanly, as [`out!`]'s exit
/// would: found by review), so a failed write is only logged.
fn say(text: &str) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        tracing::warn!(error = %e, "writing to standard output failed");
    }
}

/// Starts the job worker and scheduler of this node.
fn spawn_worker(
    lodge: &Lodge,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // The node's name (so that a job's `locked_by` says which node holds it: found by the
    // PostgreSQL audit), the process and a random part: two nodes of equal names and
    // process ids (cloned VMs, containers) must not share an id, which guards each job's
    // lease (found by the multi-node audit).
    let id = format!(
        "{}-{}-{:06x}",
        lodge.settings.node_name,
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    );
    tracing::info!(worker = %id, "job worker started");
    use lodge_services::provisioning::{Lane, Worker};
    // Three lanes: webhook deliveries and mail (other people's servers, slow or down at
    // times), each apart, and everything else, which this one's scheduler passes feed.
    let [jobs, hooks, mail] = [Lane::Rest, Lane::Webhooks, Lane::Mail]
        .map(|lane| Worker::new(lodge.clone(), id.clone()).on_lane(lane));
    let (poll, every) = (
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(30),
    );
    let (hooks_shutdown, mail_shutdown) = (shutdown.clone(), shutdown.clone());
    let node = lodge.clone();
    tokio::spawn(async move {
        // What a worker process of this node's that is gone held (SQLite only).
        if let Err(e) = node.end_claims_of_dead_workers().await {
            tracing::warn!(error = %e, "ending the claims of dead worker processes failed");
        }
        tokio::join!(
            jobs.run(shutdown, poll, every),
            hooks.run(hooks_shutdown, poll, every),
            mail.run(mail_shutdown, poll, every)
        );
    })
}

/// What became of the demo's own nginx.
enum DemoNginxState {
    /// Not a demo, or nginx is configured by hand.
    Unused,
    Running(Box<lodge::demo_nginx::DemoNginx>),
    NotInstalled,
    Failed(String),
}

impl DemoNginxState {
    /// The demo's one line about its nginx.
    fn line(&self) -> Option<String> {
        match self {
            DemoNginxState::Unused => None,
            DemoNginxState::Running(n) => Some(format!(
                "  nginx            http://127.0.0.1:{port}/ (the demo's own nginx, {conf}): paid orders' sites answer there by Host, e.g. curl -H 'Host: <domain>' http://127.0.0.1:{port}/",
                port = n.port(),
                conf = n.conf_path().display()
            )),
            DemoNginxState::NotInstalled => Some(
                "  nginx            not installed: paid orders wait in provisioning until nginx is installed (or a panel server is added)".into(),
            ),
            DemoNginxState::Failed(e) => Some(format!(
                "  nginx            the demo's own nginx did not start, paid orders wait in provisioning: {}",
                e.lines().next().unwrap_or_default()
            )),
        }
    }
}

async fn serve(
    cfg: &Config,
    lodge: Lodge,
    demo: bool,
    worker: bool,
    demo_nginx: &DemoNginxState,
) -> anyhow::Result<()> {
    if cfg.jwt_secret.is_none() {
        tracing::warn!("no LODGE_JWT_SECRET configured: login tokens will not survive a restart");
    }
    // Links in mail and answers (payment pages) start with the public base URL; its default,
    // the listen address, is no address a customer can reach when that is 0.0.0.0 or ::
    // (found by the operator audit: mails linked to http://0.0.0.0:8080).
    if let Some(host) = unreachable_base_host(&cfg.public_base_url) {
        tracing::warn!(
            public_base_url = %cfg.public_base_url,
            "the public base URL's host {host} is no address customers can reach: payment links in mail and answers will not work; set --public-base-url (LODGE_PUBLIC_BASE_URL, public_base_url)"
        );
    }
    // `--demo` on an installation the demo was never seeded into: refused before anything.
    if demo {
        lodge.demo_allowed().await?;
    }
    // The port first: a node that cannot listen (taken, not allowed) stops before it seeds
    // anything or its worker claims a job it would leave held for a lease (found by the
    // multi-node audit).
    let mut server = lodge::Server::start(cfg, lodge.clone()).await?;
    let demo_info = if demo {
        Some(lodge.seed_demo().await?)
    } else {
        None
    };
    let (stop_worker, worker_rx) = tokio::sync::watch::channel(false);
    // Its time the database server's, every node's alike (on PostgreSQL).
    let _aligning = lodge::keep_clock_aligned(&lodge, worker_rx.clone());
    let _trimming = lodge::keep_pool_trimmed(&lodge, worker_rx.clone());
    let worker = worker.then(|| spawn_worker(&lodge, worker_rx));
    let base = server.state.public_base_url.to_string();
    if let Some(info) = &demo_info {
        say(&demo_text(info, Some(&base)));
        if let Some(line) = demo_nginx.line() {
            say(&format!("{line}\n"));
        }
    }
    tracing::info!(addr = %server.addr, database = %lodge_store::redact_url(&cfg.database_url), "lodge is serving");
    spawn_start_checks(server.state.lodge.clone());
    let result = tokio::select! {
        r = server.wait() => r,
        () = shutdown_signal() => {
            tracing::info!("shutting down: finishing in-flight requests");
            // The worker claims no new round while the requests drain (found by the
            // re-audit: it did, and left them to their leases at exit).
            let _ = stop_worker.send(true);
            server.stop().await
        }
    };
    let _ = stop_worker.send(true);
    if let Some(w) = worker {
        wait_for_worker(w).await;
    }
    result
}

/// The services a node drives, checked once at its start (in the background: one that does
/// not answer must not hold up the start): a wrong key or password shows now, not at an
/// order. Both `serve` and `worker` (the worker made none: found by the operator audit).
fn spawn_start_checks(lodge: Lodge) {
    tokio::spawn(async move {
        match lodge.unbound_local_servers().await {
            Ok(names) if !names.is_empty() => tracing::warn!(
                servers = %names.join(", "),
                node = %lodge.settings.node_name,
                "nginx servers that name no node: with more than one node, set each one's node (PUT /v1/admin/servers/{{id}}) to the node whose machine serves its sites"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "listing the servers failed"),
        }
        for (service, outcome) in lodge.check_services().await {
            match outcome {
                Ok(what) => tracing::info!(service, "{what}"),
                Err(why) => {
                    tracing::warn!(service, error = %why, "a configured service is not usable: its jobs will fail and retry until it is")
                }
            }
        }
    });
}

/// Descriptors kept for everything but client connections: the database's, the log's, the
/// worker's outgoing connections, files.
const OTHER_FILES: u64 = 256;

/// Raises the open-files limit to its hard limit, and keeps the connection cap under it, so
/// that many connections get the cap's 503 instead of running the process out of
/// descriptors (found by the resilience audit: at the common soft limit of 1,024, about
/// 1,000 slow connections made `/healthz` time out, the cap being 10,000).
fn fit_to_open_files(max_connections: u32) -> u32 {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "the open-files limit could not be read or raised");
            return max_connections;
        }
    };
    // Under a very low limit, half of it: the floor of 64 it had let connections take every
    // descriptor below a limit of about 100, and clients hung instead of getting the 503
    // (found by the fault audit, at `ulimit -n 80`).
    let room = match limit.saturating_sub(OTHER_FILES) {
        room if room >= 64 => room,
        _ => (limit / 2).max(1),
    };
    if u64::from(max_connections) > room {
        let capped = u32::try_from(room).unwrap_or(u32::MAX);
        tracing::warn!(
            max_connections,
            open_files_limit = limit,
            capped,
            "the connection cap is above what the open-files limit allows: capped (raise the limit, e.g. LimitNOFILE= in the systemd unit)"
        );
        return capped;
    }
    max_connections
}

/// How long a stopping node waits for the job it runs to end (under systemd's default
/// 90 s stop timeout, with room for the HTTP drain before it).
const WORKER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for the worker to end its round, at most [`WORKER_STOP_WAIT`]: a job still running
/// then (a mail or webhook receiver that never answers) is left to its lease, and runs again
/// on another node or at the next start, as after a crash (found by the resilience audit: a
/// silent SMTP server held a stop for 154 s).
async fn wait_for_worker(worker: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(WORKER_STOP_WAIT, worker)
        .await
        .is_err()
    {
        tracing::warn!(
            waited_secs = WORKER_STOP_WAIT.as_secs(),
            "the job worker did not finish its round: stopping without it (its jobs run again once their lease ends)"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The host of a public base URL that no customer can reach (an unspecified address).
/// Whether a base URL's host is this machine (a loopback or unspecified address, or
/// `localhost`): no link a customer can follow.
fn base_is_local(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

fn unreachable_base_host(url: &str) -> Option<String> {
    let host = reqwest::Url::parse(url).ok()?.host_str()?.to_owned();
    let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    ip.is_unspecified().then_some(host)
}

#[cfg(test)]
mod tests {
    use super::unreachable_base_host;

    #[test]
    fn a_full_disk_is_named() {
        assert!(
            super::disk_hint("opening sqlite://x.db: database: (code: 4874) disk I/O error")
                .contains("df -h")
        );
        assert!(super::disk_hint("database: database or disk is full").contains("disk full"));
        assert_eq!(
            super::disk_hint("opening postgres://…: connection refused"),
            ""
        );
    }

    #[test]
    fn a_local_base_url_is_told() {
        assert!(super::base_is_local("http://127.0.0.1:8080"));
        assert!(super::base_is_local("http://localhost:8080"));
        assert!(super::base_is_local("http://[::1]:8080"));
        assert!(!super::base_is_local("https://billing.example.com"));
    }

    #[test]
    fn a_base_url_on_an_unspecified_address_is_told() {
        assert_eq!(
            unreachable_base_host("http://0.0.0.0:8080").as_deref(),
            Some("0.0.0.0")
        );
        assert!(unreachable_base_host("http://[::]:8080").is_some());
        assert_eq!(unreachable_base_host("http://127.0.0.1:8080"), None);
        assert_eq!(unreachable_base_host("https://billing.example.com"), None);
    }

    #[test]
    fn a_misspelt_variable_is_told_with_the_name_it_is_nearest() {
        let known = super::known_variables();
        for v in [
            "LODGE_DATABASE_URL",
            "LODGE_SECRET_KEY",
            "LODGE_KEY_PREFIX",
            "LODGE_USER_PASSWORD",
            "LODGE_LOG",
            "LODGE_REQUIRE_SERVICES",
        ] {
            assert!(known.iter().any(|k| k == v), "{v} is read");
        }
        let set = [
            "PATH",
            "LODGE_DATABASE_URL",
            "LODGE_DATABSE_URL",
            "LODGE_SECRETKEY",
            "LODGE_SOMETHING_ELSE_ENTIRELY",
        ]
        .map(String::from);
        assert_eq!(
            super::unknown_variables(set, &known),
            vec![
                (
                    "LODGE_DATABSE_URL".to_owned(),
                    Some("LODGE_DATABASE_URL".to_owned())
                ),
                (
                    "LODGE_SECRETKEY".to_owned(),
                    Some("LODGE_SECRET_KEY".to_owned())
                ),
                ("LODGE_SOMETHING_ELSE_ENTIRELY".to_owned(), None),
            ]
        );
    }
}
