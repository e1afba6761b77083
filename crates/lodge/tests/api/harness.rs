//! Boots the real server (the same router `lodge serve` runs) on a free loopback port with its
//! own database, on SQLite or on a throwaway PostgreSQL, and talks HTTP to it.
//!
//! Every test app is started by [`run`] (through [`on_both_engines!`]), which, once the test
//! body returns, stops the server and checks the database: the store's consistency checks
//! must be clean and no job may be dead. A test that leaves a dead job on purpose says so
//! with [`TestApp::expect_dead_jobs`].

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use lodge::config::{Config, FileConfig, Overrides};
use lodge::Server;
use lodge_core::ManualClock;
use lodge_services::demo::DemoInfo;
use lodge_services::registrar::Registrar;
use lodge_services::Lodge;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Options for a test server.
#[derive(Debug, Clone)]
pub struct Options {
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub seed_demo: bool,
    /// The nginx driver's binary, arguments, directories and `listen` (`None`: the defaults).
    pub nginx: Option<lodge_services::drivers::nginx::NginxConfig>,
    /// The registrar orders ask (`None`: Lodge's default, the manual registrar).
    pub registrar: Option<Arc<dyn Registrar>>,
    /// Card payments: Stripe's API base (localstripe) and publishable key, with the secret
    /// key [`STRIPE_SECRET_KEY`] and webhook secrets [`STRIPE_WEBHOOK_SECRETS`] (`None`: off).
    pub stripe: Option<(String, Option<String>)>,
    /// `--webhooks-allow-private` (the webhook tests' receivers are on loopback).
    pub webhooks_allow_private: bool,
    /// `--cors-origins`: web clients allowed to call `/apiv2` from a browser.
    pub cors_origins: Vec<String>,
    /// DNS zones on PowerDNS: its API's URL and key (`None`: DNS off).
    pub dns: Option<(String, String)>,
    /// TLS certificates by ACME: the CA's directory URL and a root CA file to trust for it
    /// (`None`: ACME off).
    pub acme: Option<(String, std::path::PathBuf)>,
    /// `--acme-challenge` (`None`: the default, http-01).
    pub acme_challenge: Option<String>,
    /// PHP-FPM pools of the nginx driver (`None`: no PHP).
    pub php: Option<lodge_services::drivers::php::PhpConfig>,
    /// Accounts' MariaDB databases: the administrative URL (users on 127.0.0.1,
    /// `mariadb-dump` from the PATH; `None`: off).
    pub mariadb: Option<String>,
}

/// The Stripe secret key of test apps with card payments.
pub const STRIPE_SECRET_KEY: &str = "sk_test_lodge";
/// Their webhook secrets: an old one still accepted and the current one (a rotation).
pub const STRIPE_WEBHOOK_SECRETS: [&str; 2] = ["whsec_lodge_old", "whsec_lodge_current"];

impl Default for Options {
    fn default() -> Self {
        Options {
            rate_limit_per_minute: 0,
            rate_limit_burst: 0,
            seed_demo: true,
            nginx: None,
            registrar: None,
            stripe: None,
            webhooks_allow_private: false,
            cors_origins: vec![],
            dns: None,
            acme: None,
            acme_challenge: None,
            php: None,
            mariadb: None,
        }
    }
}

pub struct TestApp {
    pub engine: Engine,
    pub base: String,
    pub client: reqwest::Client,
    pub lodge: Lodge,
    pub clock: ManualClock,
    /// The demo data (when seeded): organization, project, keys, plans.
    pub demo: Option<DemoInfo>,
    pub database_url: String,
    /// The resolved configuration this node was opened with (for [`TestApp::second_node`]).
    pub config: Config,
    /// The running server, shared with [`run`], which stops it if the test did not.
    server: Arc<Mutex<Option<Server>>>,
    /// What the shutdown checks are told to accept.
    expected: Arc<Mutex<Expected>>,
    /// The SQLite database's directory, kept until the shutdown checks have run.
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// What a test declares it leaves behind on purpose.
#[derive(Debug, Default, Clone, Copy)]
struct Expected {
    /// Why the test leaves dead jobs (`None`: it must leave none).
    dead_jobs: Option<&'static str>,
}

/// Starts a test app on `engine` with `opts`, runs `test` on it, then stops the server and
/// checks the database (see [`shutdown_problems`]). Does nothing when the engine is not
/// available (the test is skipped, or fails under `LODGE_REQUIRE_SERVICES=1`).
pub async fn run<F, Fut>(engine: Engine, opts: Options, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(app) = TestApp::start(engine, opts).await else {
        return;
    };
    let url = app.database_url.clone();
    let server = app.server.clone();
    let expected = app.expected.clone();
    let dir = app._dir.clone();
    test(app).await;
    let running = server.lock().expect("server slot").take();
    if let Some(s) = running {
        s.stop().await.expect("server stops cleanly");
    }
    let expected = *expected.lock().expect("expectations");
    let problems = shutdown_problems(&url, &expected).await;
    drop(dir);
    assert!(
        problems.is_empty(),
        "the test left its database with problems ({engine:?}):\n  - {}\n\
         (checked after every test: lodge_store::checks::consistency_problems and dead \
         jobs; a test that leaves dead jobs on purpose calls app.expect_dead_jobs(\"why\"))",
        problems.join("\n  - ")
    );
}

/// What is wrong with a test's database once its server has stopped: the store's
/// consistency checks, every dead job (unless expected), and an expected dead job missing.
async fn shutdown_problems(database_url: &str, expected: &Expected) -> Vec<String> {
    sqlx::any::install_default_drivers();
    // No idle timeout or lifetime, so no sqlx maintenance task: it spun here once and
    // hung a test (sqlx issue 3645; see lodge_store's pools).
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect(database_url)
        .await
        .expect("connect for the shutdown checks");
    let mut problems = lodge_store::checks::consistency_problems(&pool)
        .await
        .expect("consistency checks");
    let dead = lodge_store::jobs::with_status(&pool, lodge_core::JobStatus::Dead, None, 100)
        .await
        .expect("dead jobs");
    match expected.dead_jobs {
        None => problems.extend(dead.iter().map(|j| {
            format!(
                "dead job {} ({}, {} attempts): {} — {}",
                j.id,
                j.kind,
                j.attempts,
                j.last_error.as_deref().unwrap_or("no error recorded"),
                j.payload
            )
        })),
        Some(why) if dead.is_empty() => problems.push(format!(
            "the test expects dead jobs ({why}) but left none: remove expect_dead_jobs"
        )),
        Some(_) => {}
    }
    pool.close().await;
    problems
}

/// The instant every test starts at (tests move the clock, never sleep).
pub fn start_time() -> jiff::Timestamp {
    "2026-03-31T10:00:00Z".parse().expect("valid instant")
}

impl TestApp {
    /// Starts a server, or `None` when the engine is unavailable (the test is skipped, or
    /// fails under `LODGE_REQUIRE_SERVICES=1`). Only [`run`] starts one, so that every test
    /// app is checked when it stops.
    async fn start(engine: Engine, opts: Options) -> Option<TestApp> {
        let (database_url, dir) = match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/lodge.db", dir.path().display());
                (url, Some(Arc::new(dir)))
            }
            Engine::Postgres => (lodge_testkit::pg::test_database_url().await?, None),
        };
        let nginx = opts.nginx.as_ref();
        let path = |p: &std::path::Path| p.display().to_string();
        let cfg = Config::resolve(
            Overrides {
                listen: Some("127.0.0.1:0".into()),
                database_url: Some(database_url.clone()),
                public_base_url: Some("http://127.0.0.1:0".into()),
                rate_limit_per_minute: Some(opts.rate_limit_per_minute),
                rate_limit_burst: Some(opts.rate_limit_burst),
                jwt_secret: Some("test-jwt-secret-of-at-least-32-characters".into()),
                secret_key: Some("11".repeat(32)),
                bank_transfer_instructions: Some(
                    "Pay to IBAN XX00 LODGE 0000, quoting the invoice number.".into(),
                ),
                nginx_binary: nginx.map(|n| path(&n.binary)),
                nginx_args: nginx.map(|n| n.args.join(" ")),
                nginx_sites_dir: nginx.map(|n| path(&n.sites_dir)),
                nginx_web_root: nginx.map(|n| path(&n.web_root)),
                nginx_archive_dir: nginx.map(|n| path(&n.archive_dir)),
                nginx_listen: nginx.map(|n| n.listen.clone()),
                nginx_tls_listen: nginx.map(|n| n.tls_listen.clone()),
                acme_directory_url: opts.acme.as_ref().map(|a| a.0.clone()),
                acme_ca_file: opts.acme.as_ref().map(|a| path(&a.1)),
                acme_challenge: opts.acme_challenge.clone(),
                stripe_secret_key: opts.stripe.as_ref().map(|_| STRIPE_SECRET_KEY.into()),
                stripe_publishable_key: opts.stripe.as_ref().and_then(|s| s.1.clone()),
                stripe_webhook_secrets: opts
                    .stripe
                    .as_ref()
                    .map(|_| STRIPE_WEBHOOK_SECRETS.map(String::from).to_vec()),
                stripe_api_base: opts.stripe.as_ref().map(|s| s.0.clone()),
                webhooks_allow_private: Some(opts.webhooks_allow_private),
                cors_origins: Some(opts.cors_origins.clone()),
                pdns_api_url: opts.dns.as_ref().map(|d| d.0.clone()),
                pdns_api_key: opts.dns.as_ref().map(|d| d.1.clone()),
                php_pool_dir: opts.php.as_ref().map(|p| path(&p.pool_dir)),
                php_fpm_binary: opts.php.as_ref().map(|p| path(&p.fpm_binary)),
                php_fpm_args: opts.php.as_ref().map(|p| p.fpm_args.join(" ")),
                php_socket_dir: opts.php.as_ref().map(|p| path(&p.socket_dir)),
                php_fpm_pid_file: opts
                    .php
                    .as_ref()
                    .and_then(|p| p.pid_file.as_deref().map(path)),
                php_pool_user: opts.php.as_ref().map(|p| p.pool_user.clone()),
                php_listen_group: opts.php.as_ref().map(|p| p.listen_group.clone()),
                mariadb_url: opts.mariadb.clone(),
                mariadb_user_host: opts.mariadb.as_ref().map(|_| "127.0.0.1".into()),
                ..Default::default()
            },
            FileConfig::default(),
        );
        let clock = ManualClock::new(start_time());
        let mut lodge = lodge::open(&cfg, Arc::new(clock.clone()))
            .await
            .expect("open lodge");
        lodge::start_node(&lodge).await.expect("start the node");
        if let Some(r) = opts.registrar {
            lodge.registrar = Some(r);
        }
        let demo = if opts.seed_demo {
            Some(lodge.seed_demo().await.expect("seed demo"))
        } else {
            None
        };
        let server = Server::start(&cfg, lodge.clone())
            .await
            .expect("start server");
        let base = format!("http://{}", server.addr);
        Some(TestApp {
            engine,
            base,
            client: reqwest::Client::new(),
            lodge,
            clock,
            demo,
            database_url,
            config: cfg,
            server: Arc::new(Mutex::new(Some(server))),
            expected: Arc::default(),
            _dir: dir,
        })
    }

    /// What the shutdown checks would report if the test ended now.
    pub async fn shutdown_problems(&self) -> Vec<String> {
        let expected = *self.expected.lock().expect("expectations");
        shutdown_problems(&self.database_url, &expected).await
    }

    /// Declares that this test leaves dead jobs on purpose (the shutdown check then fails if
    /// it leaves none).
    pub fn expect_dead_jobs(&self, why: &'static str) {
        self.expected.lock().expect("expectations").dead_jobs = Some(why);
    }

    pub fn demo(&self) -> &DemoInfo {
        self.demo.as_ref().expect("demo data seeded")
    }

    /// The demo customer's key.
    pub fn key(&self) -> String {
        self.demo().api_key.clone()
    }

    /// The demo staff key.
    pub fn admin_key(&self) -> String {
        self.demo().admin_api_key.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and body
    /// (JSON, or a JSON string holding the text when the body is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Rows in a table (to show that a refused request wrote nothing).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.lodge.store.reader())
            .await
            .expect("count rows")
    }

    /// Sends a request and returns the whole response (for headers such as `Retry-After`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("request sent")
    }

    /// Sends raw bytes with the given content type (malformed JSON, odd media types).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// The demo organization's id.
    pub fn org_id(&self) -> String {
        self.demo().organization_id.to_string()
    }

    /// The demo organization's default project.
    pub fn project_id(&self) -> String {
        self.demo().project_id.to_string()
    }

    /// Creates a user through the admin API; returns its id.
    pub async fn admin_create_user(&self, email: &str, password: Option<&str>) -> String {
        let mut body = serde_json::json!({ "email": email, "name": email });
        if let Some(p) = password {
            body["password"] = Value::String(p.to_owned());
        }
        let (status, user) = self.post("/v1/admin/users", &self.admin_key(), &body).await;
        assert_eq!(status, StatusCode::CREATED, "create user {email}: {user}");
        user["id"].as_str().expect("user id").to_owned()
    }

    /// Creates an organization through the admin API (with an owner, if given); returns it.
    pub async fn admin_create_org(&self, name: &str, owner_id: Option<&str>) -> Value {
        let mut body = serde_json::json!({ "name": name });
        if let Some(o) = owner_id {
            body["owner_id"] = Value::String(o.to_owned());
        }
        let (status, org) = self
            .post("/v1/admin/organizations", &self.admin_key(), &body)
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "create organization {name}: {org}"
        );
        org
    }

    /// Deactivates the demo's unlimited server and adds one of `capacity` accounts through
    /// the staff API, so that every order must find room there; returns its id.
    pub async fn only_a_limited_server(&self, name: &str, capacity: i64) -> String {
        let admin = self.admin_key();
        let (status, list) = self.get("/v1/admin/servers", &admin).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let local = list[0]["id"].as_str().expect("the demo server").to_owned();
        let (status, s) = self
            .post(
                &format!("/v1/admin/servers/{local}/deactivate"),
                &admin,
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        let spec = serde_json::json!({ "name": name, "hostname": format!("{name}.example"),
                                       "driver": "nginx", "capacity": capacity });
        let (status, s) = self.post("/v1/admin/servers", &admin, &spec).await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        s["id"].as_str().expect("server id").to_owned()
    }

    /// A server as the staff API lists it (with its `accounts`).
    pub async fn admin_server(&self, id: &str) -> Value {
        let (status, list) = self.get("/v1/admin/servers", &self.admin_key()).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list.as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == id))
            .unwrap_or_else(|| panic!("server {id} not listed: {list}"))
            .clone()
    }

    /// Adds a member with a role (and, for guests, projects) through the admin API.
    pub async fn admin_add_member(&self, org: &str, user_id: &str, role: &str, projects: &[&str]) {
        let body = serde_json::json!({ "user_id": user_id, "role": role, "project_ids": projects });
        let (status, m) = self
            .post(
                &format!("/v1/admin/organizations/{org}/members"),
                &self.admin_key(),
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "add {role} member: {m}");
        assert_eq!(m["role"], role, "{m}");
    }

    /// Issues an organization key (held by `user_id`, or the first owner) through the admin
    /// API; returns its secret.
    pub async fn admin_create_key(&self, org: &str, user_id: Option<&str>) -> String {
        let mut body = serde_json::json!({ "name": "test key" });
        if let Some(u) = user_id {
            body["user_id"] = Value::String(u.to_owned());
        }
        let (status, key) = self
            .post(
                &format!("/v1/admin/organizations/{org}/api-keys"),
                &self.admin_key(),
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create key: {key}");
        key["key_secret"].as_str().expect("key secret").to_owned()
    }

    /// A user with `role` in the demo organization and a key held by that user.
    pub async fn demo_member_key(&self, email: &str, role: &str, projects: &[&str]) -> String {
        let user = self.admin_create_user(email, None).await;
        let org = self.org_id();
        self.admin_add_member(&org, &user, role, projects).await;
        self.admin_create_key(&org, Some(&user)).await
    }

    /// Another node on the same database: its own connection pools and drivers, the same
    /// settings and the same (manual) clock. It serves no HTTP; tests call its services.
    pub async fn second_node(&self) -> Lodge {
        let lodge = lodge::open(&self.config, Arc::new(self.clock.clone()))
            .await
            .expect("open a second node");
        lodge::start_node(&lodge).await.expect("start the node");
        lodge
    }

    /// Stops the server (in-flight requests finish). The database is checked once the test
    /// body returns.
    pub async fn stop(self) {
        let running = self.server.lock().expect("server slot").take();
        if let Some(s) = running {
            s.stop().await.expect("server stops cleanly");
        }
    }
}

/// Declares each listed test as two tests, `name::sqlite` and `name::postgres`, each started
/// by [`harness::run`](crate::harness::run) (so the database is checked when it ends).
///
/// - `on_both_engines!(a, b)`: `async fn a(app: TestApp)` on a fresh server with the demo data;
/// - `on_both_engines!(options = opts; a, b)`: the same with `fn opts() -> Options` of the
///   calling module;
/// - `on_both_engines!(engine: a, b)`: `async fn a(engine: Engine)`, for a test that prepares
///   something first and then calls `harness::run` itself.
#[macro_export]
macro_rules! on_both_engines {
    (engine: $($f:ident),* $(,)?) => {$(
        mod $f {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$f($crate::harness::Engine::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$f($crate::harness::Engine::Postgres).await;
            }
        }
    )*};
    (options = $opts:ident; $($f:ident),* $(,)?) => {
        $crate::on_both_engines!(@each super::$opts; $($f),*);
    };
    (@each $opts:path; $($f:ident),*) => {$(
        mod $f {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::harness::run($crate::harness::Engine::Sqlite, $opts(), super::$f).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::harness::run($crate::harness::Engine::Postgres, $opts(), super::$f).await;
            }
        }
    )*};
    ($($f:ident),* $(,)?) => {
        $crate::on_both_engines!(@each ::std::default::Default::default; $($f),*);
    };
}

// ---- shared helpers ----

/// Tables an order writes to: a refused order leaves all of them as they were.
pub const ORDER_TABLES: [&str; 6] = [
    "orders",
    "invoices",
    "invoice_lines",
    "hosting",
    "domains",
    "credit_ledger",
];

/// Rows in each of [`ORDER_TABLES`].
pub async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for t in ORDER_TABLES {
        out.push((t, app.count(t).await));
    }
    out
}

/// The count of `table` among [`counts`].
#[track_caller]
pub fn count_of(counts: &[(&'static str, i64)], table: &str) -> i64 {
    counts
        .iter()
        .find(|(t, _)| *t == table)
        .unwrap_or_else(|| panic!("{table} is not counted"))
        .1
}

/// An amount in cents, from a JSON number (`17.5`, `17`) or a decimal string (`"17.50"`).
#[track_caller]
pub fn cents(v: &Value) -> i64 {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not an amount: {other}"),
    };
    let (neg, text) = match text.strip_prefix('-') {
        Some(t) => (true, t.to_owned()),
        None => (false, text),
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    assert!(frac.len() <= 2, "more than two decimals: {v}");
    let frac = format!("{frac:0<2}");
    let c = int.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    if neg {
        -c
    } else {
        c
    }
}

#[track_caller]
pub fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string: {v}"))
}

/// `status` and a `{"detail": "…"}` body (and nothing else).
#[track_caller]
pub fn assert_detail(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(obj.len(), 1, "only `detail` expected: {body}");
    assert!(
        obj["detail"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
}

/// The messages of one field of a `400`, joined (to look for a phrase).
pub fn messages(body: &Value, field: &str) -> String {
    body[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// A GET with the demo customer's key that must answer `200`.
pub async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get(path, &app.key()).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// A demo plan's id, by name (`Starter`, `Business`, `Legacy Basic`, `Free Trial`, …).
pub fn plan_id(app: &TestApp, name: &str) -> String {
    app.demo()
        .plans
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no demo plan {name:?}"))
        .id
        .to_string()
}

/// The demo Starter plan's id.
pub fn starter(app: &TestApp) -> String {
    plan_id(app, "Starter")
}

/// A hosting account of the demo project, by id.
pub fn hosting_path(app: &TestApp, id: &str) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/{id}",
        app.org_id(),
        app.project_id()
    )
}

/// Cancels a hosting account of the demo project (`kind`: `immediate` or
/// `end_of_period`), with the reason `x`.
pub async fn cancel(app: &TestApp, id: &str, kind: &str) -> (StatusCode, Value) {
    app.post(
        &format!("{}/cancel", hosting_path(app, id)),
        &app.key(),
        &json!({ "type": kind, "reason": "x" }),
    )
    .await
}

/// The demo owner withdraws an account's pending cancellation.
pub async fn revoke_cancellation(app: &TestApp, id: &str) -> (StatusCode, Value) {
    app.post(
        &format!("{}/revoke-cancellation", hosting_path(app, id)),
        &app.key(),
        &json!({}),
    )
    .await
}

/// A hosting account of the demo project, through `/v1`.
pub async fn hosting(app: &TestApp, id: &str) -> Value {
    get_ok(app, &hosting_path(app, id)).await
}

/// An invoice of the demo organization, through `/v1`.
/// A hosting account as staff see it (`/v1/admin/hosting/{id}`): with the server's own
/// words for a failure, which customers are not shown.
pub async fn staff_hosting(app: &TestApp, id: &str) -> Value {
    let (status, h) = app
        .get(&format!("/v1/admin/hosting/{id}"), &app.admin_key())
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    h
}

pub async fn invoice(app: &TestApp, id: i64) -> Value {
    get_ok(
        app,
        &format!("/v1/organizations/{}/invoices/{id}", app.org_id()),
    )
    .await
}

/// Staff add account credit to an organization; returns the answer.
pub async fn add_credit(app: &TestApp, org: &str, amount: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/v1/admin/organizations/{org}/credit"),
            &app.admin_key(),
            &json!({ "amount": amount, "note": "test deposit" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "add credit: {body}");
    body
}

/// An order's status, read from the database (no route shows an order).
pub async fn order_status(app: &TestApp, order_id: i64) -> String {
    sqlx::query_scalar::<_, String>("SELECT status FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(app.lodge.store.reader())
        .await
        .expect("order status")
}

/// A second organization with an owner and a key, made through the staff API; returns
/// (organization, project, key).
pub async fn other_tenant(app: &TestApp, tag: &str) -> (String, String, String) {
    let owner = app
        .admin_create_user(&format!("owner@{tag}.test"), None)
        .await;
    let org = app.admin_create_org(tag, Some(&owner)).await;
    let org = str_of(&org, "id").to_owned();
    let key = app.admin_create_key(&org, None).await;
    let (status, projects) = app
        .get(&format!("/v1/organizations/{org}/projects"), &key)
        .await;
    assert_eq!(status, StatusCode::OK, "{projects}");
    let project = str_of(&projects["results"][0], "id").to_owned();
    (org, project, key)
}

// ---- /apiv2 ----

/// The demo Starter plan's `/apiv2` package id (5.00 a month, 54.00 a year).
pub const STARTER_PACKAGE: i64 = 11447;

/// How an `/apiv2` request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    Key(&'a str),
    Session(&'a str),
    Nothing,
}

/// Sends an `/apiv2` request; returns status and body (JSON, or a JSON string of the text).
pub async fn v2(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path));
    req = match auth {
        Auth::Key(k) => req.header("X-API-KEY", k),
        Auth::Session(s) => req.header("sessionid", s),
        Auth::Nothing => req,
    };
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let text = resp.text().await.expect("body read");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// An `/apiv2` request that must answer `200`.
pub async fn v2_ok(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> Value {
    let (status, resp) = v2(app, method.clone(), path, Auth::Key(key), body).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {resp}");
    resp
}

/// The order body InterServer's clients send.
pub fn order_body(package: i64, period: i64, hostname: &str) -> Value {
    json!({
        "packageId": package,
        "period": period,
        "hostname": hostname,
        "rootpass": "",
        "coupon": "",
        "serviceOfferId": 0,
        "registerDomain": false,
        "comment": "",
    })
}

/// Places a Starter order (external domain) through `/v1`; returns its answer.
pub async fn order_external(app: &TestApp, name: &str) -> Value {
    let (status, o) = app
        .post(
            &format!(
                "/v1/organizations/{}/projects/{}/hosting/order",
                app.org_id(),
                app.project_id()
            ),
            &app.key(),
            &json!({ "plan_id": starter(app), "domain_source": "external", "domain_name": name }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "order {name}: {o}");
    o
}

/// POSTs `body` (JSON, when given) to `path` under `Idempotency-Key: idem`, with the header
/// `auth` (`("X-API-KEY", key)`, `("Authorization", "Bearer …")`): its status, whether it
/// was marked `Idempotent-Replayed`, and its JSON.
pub async fn keyed_post(
    app: &TestApp,
    path: &str,
    auth: (&str, &str),
    idem: &str,
    body: Option<&Value>,
) -> (StatusCode, bool, Value) {
    let mut req = app
        .client
        .post(app.url(path))
        .header(auth.0, auth.1)
        .header("Idempotency-Key", idem);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    (resp.status(), replayed, resp.json::<Value>().await.unwrap())
}

/// Places an order through `/apiv2` that must be accepted; returns the response.
pub async fn place(app: &TestApp, key: &str, body: &Value) -> Value {
    let resp = v2_ok(app, Method::POST, "/apiv2/websites/order", key, Some(body)).await;
    assert_eq!(resp["continue"], true, "order {body}: {resp}");
    resp
}

/// A refused order: `200 {"continue": false, "errors": [...]}` with exactly these messages.
#[track_caller]
pub fn assert_refused(status: StatusCode, body: &Value, errors: &[&str], what: &str) {
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {body}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["continue", "errors"]),
        "{what}: {body}"
    );
    assert_eq!(obj["continue"], false, "{what}: {body}");
    let got: BTreeSet<&str> = obj["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: errors: {body}"))
        .iter()
        .map(|e| e.as_str().unwrap_or_else(|| panic!("{what}: {body}")))
        .collect();
    let expected: BTreeSet<&str> = errors.iter().copied().collect();
    assert_eq!(got, expected, "{what}: {body}");
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers (an SMTP server or
/// a webhook receiver that hangs): its port, and how many connections it has accepted.
pub fn silent_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (port, accepted)
}
