//! Boots the real server (the same router `lodge serve` runs) on a free loopback port with its
//! own database, on SQLite or on a throwaway PostgreSQL, and talks HTTP to it.

use std::sync::Arc;

use lodge::config::{Config, FileConfig, Overrides};
use lodge::Server;
use lodge_core::ManualClock;
use lodge_services::demo::DemoInfo;
use lodge_services::Lodge;
use reqwest::{Method, StatusCode};
use serde_json::Value;

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate_limit_per_minute: 0,
            rate_limit_burst: 0,
            seed_demo: true,
            nginx: None,
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
    server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
}

/// The instant every test starts at (tests move the clock, never sleep).
pub fn start_time() -> jiff::Timestamp {
    "2026-03-31T10:00:00Z".parse().expect("valid instant")
}

impl TestApp {
    /// Starts a server, or `None` when the engine is unavailable (the test is skipped, or
    /// fails under `LODGE_REQUIRE_SERVICES=1`).
    pub async fn start(engine: Engine, opts: Options) -> Option<TestApp> {
        let (database_url, dir) = match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/lodge.db", dir.path().display());
                (url, Some(dir))
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
                jwt_secret: Some("test-jwt-secret".into()),
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
                ..Default::default()
            },
            FileConfig::default(),
        );
        let clock = ManualClock::new(start_time());
        let lodge = lodge::open(&cfg, Arc::new(clock.clone()))
            .await
            .expect("open lodge");
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
            server: Some(server),
            _dir: dir,
        })
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
        lodge::open(&self.config, Arc::new(self.clock.clone()))
            .await
            .expect("open a second node")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("server stops cleanly");
        }
    }
}

/// Declares each listed `async fn name(app: TestApp)` as two tests, `name::sqlite` and
/// `name::postgres`, each on a fresh server with the demo data.
#[macro_export]
macro_rules! on_both_engines {
    ($($f:ident),* $(,)?) => {$(
        mod $f {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) = $crate::harness::TestApp::start(
                    $crate::harness::Engine::Sqlite, Default::default()).await {
                    super::$f(app).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::harness::TestApp::start(
                    $crate::harness::Engine::Postgres, Default::default()).await {
                    super::$f(app).await;
                }
            }
        }
    )*};
}
