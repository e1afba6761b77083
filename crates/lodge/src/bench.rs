//! `lodge bench`: drives concurrent load against a Lodge and reports throughput, latency
//! percentiles (from an HDR histogram) and errors, next to two ceilings measured on the same
//! machine in the same run: a trivial endpoint (`/healthz`) and the database's bare durable
//! commit rate. Also fills a database with orders (`lodge bench fill`) and checks the commit
//! path against crashes (`lodge bench crash`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// Where the load goes.
pub struct Target {
    pub base: String,
    pub admin_key: String,
    pub database_url: Option<String>,
    child: Option<Child>,
    exe: PathBuf,
    listen: String,
    extra_env: Vec<(String, String)>,
}

/// Options shared by the modes.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub url: Option<String>,
    pub admin_key: Option<String>,
    pub database_url: Option<String>,
    pub connections: usize,
    pub duration: Duration,
    pub scenarios: Vec<String>,
    /// A mix to run after the scenarios ([`parse_mix`]); without `scenarios`, only the mix.
    pub mix: Option<String>,
    /// Lodge servers started on the same database (PostgreSQL only); connection `i` goes
    /// to node `i % nodes`.
    pub nodes: usize,
}

/// The scenario that pays invoices from account credit: not a [`Kind`], as it needs
/// invoices prepared unpaid first.
pub const PAY_CREDIT: &str = "pay_credit";

/// Refuses a scenario name that is neither a [`Kind`] nor [`PAY_CREDIT`] (it would
/// silently measure nothing).
pub fn check_scenarios(scenarios: &[String]) -> anyhow::Result<()> {
    for s in scenarios {
        if s != PAY_CREDIT && Kind::named(s).is_none() {
            bail!(
                "--scenarios: unknown scenario {s:?} (one of {}, {PAY_CREDIT})",
                Kind::names()
            );
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Throughput against the ceiling its goal is set against (`/healthz` for reads; for
    /// writes SQLite's plain commit loop, or PostgreSQL's one-row commits from as many
    /// clients as the load has).
    pub ratio_to_ceiling: Option<f64>,
    pub ceiling: Option<String>,
    /// Throughput against every ceiling measured in the same run.
    pub ratios: Ratios,
}

/// A scenario's throughput against each ceiling the run measured, named as the report's
/// fields; a ceiling not measured (no `healthz` scenario, the other engine's) is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ratios {
    /// Against `GET /healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthz: Option<f64>,
    /// SQLite: against the plain one-row commit loop outside Lodge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_sqlite_commits: Option<f64>,
    /// Against Lodge's own one-row commits (SQLite: its batch writer; PostgreSQL: one
    /// connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_commits: Option<f64>,
    /// PostgreSQL: against one-row commits from as many clients as the load has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_commits_concurrent: Option<f64>,
}

impl Ratios {
    /// `healthz`, `plain_sqlite_commits`, `bare_commits`, `bare_commits_concurrent`.
    fn in_order(&self) -> [Option<f64>; 4] {
        [
            self.healthz,
            self.plain_sqlite_commits,
            self.bare_commits,
            self.bare_commits_concurrent,
        ]
    }
}

/// The ceilings a run measured (per second).
#[derive(Debug, Clone, Copy, Default)]
struct Ceilings {
    healthz: Option<f64>,
    plain_sqlite: Option<f64>,
    bare: Option<f64>,
    bare_concurrent: Option<f64>,
}

impl Ceilings {
    /// The ceiling writes' goals are set against — SQLite's plain loop, else PostgreSQL's
    /// commits from `connections` clients, else Lodge's one-connection commits — with its
    /// name and its column in the table.
    fn for_writes(&self, connections: usize) -> (Option<f64>, String, &'static str) {
        match (self.plain_sqlite, self.bare_concurrent) {
            (Some(p), _) => (
                Some(p),
                "plain SQLite one-row commit loop".to_owned(),
                "/plain",
            ),
            (None, Some(n)) => (
                Some(n),
                format!("one-row commits from {connections} clients"),
                "/N conn",
            ),
            (None, None) => (
                self.bare,
                "bare durable commits (1 connection)".to_owned(),
                "/1 conn",
            ),
        }
    }
}

/// Sets each scenario's ratio to every ceiling (a mix's rows included), and a scenario's to
/// the one its goal is set against: reads (`storefront`, `plans`) against `/healthz`, writes
/// against the engine's own rate — SQLite's plain loop, else PostgreSQL's commits from
/// `connections` clients, else Lodge's one-connection commits.
fn rate_scenarios(results: &mut [ScenarioResult], c: Ceilings, connections: usize) {
    let against = |x: f64, ceiling: Option<f64>| ceiling.filter(|c| *c > 0.0).map(|c| x / c);
    let (write_ceiling, write_name, _) = c.for_writes(connections);
    for r in results {
        let x = r.throughput;
        r.ratios = Ratios {
            healthz: against(x, c.healthz),
            plain_sqlite_commits: against(x, c.plain_sqlite),
            bare_commits: against(x, c.bare),
            bare_commits_concurrent: against(x, c.bare_concurrent),
        };
        match r.name.as_str() {
            "storefront" | "plans" => {
                r.ratio_to_ceiling = r.ratios.healthz;
                r.ceiling = Some("healthz".into());
            }
            "order_external" | "order_keyed" | "order_register" | PAY_CREDIT => {
                r.ratio_to_ceiling = against(x, write_ceiling);
                r.ceiling = Some(write_name.clone());
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub engine: String,
    /// Lodge servers sharing the database and the load.
    pub nodes: usize,
    pub connections: usize,
    pub duration_secs: f64,
    pub orders_in_database_before: i64,
    /// Lodge's own durable commits, one row each (SQLite: on the batch writer; PostgreSQL:
    /// one connection).
    pub bare_commits_per_sec: Option<f64>,
    /// PostgreSQL: the same from `connections` clients at once (pgbench-style).
    pub bare_commits_per_sec_concurrent: Option<f64>,
    /// SQLite: a plain one-row commit loop outside Lodge's machinery (the engine's rate).
    pub plain_sqlite_commits_per_sec: Option<f64>,
    pub server_peak_rss_mb: Option<f64>,
    pub scenarios: Vec<ScenarioResult>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Target {
    /// A Lodge started for the benchmark (demo data seeded, rate limits off, no worker), on
    /// `database_url` or a fresh SQLite file in a temp dir.
    pub async fn spawn(
        database_url: Option<String>,
        dir: &std::path::Path,
    ) -> anyhow::Result<Target> {
        let exe = std::env::current_exe()?;
        let database_url =
            database_url.unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
        let extra_env = vec![
            ("LODGE_SECRET_KEY".to_owned(), "42".repeat(32)),
            (
                "LODGE_JWT_SECRET".to_owned(),
                "bench-jwt-secret-of-at-least-32-characters".to_owned(),
            ),
            (
                "LODGE_NGINX_SITES_DIR".to_owned(),
                dir.join("sites").display().to_string(),
            ),
            (
                "LODGE_NGINX_WEB_ROOT".to_owned(),
                dir.join("www").display().to_string(),
            ),
            (
                "LODGE_NGINX_ARCHIVE_DIR".to_owned(),
                dir.join("archive").display().to_string(),
            ),
        ];
        let out = Command::new(&exe)
            .args(["demo", "--json", "--database-url", &database_url])
            .envs(extra_env.clone())
            .stderr(Stdio::null())
            .output()
            .await
            .context("running lodge demo")?;
        if !out.status.success() {
            bail!("lodge demo failed");
        }
        let demo: Value =
            serde_json::from_slice(&out.stdout).context("lodge demo --json output")?;
        let admin_key = demo
            .get("admin_api_key")
            .and_then(Value::as_str)
            .context("no admin_api_key")?
            .to_owned();
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut t = Target {
            base: format!("http://{listen}"),
            admin_key,
            database_url: Some(database_url),
            child: None,
            exe,
            listen,
            extra_env,
        };
        t.start().await?;
        Ok(t)
    }

    /// Starts (or restarts) the server process and waits until it is ready.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let db = self.database_url.clone().context("no database")?;
        let child = Command::new(&self.exe)
            .args([
                "serve",
                "--no-worker",
                "--listen",
                &self.listen,
                "--database-url",
                &db,
                "--rate-limit-per-minute",
                "0",
                "--rate-limit-burst",
                "0",
            ])
            .envs(self.extra_env.clone())
            .env("LODGE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting lodge serve")?;
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the server did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One more server on the same database (its own process, pools and batch writer),
    /// with the same settings, on a port of its own.
    pub async fn another_node(&self) -> anyhow::Result<Target> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut t = Target {
            base: format!("http://{listen}"),
            admin_key: self.admin_key.clone(),
            database_url: self.database_url.clone(),
            child: None,
            exe: self.exe.clone(),
            listen,
            extra_env: self.extra_env.clone(),
        };
        t.start().await?;
        Ok(t)
    }

    /// `SIGKILL`s the server process.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// The server's peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

/// A customer the load acts as.
#[derive(Debug, Clone)]
pub struct Customer {
    pub key: String,
    pub org: String,
    pub project: String,
}

async fn check(r: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    Ok(body)
}

/// Creates a customer (user, organization, key) with `credit` through the staff API.
pub async fn make_customer(
    client: &reqwest::Client,
    t: &Target,
    tag: &str,
    credit: &str,
) -> anyhow::Result<Customer> {
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(&t.admin_key);
    let user = check(
        admin(client.post(format!("{}/v1/admin/users", t.base)))
            .json(&json!({"email": format!("{tag}@bench.lodge.test"), "name": tag}))
            .send()
            .await?,
        "create user",
    )
    .await?;
    let org = check(
        admin(client.post(format!("{}/v1/admin/organizations", t.base)))
            .json(&json!({"name": tag, "owner_id": user.get("id")}))
            .send()
            .await?,
        "create organization",
    )
    .await?;
    let org_id = org
        .get("id")
        .and_then(Value::as_str)
        .context("org id")?
        .to_owned();
    // A benchmark customer orders far more than a customer's default quota.
    check(
        admin(client.patch(format!("{}/v1/admin/organizations/{org_id}/quotas", t.base)))
            .json(&json!({"instance_quota": 1_000_000, "domain_quota": 1_000_000}))
            .send()
            .await?,
        "raise the quotas",
    )
    .await?;
    let key = check(
        admin(client.post(format!(
            "{}/v1/admin/organizations/{org_id}/api-keys",
            t.base
        )))
        .json(&json!({"name": "bench"}))
        .send()
        .await?,
        "create key",
    )
    .await?;
    let key = key
        .get("key_secret")
        .and_then(Value::as_str)
        .context("key")?
        .to_owned();
    if credit != "0" {
        check(
            admin(client.post(format!("{}/v1/admin/organizations/{org_id}/credit", t.base)))
                .json(&json!({"amount": credit}))
                .send()
                .await?,
            "add credit",
        )
        .await?;
    }
    let projects = check(
        client
            .get(format!("{}/v1/organizations/{org_id}/projects", t.base))
            .bearer_auth(&key)
            .send()
            .await?,
        "projects",
    )
    .await?;
    let project = projects
        .pointer("/results/0/id")
        .and_then(Value::as_str)
        .context("project")?
        .to_owned();
    Ok(Customer {
        key,
        org: org_id,
        project,
    })
}

/// The id of the demo's Starter plan (any listed plan with a monthly price).
pub async fn plan_id(client: &reqwest::Client, t: &Target, key: &str) -> anyhow::Result<String> {
    let plans = check(
        client
            .get(format!("{}/v1/hosting/plans?page_size=100", t.base))
            .bearer_auth(key)
            .send()
            .await?,
        "plans",
    )
    .await?;
    plans
        .get("results")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter().find(|p| {
                p["pricing"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|x| x["billing_cycle"] == "monthly"))
            })
        })
        .and_then(|p| p["id"].as_str())
        .map(str::to_owned)
        .context("no plan with a monthly price")
}

/// Per request kind: the latencies, and how many answers were errors.
type Tally = Vec<(Histogram<u64>, u64)>;

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// An empty [`Tally`] of `kinds` request kinds.
fn tally(kinds: usize) -> anyhow::Result<Tally> {
    (0..kinds).map(|_| Ok((histogram()?, 0))).collect()
}

/// Runs `connections` loops of `step` for `duration`; `step` returns `Ok(true)` for a
/// success, `Ok(false)` for an error answer, `Err` to stop that loop (nothing left to do).
async fn drive<F, Fut>(
    name: &str,
    connections: usize,
    duration: Duration,
    step: F,
) -> anyhow::Result<ScenarioResult>
where
    F: Fn(usize, u64, reqwest::Client) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let step = Arc::new(step);
    let mut results = drive_labeled(
        name,
        &[name.to_owned()],
        connections,
        duration,
        move |i, n, c| {
            let step = step.clone();
            async move { step(i, n, c).await.map(|ok| (0, ok)) }
        },
    )
    .await?;
    results
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no result for {name}"))
}

/// [`drive`] for a load of several kinds: `step` also says which of `labels` its request
/// was. Returns one result per label, and before them the total, named `total`, when
/// there are several.
async fn drive_labeled<F, Fut>(
    total: &str,
    labels: &[String],
    connections: usize,
    duration: Duration,
    step: F,
) -> anyhow::Result<Vec<ScenarioResult>>
where
    F: Fn(usize, u64, reqwest::Client) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(usize, bool)>> + Send,
{
    let step = Arc::new(step);
    let kinds = labels.len();
    let totals: Arc<Mutex<Tally>> = Arc::new(Mutex::new(tally(kinds)?));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let step = step.clone();
        let totals = totals.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap_or_default();
            let mut local: Tally = tally(kinds)?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match step(conn, n, client.clone()).await {
                    Ok((kind, ok)) => {
                        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let Some((hist, errors)) = local.get_mut(kind) else {
                            bail!("request kind {kind} out of range");
                        };
                        hist.saturating_record(us.max(1));
                        if !ok {
                            *errors += 1;
                        }
                    }
                    Err(_) => break,
                }
                n += 1;
            }
            let mut totals = totals
                .lock()
                .map_err(|_| anyhow::anyhow!("histogram lock"))?;
            for ((hist, errors), (h, e)) in totals.iter_mut().zip(&local) {
                hist.add(h)?;
                *errors += e;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let totals = totals
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?;
    let result = |name: &str, h: &Histogram<u64>, errors: u64| {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        ScenarioResult {
            name: name.to_owned(),
            requests: h.len(),
            errors,
            throughput: h.len() as f64 / secs,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            ratio_to_ceiling: None,
            ceiling: None,
            ratios: Ratios::default(),
        }
    };
    let mut results = Vec::new();
    if kinds > 1 {
        let mut all = histogram()?;
        for (h, _) in totals.iter() {
            all.add(h)?;
        }
        let errors = totals.iter().map(|(_, e)| e).sum();
        results.push(result(total, &all, errors));
    }
    for (label, (h, errors)) in labels.iter().zip(totals.iter()) {
        results.push(result(label, h, *errors));
    }
    Ok(results)
}

/// A kind of request the load sends: every scenario but `pay_credit` (which needs invoices
/// prepared unpaid) is one, and a mix interleaves several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Healthz,
    Storefront,
    Plans,
    OrderExternal,
    /// `OrderExternal`, each request with its own `Idempotency-Key` (claimed and answered
    /// in the order's transaction).
    OrderKeyed,
    OrderRegister,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Healthz,
        Kind::Storefront,
        Kind::Plans,
        Kind::OrderExternal,
        Kind::OrderKeyed,
        Kind::OrderRegister,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::Storefront => "storefront",
            Kind::Plans => "plans",
            Kind::OrderExternal => "order_external",
            Kind::OrderKeyed => "order_keyed",
            Kind::OrderRegister => "order_register",
        }
    }

    /// The kind of this name.
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every kind's name, for error messages.
    fn names() -> String {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.join(", ")
    }
}

/// Parses a mix, `kind=weight` pairs separated by commas (a kind alone weighs 1):
/// `storefront=8,order_external=1,order_register=1`.
pub fn parse_mix(spec: &str) -> anyhow::Result<Vec<(Kind, u32)>> {
    let mut mix: Vec<(Kind, u32)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let (name, weight) = (name.trim(), weight.trim());
        let Some(kind) = Kind::named(name) else {
            bail!(
                "--mix: unknown kind {name:?} (one of {}; pay_credit cannot be mixed)",
                Kind::names()
            );
        };
        let weight: u32 = weight
            .parse()
            .ok()
            .filter(|w| (1..=1000).contains(w))
            .with_context(|| format!("--mix: the weight of {name} must be 1 to 1000"))?;
        if mix.iter().any(|(k, _)| *k == kind) {
            bail!("--mix: {name} is given twice");
        }
        mix.push((kind, weight));
    }
    if mix.is_empty() {
        bail!("--mix: no kind given");
    }
    Ok(mix)
}

/// The kind of a mix's request number `slot`, by weight: over any run of consecutive slots
/// as long as the total weight, each kind comes up exactly its weight's number of times.
/// Returns the kind's index in `mix`.
pub fn pick(mix: &[(Kind, u32)], slot: u64) -> usize {
    let total: u64 = mix.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut at = slot % total.max(1);
    for (i, (_, w)) in mix.iter().enumerate() {
        if at < u64::from(*w) {
            return i;
        }
        at -= u64::from(*w);
    }
    0
}

/// What the load's requests need: the server, the customers, the plan ordered and a tag
/// unique to the run.
#[derive(Clone)]
struct Load {
    /// The nodes' base URLs: connection `i` sends to `bases[i % len]`.
    bases: Arc<Vec<String>>,
    customers: Arc<Vec<Customer>>,
    plan: Arc<String>,
    tag: Arc<str>,
}

impl Load {
    /// Sends request `n` of connection `i` (acting as customer `i`): whether it succeeded.
    /// `scenario` keeps the domain names of a run's order scenarios apart.
    async fn send(
        &self,
        kind: Kind,
        scenario: &str,
        i: usize,
        n: u64,
        c: &reqwest::Client,
    ) -> bool {
        let Some(base) = self.bases.get(i % self.bases.len().max(1)) else {
            return false;
        };
        let Some(cu) = self.customers.get(i % self.customers.len().max(1)) else {
            return false;
        };
        let body_read = |r: Result<reqwest::Response, reqwest::Error>| async move {
            match r {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        };
        match kind {
            Kind::Healthz => c
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Kind::Storefront => {
                let r = c
                    .get(format!("{base}/apiv2/websites/order"))
                    .header("X-API-KEY", &cu.key)
                    .send()
                    .await;
                body_read(r).await
            }
            Kind::Plans => {
                let r = c
                    .get(format!("{base}/v1/hosting/plans"))
                    .bearer_auth(&cu.key)
                    .send()
                    .await;
                body_read(r).await
            }
            Kind::OrderExternal | Kind::OrderKeyed | Kind::OrderRegister => {
                let (source, suffix) = if kind == Kind::OrderRegister {
                    ("register", "com")
                } else {
                    ("external", "example")
                };
                let url = format!(
                    "{base}/v1/organizations/{}/projects/{}/hosting/order",
                    cu.org, cu.project
                );
                let name =
                    format!("{}{scenario}{i}n{n}.{suffix}", self.tag).replace(['_', '/'], "-");
                let mut req = c
                    .post(url)
                    .bearer_auth(&cu.key)
                    .json(&order_body(&self.plan, source, &name));
                if kind == Kind::OrderKeyed {
                    req = req.header("Idempotency-Key", name);
                }
                req.send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED)
            }
        }
    }
}

fn order_body(plan: &str, source: &str, name: &str) -> Value {
    json!({"plan_id": plan, "domain_source": source, "domain_name": name, "billing_cycle": "monthly"})
}

/// The load test.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Report> {
    // Bad names fail now, not after the setup.
    check_scenarios(&opts.scenarios)?;
    let mix = opts.mix.as_deref().map(parse_mix).transpose()?;
    let nodes = opts.nodes.max(1);
    if nodes > 1 {
        if opts.url.is_some() {
            bail!("--nodes starts its own servers: not with --url");
        }
        if !opts
            .database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres"))
        {
            bail!("--nodes needs a PostgreSQL --database-url (SQLite is one node)");
        }
    }
    let dir = tempfile_dir()?;
    let mut target = match &opts.url {
        Some(url) => Target {
            base: url.trim_end_matches('/').to_owned(),
            admin_key: opts
                .admin_key
                .clone()
                .context("--admin-key is needed with --url")?,
            database_url: opts.database_url.clone(),
            child: None,
            exe: std::env::current_exe()?,
            listen: String::new(),
            extra_env: vec![],
        },
        None => Target::spawn(opts.database_url.clone(), &dir).await?,
    };
    let mut others = Vec::new();
    for _ in 1..nodes {
        others.push(target.another_node().await?);
    }
    let engine = match target.database_url.as_deref() {
        Some(u) if u.starts_with("postgres") => "postgres",
        Some(_) => "sqlite",
        None => "unknown",
    };
    let orders_before = match target.database_url.as_deref() {
        Some(u) => count_orders(u).await.unwrap_or(0),
        None => 0,
    };
    let client = reqwest::Client::new();
    let run_tag = format!("{:x}", rand::random::<u32>());
    eprintln!("bench: setting up {} customers", opts.connections);
    let mut customers = Vec::new();
    for i in 0..opts.connections {
        customers.push(
            make_customer(&client, &target, &format!("b{run_tag}c{i}"), "100000000.00").await?,
        );
    }
    let customers = Arc::new(customers);
    let first = customers.first().context("no customer")?;
    let plan = Arc::new(plan_id(&client, &target, &first.key).await?);
    let base = Arc::new(target.base.clone());
    let bases: Arc<Vec<String>> = Arc::new(
        std::iter::once(target.base.clone())
            .chain(others.iter().map(|t| t.base.clone()))
            .collect(),
    );
    let mut results = Vec::new();
    let mix_only = mix.is_some();
    let want = |s: &str| {
        if opts.scenarios.is_empty() {
            !mix_only
        } else {
            opts.scenarios.iter().any(|x| x == s)
        }
    };
    let load = Load {
        bases: bases.clone(),
        customers: customers.clone(),
        plan: plan.clone(),
        tag: run_tag.as_str().into(),
    };

    for kind in Kind::ALL {
        if !want(kind.name()) {
            continue;
        }
        eprintln!("bench: {}", kind.name());
        let load = load.clone();
        results.push(
            drive(
                kind.name(),
                opts.connections,
                opts.duration,
                move |i, n, c| {
                    let load = load.clone();
                    async move { Ok(load.send(kind, kind.name(), i, n, &c).await) }
                },
            )
            .await?,
        );
    }
    if let Some(mix) = mix {
        let labels: Vec<String> = mix
            .iter()
            .map(|(k, _)| format!("mix/{}", k.name()))
            .collect();
        eprintln!("bench: mix ({})", labels.join(", "));
        let load = load.clone();
        let mix = Arc::new(mix);
        results.extend(
            drive_labeled(
                "mix",
                &labels,
                opts.connections,
                opts.duration,
                move |i, n, c| {
                    let (load, mix) = (load.clone(), mix.clone());
                    async move {
                        // Connections start at different points of the cycle.
                        let at = pick(&mix, n.wrapping_add(i as u64));
                        let kind = mix.get(at).map_or(Kind::Healthz, |(k, _)| *k);
                        let scenario = format!("mix-{}", kind.name());
                        Ok((at, load.send(kind, &scenario, i, n, &c).await))
                    }
                },
            )
            .await?,
        );
    }
    if want(PAY_CREDIT) {
        // Unpaid invoices first (customers without credit), then credit, then the load pays.
        eprintln!("bench: pay_credit (preparing unpaid invoices)");
        let mut payers = Vec::new();
        for i in 0..opts.connections {
            payers.push(make_customer(&client, &target, &format!("b{run_tag}p{i}"), "0").await?);
        }
        // Enough invoices that the run does not run out before its time at ~6,000
        // payments/s (at least 400 a connection).
        let per = ((opts.duration.as_secs_f64() * 100.0).ceil() as usize).max(400);
        // Each connection pays its own customer's invoices, as each places its own
        // customer's orders in the order scenarios. (Until 2026-12-03 the connections took
        // invoices from one stack shared by all, in the order they were placed: most
        // payments at any moment were of the same few organizations and waited for each
        // other's lock, 5.2 ms a payment on PostgreSQL, which measured that queue and not
        // payments.)
        // Per connection: (the customer's API key, an unpaid invoice's id).
        type Invoices = Mutex<Vec<(String, String)>>;
        let queues: Arc<Vec<Invoices>> = Arc::new(
            (0..payers.len())
                .map(|_| Mutex::new(Vec::with_capacity(per)))
                .collect(),
        );
        let mut prep = Vec::new();
        for (i, p) in payers.iter().enumerate() {
            let (base, plan, queues, p, tag) = (
                base.clone(),
                plan.clone(),
                queues.clone(),
                p.clone(),
                run_tag.clone(),
            );
            prep.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                for n in 0..per {
                    let r = c
                        .post(format!(
                            "{base}/v1/organizations/{}/projects/{}/hosting/order",
                            p.org, p.project
                        ))
                        .bearer_auth(&p.key)
                        .json(&order_body(
                            &plan,
                            "external",
                            &format!("{tag}pay{i}n{n}.example"),
                        ))
                        .send()
                        .await?;
                    let v: Value = r.json().await?;
                    if let Some(iid) = v.get("invoice_id").and_then(Value::as_i64) {
                        queues
                            .get(i)
                            .ok_or_else(|| anyhow::anyhow!("no queue for payer {i}"))?
                            .lock()
                            .map_err(|_| anyhow::anyhow!("queue lock"))?
                            .push((p.key.clone(), iid.to_string()));
                    }
                }
                Ok::<(), anyhow::Error>(())
            }));
        }
        for t in prep {
            t.await??;
        }
        for p in &payers {
            check(
                client
                    .post(format!(
                        "{}/v1/admin/organizations/{}/credit",
                        target.base, p.org
                    ))
                    .bearer_auth(&target.admin_key)
                    .json(&json!({"amount": "100000000.00"}))
                    .send()
                    .await?,
                "credit",
            )
            .await?;
        }
        eprintln!("bench: pay_credit");
        let bases = bases.clone();
        results.push(
            drive(
                PAY_CREDIT,
                opts.connections,
                opts.duration,
                move |i, _, c| {
                    let next = queues
                        .get(i)
                        .and_then(|q| q.lock().ok().and_then(|mut q| q.pop()));
                    let base = bases.get(i % bases.len().max(1)).cloned();
                    async move {
                        let (Some((key, iid)), Some(base)) = (next, base) else {
                            bail!("no invoice left");
                        };
                        let r = c
                            .get(format!("{base}/apiv2/billing/pay/prepay/{iid}"))
                            .header("X-API-KEY", key)
                            .send()
                            .await;
                        Ok(r.is_ok_and(|r| r.status().is_success()))
                    }
                },
            )
            .await?,
        );
    }

    let rss = target.peak_rss_mb();
    // The servers stop before the ceilings are measured: on PostgreSQL their pools would
    // hold connections the ceiling's clients need (found by review: 64 clients beside a
    // node's 32 exceeded a default `max_connections`, and the run was lost at its end).
    for mut t in others {
        t.kill().await?;
    }
    target.kill().await?;
    let (bare, bare_concurrent, plain) = match target.database_url.as_deref() {
        Some(u) => {
            eprintln!("bench: bare durable commits");
            let one = lodge_store::bare_commit_rate(u, 1, opts.duration).await?;
            let (many, plain) = if u.starts_with("postgres") {
                let many =
                    lodge_store::bare_commit_rate(u, opts.connections, opts.duration).await?;
                (Some(many), None)
            } else {
                eprintln!("bench: plain SQLite commit loop");
                let plain = lodge_store::plain_sqlite_commit_rate(u, opts.duration).await?;
                (None, Some(plain))
            };
            (Some(one), many, plain)
        }
        None => (None, None, None),
    };
    let healthz = results
        .iter()
        .find(|r| r.name == "healthz")
        .map(|r| r.throughput);
    rate_scenarios(
        &mut results,
        Ceilings {
            healthz,
            plain_sqlite: plain,
            bare,
            bare_concurrent,
        },
        opts.connections,
    );
    Ok(Report {
        engine: engine.into(),
        nodes,
        connections: opts.connections,
        duration_secs: opts.duration.as_secs_f64(),
        orders_in_database_before: orders_before,
        bare_commits_per_sec: bare,
        bare_commits_per_sec_concurrent: bare_concurrent,
        plain_sqlite_commits_per_sec: plain,
        server_peak_rss_mb: rss,
        scenarios: results,
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lodge-bench-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn count_orders(url: &str) -> anyhow::Result<i64> {
    let store = lodge_store::Store::connect(url).await?;
    let n = lodge_store::checks::order_count(store.reader()).await?;
    store.close().await;
    Ok(n)
}

/// Prints a report as a table.
pub fn print_table(r: &Report) {
    out!(
        "engine {}  nodes {}  connections {}  duration {:.0}s  orders already in the database {}",
        r.engine,
        r.nodes,
        r.connections,
        r.duration_secs,
        r.orders_in_database_before
    );
    if let Some(p) = r.plain_sqlite_commits_per_sec {
        out!("ceiling: plain SQLite one-row commit loop {p:.0}/s (rowid table, WAL, synchronous=FULL)");
        if let Some(b) = r.bare_commits_per_sec {
            out!(
                "        Lodge's batch writer, one row per commit: {b:.0}/s ({:.2}x the plain loop)",
                b / p.max(1e-9)
            );
        }
    } else if let Some(b) = r.bare_commits_per_sec {
        out!("bare durable commits: {b:.0}/s (1 connection)");
    }
    if let Some(b) = r.bare_commits_per_sec_concurrent {
        out!(
            "ceiling: one-row commits from {} clients (pgbench-style): {b:.0}/s",
            r.connections
        );
    }
    if let Some(m) = r.server_peak_rss_mb {
        out!("server peak RSS: {m:.1} MiB");
    }
    // One column a ceiling the run measured (in `Ratios::in_order`'s order), after the one
    // each goal is set against.
    let measured = [
        r.scenarios.iter().any(|s| s.name == "healthz"),
        r.plain_sqlite_commits_per_sec.is_some(),
        r.bare_commits_per_sec.is_some(),
        r.bare_commits_per_sec_concurrent.is_some(),
    ];
    let writer = if r.plain_sqlite_commits_per_sec.is_some() {
        "/writer"
    } else {
        "/1 conn"
    };
    let names = ["/healthz", "/plain", writer, "/N conn"];
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"));
    let mut head = format!(
        "{:<20} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "scenario",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "/ceiling"
    );
    for (name, _) in names.iter().zip(measured).filter(|(_, m)| *m) {
        head.push_str(&format!(" {name:>8}"));
    }
    out!("{head}");
    for s in &r.scenarios {
        let mut line = format!(
            "{:<20} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9}",
            s.name,
            s.requests,
            s.errors,
            s.throughput,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.p999_ms,
            ratio(s.ratio_to_ceiling)
        );
        for (x, _) in s
            .ratios
            .in_order()
            .into_iter()
            .zip(measured)
            .filter(|(_, m)| *m)
        {
            line.push_str(&format!(" {:>8}", ratio(x)));
        }
        out!("{line}");
    }
    if measured.contains(&true) {
        let ceilings = Ceilings {
            healthz: None,
            plain_sqlite: r.plain_sqlite_commits_per_sec,
            bare: r.bare_commits_per_sec,
            bare_concurrent: r.bare_commits_per_sec_concurrent,
        };
        out!(
            "/ceiling: against the ceiling the goal is set against (reads: /healthz; writes: {})",
            ceilings.for_writes(r.connections).2
        );
    }
}

/// The secret key benchmark servers run with (fill and load must agree).
pub const BENCH_SECRET_KEY: &str =
    "4242424242424242424242424242424242424242424242424242424242424242";

/// Fills a database with `orders` paid-by-nobody orders (each with its invoice, lines and
/// hosting account), in large transactions, through the same service code as the API.
/// What `bench fill` and `bench simulate` say when the database they were given is not one
/// they may fill.
pub(crate) const OWN_DATABASE: &str = "the benchmarks fill a database of their own, opened \
     with their own key and seeded with the demo: give them one with --database-url (a new \
     SQLite file, or an empty PostgreSQL database), never an installation's";

pub async fn fill(database_url: &str, orders: u64) -> anyhow::Result<()> {
    use lodge_services::orders::{DbChecks, DomainPlan, OrderForm, OrderSource, ToPlace};
    use lodge_services::tenancy::{NewOrganization, NewUser};

    let cfg = crate::Config::resolve(
        crate::config::Overrides {
            database_url: Some(database_url.to_owned()),
            secret_key: Some(BENCH_SECRET_KEY.to_owned()),
            ..Default::default()
        },
        crate::config::FileConfig::default(),
    );
    // A database of the benchmarks' own, never an installation's: the fill seeds the demo
    // (a staff login with a published password) and seals the benchmarks' key (found by
    // the operator audit: it ran on the configured database, `lodge.db` by default).
    let lodge = crate::open(&cfg, crate::system_clock())
        .await
        .context(OWN_DATABASE)?;
    lodge.demo_allowed().await.context(OWN_DATABASE)?;
    lodge.seed_demo().await?;
    let tag = format!("{:x}", rand::random::<u32>());
    let user = lodge
        .create_user(NewUser {
            email: &format!("fill-{tag}@bench.lodge.test"),
            name: "fill",
            password: None,
            is_staff: false,
        })
        .await?;
    let org = lodge
        .create_organization(NewOrganization {
            name: &format!("fill {tag}"),
            organization_type: None,
            company_name: None,
            country: None,
            owner: Some(user.id),
        })
        .await?;
    let max = Some(lodge_services::tenancy::MAX_QUOTA);
    lodge
        .set_quotas(
            org.id,
            [
                ("user_quota", None),
                ("project_quota", None),
                ("instance_quota", max),
                ("domain_quota", max),
            ],
        )
        .await?;
    let key = lodge
        .create_org_key(org.id, None, "fill", None, None)
        .await?;
    let principal = lodge.authenticate_key(&key.secret).await?;
    let access = lodge.access(&principal, org.id).await?;
    let project = lodge_store::orgs::default_project(&mut lodge.store.read_conn().await?, org.id)
        .await?
        .context("default project")?;
    let plan = lodge
        .catalog()
        .await?
        .listed_plans()
        .find(|p| p.monthly().is_some())
        .map(|p| p.row.legacy_id)
        .context("no plan")?;
    let template = lodge
        .validate_order(
            &access,
            &project,
            &OrderForm {
                plan_legacy_id: Some(plan),
                domain_source: Some("external".into()),
                domain_name: Some(format!("fill-{tag}.example")),
                ..Default::default()
            },
            OrderSource::V1,
            DbChecks::Now,
        )
        .await?;
    let env = lodge.write_env("bench-fill");
    let start = Instant::now();
    let batch = 2000u64;
    let mut done = 0u64;
    while done < orders {
        let n = batch.min(orders - done);
        let mut these = Vec::with_capacity(usize::try_from(n)?);
        for i in done..done + n {
            let mut o = template.clone();
            o.domain = DomainPlan::External {
                name: lodge_core::DomainName::parse(&format!("f{tag}-{i}.example"))?,
            };
            these.push(ToPlace {
                env: env.clone(),
                order: o,
            });
        }
        // The path group commits take (the service's own): the orders share a
        // transaction, the invoices are numbered in one step; on SQLite in one call on the
        // batch writer.
        let placed = lodge.place_orders(these).await?;
        if let Some(Err(e)) = placed.into_iter().find(Result::is_err) {
            anyhow::bail!("an order of the fill was refused: {e}");
        }
        done += n;
        if done % 50_000 < batch || done == orders {
            eprintln!(
                "fill: {done} orders ({:.0}/s)",
                done as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    lodge.store.close().await;
    // The database is sealed with the benchmarks' key: said, so that it can be served and
    // looked at (found by the scale audit: `keys create` on it failed, naming no key).
    eprintln!(
        "fill: done; the database is sealed with the benchmarks' key: serve it or run commands on it with LODGE_SECRET_KEY={BENCH_SECRET_KEY}"
    );
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct CrashReport {
    pub kills: usize,
    pub orders_acknowledged: usize,
    pub problems: Vec<String>,
}

/// Runs order load, `SIGKILL`s the server at random moments `kills` times (restarting it),
/// then checks that every order answered `201` exists with its invoice, lines, hosting and
/// ledger entries, and that nothing exists half-written.
pub async fn crash(
    database_url: Option<String>,
    kills: usize,
    connections: usize,
) -> anyhow::Result<CrashReport> {
    use std::sync::atomic::AtomicBool;
    let dir = tempfile_dir()?;
    let mut target = Target::spawn(database_url, &dir).await?;
    let db = target.database_url.clone().context("database")?;
    let client = reqwest::Client::new();
    let tag = format!("{:x}", rand::random::<u32>());
    // Half the load is paid from credit at once (ledger entries, activation, jobs); half
    // stays pending with an invoice to pay.
    let payer = make_customer(&client, &target, &format!("crash{tag}a"), "10000000.00").await?;
    let pending = make_customer(&client, &target, &format!("crash{tag}b"), "0").await?;
    let plan = Arc::new(plan_id(&client, &target, &payer.key).await?);
    let customers = Arc::new([payer, pending]);
    let acked: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..connections {
        let (base, plan, cs, acked, stop, tag) = (
            target.base.clone(),
            plan.clone(),
            customers.clone(),
            acked.clone(),
            stop.clone(),
            tag.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let [payer, pending] = &*cs;
                let cu = if n % 2 == 1 { pending } else { payer };
                n += 1;
                let r = c
                    .post(format!(
                        "{base}/v1/organizations/{}/projects/{}/hosting/order",
                        cu.org, cu.project
                    ))
                    .bearer_auth(&cu.key)
                    .json(&order_body(
                        &plan,
                        "external",
                        &format!("c{tag}t{t}n{n}.example"),
                    ))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        if let Ok(v) = r.json::<Value>().await {
                            if let Ok(mut a) = acked.lock() {
                                a.push(v);
                            }
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for k in 0..kills {
        let wait = rand::thread_rng().gen_range(200..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        target.kill().await?;
        eprintln!("crash: SIGKILL {} of {kills}", k + 1);
        target.start().await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    target.kill().await?;
    let acked = acked.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let problems = verify(&db, &acked).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(CrashReport {
        kills,
        orders_acknowledged: acked.len(),
        problems,
    })
}

/// Checks acknowledged orders and the database's own consistency.
pub async fn verify(database_url: &str, acked: &[Value]) -> anyhow::Result<Vec<String>> {
    let store = lodge_store::Store::connect(database_url).await?;
    let mut problems = Vec::new();
    for a in acked {
        let order = lodge_store::checks::AcknowledgedOrder {
            order_id: a["order_id"].as_i64().context("order_id")?,
            hosting_id: a["hosting_id"].as_str().context("hosting_id")?.to_owned(),
            invoice_id: a["invoice_id"].as_i64(),
            credit_applied: a["credit_applied"].as_f64().is_some_and(|c| c > 0.0),
        };
        problems.extend(lodge_store::checks::order_problems(store.reader(), &order).await?);
    }
    problems.extend(lodge_store::checks::consistency_problems(store.reader()).await?);
    store.close().await;
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::{check_scenarios, parse_mix, pick, rate_scenarios, Ceilings, Kind, Ratios};

    fn row(name: &str, throughput: f64) -> super::ScenarioResult {
        super::ScenarioResult {
            name: name.into(),
            requests: 1,
            errors: 0,
            throughput,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            p999_ms: 1.0,
            ratio_to_ceiling: None,
            ceiling: None,
            ratios: Ratios::default(),
        }
    }

    /// Every row against every ceiling measured (a mix's too); reads' goal against
    /// `/healthz`, writes' against SQLite's plain loop or else PostgreSQL's N clients; a
    /// ceiling measured at zero gives no ratio.
    #[test]
    fn each_scenario_is_rated_against_each_ceiling() {
        let mut rows = vec![
            row("healthz", 1000.0),
            row("plans", 800.0),
            row("order_external", 50.0),
            row("pay_credit", 25.0),
            row("mix/order_external", 10.0),
        ];
        let sqlite = Ceilings {
            healthz: Some(1000.0),
            plain_sqlite: Some(100.0),
            bare: Some(50.0),
            bare_concurrent: None,
        };
        rate_scenarios(&mut rows, sqlite, 64);
        assert_eq!(
            rows[2].ratios,
            Ratios {
                healthz: Some(0.05),
                plain_sqlite_commits: Some(0.5),
                bare_commits: Some(1.0),
                bare_commits_concurrent: None,
            }
        );
        assert_eq!(rows[0].ratios.healthz, Some(1.0));
        assert_eq!(rows[0].ratio_to_ceiling, None);
        assert_eq!(rows[1].ratio_to_ceiling, Some(0.8));
        assert_eq!(rows[1].ceiling.as_deref(), Some("healthz"));
        assert_eq!(rows[3].ratio_to_ceiling, Some(0.25));
        assert_eq!(
            rows[3].ceiling.as_deref(),
            Some("plain SQLite one-row commit loop")
        );
        assert_eq!(rows[4].ratios.plain_sqlite_commits, Some(0.1));
        assert_eq!(rows[4].ratio_to_ceiling, None);

        let mut rows = vec![row("order_register", 40.0)];
        let postgres = Ceilings {
            healthz: Some(0.0),
            plain_sqlite: None,
            bare: Some(20.0),
            bare_concurrent: Some(80.0),
        };
        rate_scenarios(&mut rows, postgres, 8);
        assert_eq!(rows[0].ratio_to_ceiling, Some(0.5));
        assert_eq!(
            rows[0].ceiling.as_deref(),
            Some("one-row commits from 8 clients")
        );
        assert_eq!(rows[0].ratios.bare_commits, Some(2.0));
        assert_eq!(rows[0].ratios.healthz, None);
    }

    #[test]
    fn a_mix_is_parsed_with_its_weights_and_refused_when_wrong() {
        assert_eq!(
            parse_mix("storefront=8, order_external=1,order_register").unwrap(),
            vec![
                (Kind::Storefront, 8),
                (Kind::OrderExternal, 1),
                (Kind::OrderRegister, 1)
            ]
        );
        for bad in [
            "",
            "storefront=0",
            "storefront=x",
            "storefront=1001",
            "pay_credit=1",
            "nothing=2",
            "plans,plans=2",
        ] {
            assert!(parse_mix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scenario_names_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        check_scenarios(&names(&["healthz", "order_keyed", "pay_credit"])).unwrap();
        check_scenarios(&[]).unwrap();
        for bad in ["nonsense", "mix", "order-external"] {
            assert!(check_scenarios(&names(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_kind_comes_up_its_weight_in_every_cycle() {
        let mix = parse_mix("storefront=5,order_keyed=2,healthz=1").unwrap();
        for start in [0u64, 3, 7, 1_000_003] {
            let mut seen = [0u32; 3];
            for slot in start..start + 8 {
                seen[pick(&mix, slot)] += 1;
            }
            assert_eq!(seen, [5, 2, 1], "from slot {start}");
        }
    }
}

/// What `lodge bench renewals` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RenewalBench {
    pub engine: String,
    pub services: u64,
    pub organizations: u64,
    pub due: u64,
    /// Bulk insert of the services, their organizations, projects and orders.
    pub fill_seconds: f64,
    /// Hosting rows bulk-inserted per second (with their organizations' rows).
    pub bulk_rows_per_second: f64,
    /// The renewal pass that bills the due services.
    pub pass_seconds: f64,
    pub invoices: usize,
    pub paid_from_credit: usize,
    pub failed: usize,
    pub invoices_per_second: f64,
    /// A second pass the same day, with nothing left to bill: its cost on this database.
    pub idle_pass_seconds: f64,
}

/// The scheduler's renewal pass on a database holding `services` accounts of which `due`
/// (one per organization) are due today: bulk insert, then one pass timed, then a second
/// (idle) one. On `database_url` (a fresh database: it is filled), or a fresh SQLite file.
pub async fn renewals(
    database_url: Option<String>,
    services: u64,
    due: u64,
) -> anyhow::Result<RenewalBench> {
    let (url, scratch) = match database_url {
        Some(u) => (u, None),
        None => {
            let dir = tempfile_dir()?;
            (format!("sqlite://{}/renewals.db", dir.display()), Some(dir))
        }
    };
    let cfg = crate::Config::resolve(
        crate::config::Overrides {
            database_url: Some(url.clone()),
            secret_key: Some(BENCH_SECRET_KEY.to_owned()),
            ..Default::default()
        },
        crate::config::FileConfig::default(),
    );
    let today: jiff::civil::Date = "2026-12-03".parse()?;
    let clock = lodge_core::ManualClock::new(
        today.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp() + jiff::SignedDuration::from_hours(12),
    );
    let lodge = crate::open(&cfg, std::sync::Arc::new(clock)).await?;
    lodge.seed_demo().await?;
    let plan = lodge
        .catalog()
        .await?
        .listed_plans()
        .find(|p| p.row.slug == "starter")
        .map(|p| p.row.id.to_string())
        .ok_or_else(|| anyhow::anyhow!("the demo catalog has no starter plan"))?;
    let horizon = lodge.settings.policy.billing_horizon(today).to_string();
    let later = today
        .checked_add(jiff::Span::new().days(lodge.settings.policy.lead_days + 1))?
        .to_string();
    eprintln!("filling {services} services ({due} due today)…");
    let filled = lodge_store::fill_services(
        &lodge.store,
        services,
        due,
        &horizon,
        &later,
        &plan,
        lodge.now_us(),
    )
    .await?;
    eprintln!("filled in {:.1} s; billing…", filled.seconds);
    let start = std::time::Instant::now();
    let pass = lodge.bill_renewals().await?;
    let pass_seconds = start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    let idle = lodge.bill_renewals().await?;
    let idle_pass_seconds = start.elapsed().as_secs_f64();
    if idle.invoices != 0 {
        anyhow::bail!("a second pass billed {} invoices again", idle.invoices);
    }
    #[allow(clippy::cast_precision_loss)]
    let per_second = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    #[allow(clippy::cast_precision_loss)]
    let report = RenewalBench {
        engine: format!("{:?}", lodge.store.engine()).to_lowercase(),
        services,
        organizations: filled.organizations,
        due,
        fill_seconds: filled.seconds,
        bulk_rows_per_second: per_second(
            (filled.services + filled.organizations * 4) as f64,
            filled.seconds,
        ),
        pass_seconds,
        invoices: pass.invoices,
        paid_from_credit: pass.paid_from_credit,
        failed: pass.failed,
        invoices_per_second: per_second(pass.invoices as f64, pass_seconds),
        idle_pass_seconds,
    };
    lodge.store.close().await;
    if let Some(dir) = scratch {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(report)
}
