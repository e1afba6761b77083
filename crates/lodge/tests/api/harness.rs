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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate_limit_per_minute: 0,
            rate_limit_burst: 0,
            seed_demo: true,
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
        let cfg = Config::resolve(
            Overrides {
                listen: Some("127.0.0.1:0".into()),
                database_url: Some(database_url.clone()),
                public_base_url: Some("http://127.0.0.1:0".into()),
                rate_limit_per_minute: Some(opts.rate_limit_per_minute),
                rate_limit_burst: Some(opts.rate_limit_burst),
                jwt_secret: Some("test-jwt-secret".into()),
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
        let server = Server::start(&cfg, lodge.clone()).await.expect("start server");
        let base = format!("http://{}", server.addr);
        Some(TestApp {
            engine,
            base,
            client: reqwest::Client::new(),
            lodge,
            clock,
            demo,
            database_url,
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
