//! Issue: provisioning (worker, scheduler, servers, the nginx driver).
//!
//! The worker and the scheduler never run in the background here: tests move the manual
//! clock and call `Worker::run_once` / `Lodge::schedule_due` themselves. Only the real nginx
//! is waited for in real time (a reload takes effect asynchronously), for a few seconds.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use lodge_services::drivers::nginx::NginxConfig;
use lodge_services::drivers::{Account, DriverError, Provisioner};
use lodge_services::provisioning::Worker;
use lodge_services::Lodge;
use lodge_testkit::nginx::{http_get, nginx_binary, NginxInstance};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{
    self, add_credit, hosting, hosting_path, invoice, order_body, order_status, starter, str_of,
    v2, Auth, Engine, Options, TestApp, STARTER_PACKAGE,
};
use crate::on_both_engines;

on_both_engines!(
    a_panicking_job_fails_and_the_worker_goes_on,
    flaky_driver_makes_one_account,
    failing_driver_marks_the_account_failed,
    killed_worker_job_is_taken_again_after_its_lease,
    dead_worker_process_claims_end_at_start_on_sqlite,
    unpaid_order_is_cancelled_once_by_two_schedulers,
    end_of_period_cancellation_terminates_at_the_due_date,
    servers_are_managed_and_full_servers_refuse_orders,
    capacity_holds_under_concurrent_orders,
    withdrawn_cancellation_stops_a_queued_termination,
    immediate_cancellation_terminates_now,
    staff_give_a_reason_for_a_suspension_and_nothing_else,
    cancelling_now_while_staff_terminate_terminates_once,
    two_workers_never_run_the_same_job,
    a_job_whose_lease_ran_out_while_it_waited_runs_once,
    a_job_longer_than_its_lease_keeps_it,
    a_job_that_hangs_is_stopped_and_retried,
    an_error_is_cleared_once_its_step_is_done,
    webhook_deliveries_have_a_lane_of_their_own,
    partial_server_updates_at_once_keep_each_others_change,
);

on_both_engines!(
    engine: nginx_site_lifecycle,
    an_overdue_renewal_suspends_the_nginx_site_until_paid,
    provisioning_without_nginx_fails_visibly
);

// ---- helpers ----

const PROVISION: &str = "provision_hosting";
const SERVERS_FULL: &str = "All webhosting servers are currently full.";

fn order_path(app: &TestApp) -> String {
    format!(
        "/v1/organizations/{}/projects/{}/hosting/order",
        app.org_id(),
        app.project_id()
    )
}

fn external(app: &TestApp, domain: &str) -> Value {
    json!({ "plan_id": starter(app), "domain_source": "external", "domain_name": domain })
}

/// Orders `domain` (external) on Starter; the order must be placed.
async fn order(app: &TestApp, domain: &str) -> Value {
    let (status, o) = app
        .post(&order_path(app), &app.key(), &external(app, domain))
        .await;
    assert_eq!(status, StatusCode::CREATED, "order {domain}: {o}");
    o
}

/// An order paid from credit: active, its account waiting for the worker.
pub(crate) async fn order_paid(app: &TestApp, domain: &str) -> Value {
    let o = order(app, domain).await;
    assert_eq!(o["status"], "active", "paid from credit: {o}");
    assert_eq!(o["amount_due"].as_f64(), Some(0.0), "{o}");
    assert_eq!(o["hosting_status"], "provisioning", "{o}");
    o
}

/// The statuses an account went through, oldest first.
fn history(h: &Value) -> Vec<String> {
    h["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {h}"))
        .iter()
        .map(|e| str_of(e, "to_status").to_owned())
        .collect()
}

/// The statuses of an account paid when it was ordered, from `provisioning` on (whether the
/// order and its payment show as one entry or as `pending` then `provisioning`).
fn paid_history(h: &Value) -> Vec<String> {
    let mut all = history(h);
    if all.first().map(String::as_str) == Some("pending")
        && all.get(1).map(String::as_str) == Some("provisioning")
    {
        all.remove(0);
    }
    assert_eq!(
        all.first().map(String::as_str),
        Some("provisioning"),
        "paid at once: {h}"
    );
    all
}

/// A staff operation on a hosting account (`suspend`, `unsuspend`, `terminate`, `retry`).
pub(crate) async fn staff(app: &TestApp, id: &str, action: &str) -> (StatusCode, Value) {
    app.post(
        &format!("/v1/admin/hosting/{id}/{action}"),
        &app.admin_key(),
        &json!({}),
    )
    .await
}

/// The jobs in a status, through the admin API.
async fn jobs(app: &TestApp, status: &str) -> Vec<Value> {
    let (code, body) = app
        .get(&format!("/v1/admin/jobs?status={status}"), &app.admin_key())
        .await;
    assert_eq!(code, StatusCode::OK, "jobs {status}: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("jobs: {body}"))
        .clone()
}

/// The `kind` jobs for one hosting account among `list`.
fn jobs_for<'a>(list: &'a [Value], kind: &str, hosting_id: &str) -> Vec<&'a Value> {
    list.iter()
        .filter(|j| j["kind"] == kind && j["payload"]["hosting_id"] == hosting_id)
        .collect()
}

/// One worker round that must not fail; returns how many jobs ran.
async fn run(worker: &Worker) -> usize {
    worker.run_once().await.expect("worker round")
}

/// Rows of a query returning one count.
async fn count_where(app: &TestApp, sql: &str, arg: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .bind(arg.to_owned())
        .fetch_one(app.lodge.store.reader())
        .await
        .expect("count")
}

/// Moves the clock past any retry backoff (at most an hour and 20 %).
pub(crate) fn past_backoff(app: &TestApp) {
    app.clock.advance(SignedDuration::from_hours(2));
}

/// Noon UTC of a `YYYY-MM-DD` date, shifted by `days`.
pub(crate) fn noon(date: &str, days: i64) -> jiff::Timestamp {
    let d: jiff::civil::Date = date.parse().expect("a date");
    let d = d
        .checked_add(jiff::Span::new().days(days))
        .expect("date in range");
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .expect("zoned")
        .timestamp()
        + SignedDuration::from_hours(12)
}

// ---- a fake driver ----

/// What the fake panel saw.
#[derive(Debug, Default)]
pub(crate) struct FakeState {
    /// `create` calls still to fail.
    failures_left: usize,
    always_fail: bool,
    /// `create` calls still to panic (a bug in a driver).
    panics_left: usize,
    create_calls: usize,
    /// Successful `create` calls per username: an account made twice shows as 2.
    created: HashMap<String, usize>,
    /// Other operations, in order: (operation, username).
    pub(crate) ops: Vec<(&'static str, String)>,
    /// Usernames an operation is running for right now.
    in_flight: HashSet<String>,
    /// Usernames found already in flight when an operation began.
    overlaps: Vec<String>,
    /// Operations pair up: each waits (a bounded number of scheduler yields) for its partner
    /// to arrive, so that two workers finish their jobs, and claim the next ones, together.
    rendezvous: bool,
    arrivals: usize,
    /// Run (once) at the start of the next `create`, before it does anything.
    pub(crate) on_next_create: Option<Hook>,
    /// Other operations (suspend, unsuspend, terminate, …) still to fail.
    op_failures_left: usize,
}

/// Something a test does while the fake panel works.
pub(crate) struct Hook(
    pub(crate) Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>,
);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// A panel that counts what it is asked to do; registered as `nginx`, so the demo server
/// `local-nginx` uses it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeDriver(Arc<Mutex<FakeState>>);

const FAKE_ERROR: &str = "the fake panel refused the request";

type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DriverError>> + Send + 'a>>;

impl FakeDriver {
    fn failing_first(n: usize) -> Self {
        let d = FakeDriver::default();
        d.state().failures_left = n;
        d
    }

    fn always_failing() -> Self {
        let d = FakeDriver::default();
        d.state().always_fail = true;
        d
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the node's `nginx` driver with this one.
    /// Successful `create` calls, all accounts together.
    pub(crate) fn creates(&self) -> usize {
        self.state().created.values().sum()
    }

    pub(crate) fn install(&self, lodge: &Lodge) {
        lodge.drivers.register(Arc::new(self.clone()));
    }

    fn created(&self) -> HashMap<String, usize> {
        self.state().created.clone()
    }

    async fn op(&self, op: &'static str, a: &Account) -> Result<(), DriverError> {
        if op == "create" {
            let hook = self.state().on_next_create.take();
            if let Some(Hook(hook)) = hook {
                hook().await;
            }
        }
        let ticket = {
            let mut s = self.state();
            if !s.in_flight.insert(a.username.clone()) {
                s.overlaps.push(a.username.clone());
            }
            s.arrivals += 1;
            s.arrivals
        };
        // Let other tasks run while "the panel works" (and, paired, until the partner came).
        let partner = ticket.div_ceil(2) * 2;
        for i in 0..20_000 {
            tokio::task::yield_now().await;
            let waiting = {
                let s = self.state();
                s.rendezvous && s.arrivals < partner
            };
            if i >= 4 && !waiting {
                break;
            }
        }
        let mut s = self.state();
        s.in_flight.remove(&a.username);
        if op != "create" {
            if s.op_failures_left > 0 {
                s.op_failures_left -= 1;
                return Err(DriverError(FAKE_ERROR.to_owned()));
            }
            s.ops.push((op, a.username.clone()));
            return Ok(());
        }
        s.create_calls += 1;
        if s.panics_left > 0 {
            s.panics_left -= 1;
            drop(s);
            panic!("the fake panel's driver has a bug");
        }
        if s.always_fail || s.failures_left > 0 {
            s.failures_left = s.failures_left.saturating_sub(1);
            return Err(DriverError(FAKE_ERROR.to_owned()));
        }
        *s.created.entry(a.username.clone()).or_default() += 1;
        Ok(())
    }
}

// `Provisioner` is an `async_trait`; this is its expansion, written out.
impl Provisioner for FakeDriver {
    fn name(&self) -> &str {
        "nginx"
    }
    fn create<'s, 'a, 'f>(&'s self, a: &'a Account) -> DriverFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.op("create", a))
    }
    fn suspend<'s, 'a, 'f>(&'s self, a: &'a Account) -> DriverFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.op("suspend", a))
    }
    fn unsuspend<'s, 'a, 'f>(&'s self, a: &'a Account) -> DriverFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.op("unsuspend", a))
    }
    fn terminate<'s, 'a, 'f>(&'s self, a: &'a Account) -> DriverFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.op("terminate", a))
    }
    fn change_package<'s, 'a, 'p, 'f>(
        &'s self,
        _a: &'a Account,
        _package: &'p str,
    ) -> DriverFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        'p: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(()) })
    }
    fn change_password<'s, 'a, 'p, 'f>(
        &'s self,
        _a: &'a Account,
        _password: &'p str,
    ) -> DriverFuture<'f, ()>
    where
        's: 'f,
        'a: 'f,
        'p: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(()) })
    }
    fn login_url<'s, 'a, 'f>(&'s self, _a: &'a Account) -> DriverFuture<'f, Option<String>>
    where
        's: 'f,
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async { Ok(None) })
    }
}

// ---- 1. the real nginx ----

/// Polls nginx until `ok` holds for five answers in a row, for up to 5 s; returns the last
/// answer. A reload takes effect asynchronously, and for a moment old workers may still
/// answer with the previous configuration.
pub(crate) async fn page_until(
    port: u16,
    host: &str,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut streak = 0;
    loop {
        let (status, body) = http_get(port, host, "/").await.expect("GET from nginx");
        if ok(status, &body) {
            streak += 1;
            if streak == 5 {
                return (status, body);
            }
        } else {
            streak = 0;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: http://{host}/ answered {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `.conf` files in the sites directory.
fn site_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".conf"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Order → pay → provision → welcome page; suspend → suspension page; unsuspend → back;
/// terminate → the site is gone and its files archived. Runs `cargo test nginx`.
async fn nginx_site_lifecycle(engine: Engine) {
    let Some((base, nginx, cfg, sites)) = real_nginx() else {
        return;
    };
    let opts = Options {
        nginx: Some(cfg.clone()),
        ..Default::default()
    };
    harness::run(engine, opts, |app| {
        nginx_site_lifecycle_on(app, &nginx, &cfg, &sites)
    })
    .await;
    drop(nginx);
    drop(base);
}

/// A real nginx on a loopback port serving a sites directory in a temp dir, and the
/// driver's configuration for it; `None` (skipped, or failed under
/// `LODGE_REQUIRE_SERVICES=1`) without an nginx binary.
pub(crate) fn real_nginx() -> Option<(tempfile::TempDir, NginxInstance, NginxConfig, PathBuf)> {
    let base = tempfile::tempdir().expect("temp dir");
    let sites = base.path().join("sites");
    std::fs::create_dir_all(&sites).expect("sites dir");
    let sites = sites.canonicalize().expect("sites dir");
    let nginx = match NginxInstance::start(&sites) {
        Ok(Some(n)) => n,
        Ok(None) => {
            lodge_testkit::skip_or_fail("nginx", "nginx binary not found");
            return None;
        }
        Err(e) => panic!("nginx did not start: {e:#}"),
    };
    let port = nginx.port();
    let binary = nginx_binary().expect("nginx binary");
    let prefix = format!("{}/", nginx.prefix().display());
    let error_log = nginx.prefix().join("logs/error.log");
    let cfg = NginxConfig {
        binary,
        args: vec![
            "-c".into(),
            nginx.conf_path().display().to_string(),
            "-p".into(),
            prefix,
            "-e".into(),
            error_log.display().to_string(),
        ],
        sites_dir: sites.clone(),
        web_root: base.path().join("www"),
        archive_dir: base.path().join("archive"),
        listen: format!("127.0.0.1:{port}"),
        tls_listen: "443".into(),
    };
    Some((base, nginx, cfg, sites))
}

/// Recurring billing on the real nginx: a renewal left unpaid 7 days past its due date
/// suspends the site (the suspension page is served), and its payment brings it back.
async fn an_overdue_renewal_suspends_the_nginx_site_until_paid(engine: Engine) {
    let Some((base, nginx, cfg, _sites)) = real_nginx() else {
        return;
    };
    let opts = Options {
        nginx: Some(cfg.clone()),
        ..Default::default()
    };
    let port = nginx.port();
    harness::run(engine, opts, |app| async move {
        let domain = "overdue-1.test";
        // Exactly the first month: the renewal finds no credit.
        add_credit(&app, &app.org_id(), "5.00").await;
        let o = order_paid(&app, domain).await;
        let id = str_of(&o, "hosting_id").to_owned();
        let worker = Worker::new(app.lodge.clone(), "node-1");
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        let welcome = format!("Welcome to {domain}");
        page_until(port, domain, "welcome page", |s, b| {
            s == 200 && b.contains(&welcome)
        })
        .await;
        let due = str_of(&h, "next_due_date").to_owned();
        // The renewal is issued 14 days ahead, unpaid; 7 days past due the scheduler
        // suspends the account and the worker the site.
        app.clock.set(noon(&due, -14));
        app.lodge.schedule_due().await.expect("scheduler pass");
        drain(worker.clone()).await;
        let invoice: i64 = sqlx::query_scalar(
            "SELECT id FROM invoices WHERE kind = 'renewal' AND status = 'unpaid'",
        )
        .fetch_one(app.lodge.store.reader())
        .await
        .expect("an unpaid renewal");
        for day in [1, 7] {
            app.clock.set(noon(&due, day));
            app.lodge.schedule_due().await.expect("scheduler pass");
        }
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "suspended", "{h}");
        page_until(port, domain, "suspension page", |s, b| {
            s == 200 && b.contains("This site is suspended")
        })
        .await;
        // Paid by bank transfer: unsuspended, the site served again.
        let (status, p) = app
            .post(
                &format!("/v1/admin/invoices/{invoice}/payments"),
                &app.admin_key(),
                &json!({ "amount": "5.00", "method": "bank_transfer", "reference": "NGX-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        drain(worker.clone()).await;
        let h = hosting(&app, &id).await;
        assert_eq!(h["status"], "active", "{h}");
        page_until(port, domain, "welcome page again", |s, b| {
            s == 200 && b.contains(&welcome)
        })
        .await;
        app.stop().await;
    })
    .await;
    drop(nginx);
    drop(base);
}

async fn nginx_site_lifecycle_on(
    app: TestApp,
    nginx: &NginxInstance,
    cfg: &NginxConfig,
    sites: &Path,
) {
    let port = nginx.port();
    let domain = "site-1.test";
    let www = format!("www.{domain}");
    let (status, _) = http_get(port, domain, "/").await.expect("GET");
    assert_eq!(status, 404, "no site before the order");

    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, domain).await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");

    // Provisioning.
    assert_eq!(run(&worker).await, 1, "the provisioning job ran");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert!(h["last_error"].is_null(), "{h}");
    assert_eq!(h["server"]["name"], "local-nginx", "{h}");
    let user = str_of(&h, "username").to_owned();
    assert!(!user.is_empty(), "{h}");
    assert_eq!(site_files(sites), vec![format!("{user}.conf")]);
    let conf = std::fs::read_to_string(sites.join(format!("{user}.conf"))).expect("site conf");
    assert!(
        conf.contains(&format!("listen 127.0.0.1:{port};")),
        "configured listen: {conf}"
    );
    let welcome = format!("Welcome to {domain}");
    for host in [domain, www.as_str()] {
        page_until(port, host, "welcome page", |s, b| {
            s == 200 && b.contains(&welcome)
        })
        .await;
    }
    let (status, _) = http_get(port, "other.test", "/").await.expect("GET");
    assert_eq!(status, 404, "other names still go to the default server");

    // Suspension.
    let (status, h) = staff(&app, &id, "suspend").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    assert_eq!(h["status"], "active", "the worker suspends it: {h}");
    // Another action while that one is queued: refused, not queued behind it.
    for action in ["suspend", "unsuspend", "terminate"] {
        let (status, body) = staff(&app, &id, action).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{action} while a suspend is queued: {body}"
        );
        assert_eq!(
            str_of(&body, "detail"),
            "A suspension of this account is under way: try again once it is done.",
            "{body}"
        );
    }
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    let last = h["history"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        last["actor"], "staff",
        "the customer sees staff acted, not which staff user: {h}"
    );
    let staff_view = crate::harness::staff_hosting(&app, &id).await;
    let last = staff_view["history"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or_default();
    assert!(
        last["actor"]
            .as_str()
            .unwrap_or_default()
            .starts_with("staff:"),
        "staff see who asked: {staff_view}"
    );
    let (_, body) = page_until(port, domain, "suspension page", |s, b| {
        s == 200 && b.contains("This site is suspended")
    })
    .await;
    assert!(!body.contains("Welcome"), "{body}");
    page_until(port, &www, "suspension page on www", |s, b| {
        s == 200 && b.contains("This site is suspended")
    })
    .await;
    let (status, body) = staff(&app, &id, "suspend").await;
    assert_eq!(status, StatusCode::CONFLICT, "suspending twice: {body}");

    // Back.
    let (status, h) = staff(&app, &id, "unsuspend").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "active");
    page_until(port, domain, "welcome page again", |s, b| {
        s == 200 && b.contains(&welcome)
    })
    .await;

    // Termination while another site's block is broken: `nginx -t` fails, so nothing
    // changes (the site is still served, its files in place) and the job retries.
    let broken = sites.join("zz-broken.conf");
    std::fs::write(&broken, "server { this is not nginx; }\n").expect("broken block");
    let (status, h) = staff(&app, &id, "terminate").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "termination failed: {h}");
    assert!(str_of(&h, "last_error").contains("nginx"), "{h}");
    assert!(
        sites.join(format!("{user}.conf")).is_file(),
        "the server block is put back"
    );
    assert!(
        cfg.web_root
            .join(&user)
            .join("public_html/index.html")
            .is_file(),
        "files stay until the termination succeeds"
    );
    let (status, body) = http_get(port, domain, "/").await.expect("GET");
    assert!(
        status == 200 && body.contains(&welcome),
        "still served: {status} {body}"
    );
    std::fs::remove_file(&broken).expect("remove the broken block");
    // An attempt killed between removing the block and reloading nginx leaves the block
    // gone and the site served (found by the crash audit: the retry, finding no block,
    // did not reload, and nginx served the terminated site until some other change).
    std::fs::remove_file(sites.join(format!("{user}.conf"))).expect("remove the block");
    let (status, body) = http_get(port, domain, "/").await.expect("GET");
    assert!(
        status == 200 && body.contains(&welcome),
        "still served without a reload: {status} {body}"
    );
    past_backoff(&app);
    assert_eq!(run(&worker).await, 1, "the termination retried");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    page_until(port, domain, "site gone", |s, _| s == 404).await;
    page_until(port, &www, "www gone", |s, _| s == 404).await;
    assert!(site_files(sites).is_empty(), "server block removed");
    assert!(
        !cfg.web_root.join(&user).exists(),
        "document root moved away"
    );
    // Gone from nginx itself, not only from disk: a page put back where its root was is
    // not served (nginx kept the block it was not told to drop).
    let stale = cfg.web_root.join(&user).join("public_html");
    std::fs::create_dir_all(&stale).expect("a root again");
    std::fs::write(stale.join("index.html"), "stale block").expect("a page");
    let (status, body) = http_get(port, domain, "/").await.expect("GET");
    assert_eq!(status, 404, "the block is gone from nginx: {body}");
    std::fs::remove_dir_all(cfg.web_root.join(&user)).expect("cleaned up");
    let archived: Vec<PathBuf> = std::fs::read_dir(&cfg.archive_dir)
        .expect("archive dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{user}-")))
        })
        .collect();
    assert_eq!(archived.len(), 1, "one archive: {archived:?}");
    let kept =
        std::fs::read_to_string(archived[0].join("public_html/index.html")).expect("archived page");
    assert!(kept.contains(&welcome), "{kept}");
    let (status, body) = staff(&app, &id, "terminate").await;
    assert_eq!(status, StatusCode::CONFLICT, "terminating twice: {body}");
    assert_eq!(run(&worker).await, 0, "nothing left to do");

    assert_eq!(
        paid_history(&h),
        [
            "provisioning",
            "active",
            "suspended",
            "active",
            "terminated"
        ],
        "{h}"
    );
    app.stop().await;
}

/// Without nginx, provisioning fails visibly, retries with backoff, ends `failed` with a
/// dead job, and staff can retry it; the order and its payment stand throughout.
async fn provisioning_without_nginx_fails_visibly(engine: Engine) {
    let base = tempfile::tempdir().expect("temp dir");
    let missing = base.path().join("no-such-nginx");
    let cfg = NginxConfig {
        binary: missing.clone(),
        args: vec![],
        sites_dir: base.path().join("sites"),
        web_root: base.path().join("www"),
        archive_dir: base.path().join("archive"),
        listen: "127.0.0.1:9".into(),
        tls_listen: "443".into(),
    };
    let opts = Options {
        nginx: Some(cfg.clone()),
        ..Default::default()
    };
    harness::run(engine, opts, |app| without_nginx_on(app, &cfg, &missing)).await;
}

async fn without_nginx_on(app: TestApp, cfg: &NginxConfig, missing: &Path) {
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "no-nginx.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let order_id = o["order_id"].as_i64().expect("order id");
    let invoice_id = o["invoice_id"].as_i64().expect("invoice id");
    assert_eq!(invoice(&app, invoice_id).await["status"], "paid");
    let worker = Worker::new(app.lodge.clone(), "node-1");

    // The first attempt: the error is on the account, which is still provisioning.
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "provisioning", "{h}");
    let err = str_of(&h, "last_error").to_owned();
    assert!(err.contains("nginx"), "{err}");
    assert!(
        err.contains(&missing.display().to_string()),
        "names the binary: {err}"
    );
    assert!(h["username"].is_null(), "{h}");
    assert!(
        site_files(&cfg.sites_dir).is_empty(),
        "the untested server block was withdrawn"
    );
    let queued = jobs(&app, "queued").await;
    let job = jobs_for(&queued, PROVISION, &id);
    assert_eq!(job.len(), 1, "{queued:?}");
    assert_eq!(job[0]["attempts"], 1, "{}", job[0]);
    assert_eq!(job[0]["last_error"], err.as_str(), "{}", job[0]);
    let job_id = job[0]["id"].as_i64().expect("job id");
    assert_eq!(run(&worker).await, 0, "the retry waits for its backoff");

    // Attempts 2..=8.
    for attempt in 2..=8 {
        past_backoff(&app);
        assert_eq!(run(&worker).await, 1, "attempt {attempt}");
        let h = crate::harness::staff_hosting(&app, &id).await;
        let expected = if attempt < 8 {
            "provisioning"
        } else {
            "failed"
        };
        assert_eq!(h["status"], expected, "after attempt {attempt}: {h}");
        assert!(str_of(&h, "last_error").contains("nginx"), "{h}");
    }
    let h = hosting(&app, &id).await;
    assert_eq!(history(&h).last().map(String::as_str), Some("failed"));
    let dead = jobs(&app, "dead").await;
    let job = jobs_for(&dead, PROVISION, &id);
    assert_eq!(job.len(), 1, "the job is dead: {dead:?}");
    assert_eq!(job[0]["id"], job_id);
    assert_eq!(job[0]["attempts"], 8);
    assert!(
        job[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("nginx")),
        "{}",
        job[0]
    );
    past_backoff(&app);
    assert_eq!(run(&worker).await, 0, "a dead job is not retried by itself");

    // The order and its payment stand.
    assert_eq!(order_status(&app, order_id).await, "active");
    assert_eq!(invoice(&app, invoice_id).await["status"], "paid");

    // Staff retry: back to provisioning, the same job queued with fresh attempts.
    let (status, h) = staff(&app, &id, "retry").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    assert_eq!(h["status"], "provisioning", "{h}");
    let (status, body) = staff(&app, &id, "retry").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "only a failed account: {body}"
    );
    assert!(jobs_for(&jobs(&app, "dead").await, PROVISION, &id).is_empty());
    let queued = jobs(&app, "queued").await;
    let job = jobs_for(&queued, PROVISION, &id);
    assert_eq!(job.len(), 1, "{queued:?}");
    assert_eq!(job[0]["id"], job_id, "the dead job itself is requeued");
    assert_eq!(job[0]["attempts"], 0);

    // Still no nginx: it fails again, visibly, and stays provisioning.
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "provisioning", "{h}");
    assert!(str_of(&h, "last_error").contains("nginx"), "{h}");

    // With a working driver the next attempt succeeds and clears the error.
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    past_backoff(&app);
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert!(h["last_error"].is_null(), "{h}");
    assert_eq!(fake.created().len(), 1);
    assert_eq!(
        paid_history(&h),
        ["provisioning", "failed", "provisioning", "active"],
        "{h}"
    );
    assert_eq!(order_status(&app, order_id).await, "active");
    app.stop().await;
}

// ---- 2. retries ----

/// A driver that fails twice then succeeds: one account, `active`, the job done after
/// three attempts.
/// A job that panics (a bug in a driver, in mail, …) fails as an error does, visible on its
/// account and retried; the worker goes on with the other jobs and the next rounds. It used
/// to take the worker task down for good (found by the webhook and mail audit: a name with
/// a line break panicked the mail job on every restart).
async fn a_panicking_job_fails_and_the_worker_goes_on(app: TestApp) {
    let fake = FakeDriver::default();
    fake.state().panics_left = 1;
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let first = str_of(&order_paid(&app, "panics.test").await, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &first).await;
    assert_eq!(h["status"], "provisioning", "{h}");
    assert!(str_of(&h, "last_error").contains("the job panicked"), "{h}");
    // The same worker takes the next job, then the retry after its backoff.
    let second = str_of(&order_paid(&app, "after-panic.test").await, "hosting_id").to_owned();
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &second).await["status"], "active");
    past_backoff(&app);
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &first).await["status"], "active");
    app.stop().await;
}

async fn flaky_driver_makes_one_account(app: TestApp) {
    let fake = FakeDriver::failing_first(2);
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "flaky.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");

    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "provisioning", "{h}");
    assert!(str_of(&h, "last_error").contains(FAKE_ERROR), "{h}");
    assert_eq!(run(&worker).await, 0, "backoff");

    // Staff have it tried now rather than after its backoff (the panel's cause fixed): its
    // attempts kept, its time now (one queued and never tried is not moved: see
    // `failing_driver_marks_the_account_failed`).
    let queued = jobs(&app, "queued").await;
    let job = jobs_for(&queued, PROVISION, &id);
    let job_id = job[0]["id"].as_i64().expect("job id");
    let (status, j) = app
        .post(
            &format!("/v1/admin/jobs/{job_id}/retry"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert_eq!(
        (&j["status"], &j["attempts"]),
        (&json!("queued"), &json!(1)),
        "{j}"
    );
    assert_eq!(run(&worker).await, 1, "tried at once");
    assert_eq!(hosting(&app, &id).await["status"], "provisioning");
    assert!(fake.created().is_empty());

    past_backoff(&app);
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert!(h["last_error"].is_null(), "the error is cleared: {h}");
    let user = str_of(&h, "username").to_owned();
    assert_eq!(fake.created(), HashMap::from([(user, 1)]), "one account");
    assert_eq!(fake.state().create_calls, 3);

    let done = jobs(&app, "done").await;
    let job = jobs_for(&done, PROVISION, &id);
    assert_eq!(job.len(), 1, "{done:?}");
    assert_eq!(job[0]["attempts"], 3, "{}", job[0]);
    assert!(job[0]["last_error"].is_null(), "{}", job[0]);
    assert!(jobs(&app, "queued").await.is_empty());

    // Nothing runs it again.
    past_backoff(&app);
    assert_eq!(run(&worker).await, 0);
    assert_eq!(fake.state().create_calls, 3);
    assert_eq!(
        paid_history(&hosting(&app, &id).await),
        ["provisioning", "active"]
    );
    app.stop().await;
}

/// A driver that always fails: `failed` after the job's attempts, with its message.
async fn failing_driver_marks_the_account_failed(app: TestApp) {
    let fake = FakeDriver::always_failing();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "hopeless.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");

    let mut ran = 0;
    for _ in 0..20 {
        let n = run(&worker).await;
        if n == 0 && hosting(&app, &id).await["status"] != "provisioning" {
            break;
        }
        ran += n;
        past_backoff(&app);
    }
    assert_eq!(ran, 8, "max_attempts runs");
    assert_eq!(fake.state().create_calls, 8);
    assert!(fake.created().is_empty());
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "failed", "{h}");
    let err = str_of(&h, "last_error");
    assert!(err.contains(FAKE_ERROR), "{h}");
    assert!(h["username"].is_null(), "no account was made: {h}");
    assert_eq!(
        paid_history(&h),
        ["provisioning", "failed"],
        "one transition to failed: {h}"
    );
    let dead = jobs(&app, "dead").await;
    let job = jobs_for(&dead, PROVISION, &id);
    assert_eq!(job.len(), 1, "{dead:?}");
    assert_eq!(job[0]["attempts"], 8);
    assert_eq!(job[0]["max_attempts"], 8);

    // The job can also be put back by id; a second retry is refused.
    let job_id = job[0]["id"].as_i64().expect("job id");
    let (status, j) = app
        .post(
            &format!("/v1/admin/jobs/{job_id}/retry"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert_eq!(j["status"], "queued", "{j}");
    assert_eq!(hosting(&app, &id).await["status"], "provisioning");
    let (status, j) = app
        .post(
            &format!("/v1/admin/jobs/{job_id}/retry"),
            &app.admin_key(),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not dead any more: {j}");
    assert!(
        str_of(&j, "detail").contains("waiting to be tried again"),
        "{j}"
    );
    app.stop().await;
}

// ---- 3. a worker that dies ----

/// At a node's start on SQLite, the claims of this node's worker processes that are gone
/// end at once (the job runs now, not after the lease): one that ended, one killed and not
/// yet reaped (a zombie), and an earlier process that had this process's id (a container
/// restarted is process 1 again; found by the re-check). A live process's claim, another
/// node's, and any on PostgreSQL (where one node name may be on several machines) wait out
/// their lease.
async fn dead_worker_process_claims_end_at_start_on_sqlite(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "600.00").await;
    for name in [
        "gone.test",
        "lane.test",
        "zombie.test",
        "own.test",
        "alive.test",
        "other.test",
    ] {
        order_paid(&app, name).await;
    }
    let store = &app.lodge.store;
    let node = app.lodge.settings.node_name.clone();
    // A process that has ended: its id is free (and not soon reused).
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    // One that ended and is not reaped yet, and one that runs.
    let mut zombie = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let mut alive = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let stat = format!("/proc/{}/stat", zombie.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z")) {
        assert!(Instant::now() < deadline, "no zombie");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let holders = [
        format!("{node}-{dead}-00abcd"),
        // A lane's worker of that process (`…/mail`, `…/webhooks`).
        format!("{node}-{dead}-00abcd/mail"),
        format!("{node}-{}-00abcd", zombie.id()),
        format!("{node}-{}-00abcd", std::process::id()),
        format!("{node}-{}-00abcd", alive.id()),
        format!("{node}x-{dead}-00abcd"),
    ];
    let gone = &holders[..4];
    let now = app.lodge.now_us();
    let lease = Worker::new(app.lodge.clone(), "probe").lease_us;
    let mut held = Vec::new();
    for holder in &holders {
        let mut tx = store.begin().await.expect("begin");
        let claimed = lodge_store::jobs::claim(
            &mut tx,
            store.engine(),
            holder,
            now,
            now + lease,
            1,
            lodge_store::jobs::KindFilter::Any,
        )
        .await
        .expect("claim");
        tx.commit().await.expect("commit");
        assert_eq!(claimed.len(), 1, "{holder}: {claimed:?}");
        held.push(claimed[0].id);
    }

    let ended = app.lodge.end_claims_of_dead_workers().await.expect("end");
    let sqlite = store.engine() == lodge_store::Engine::Sqlite;
    let expected = if sqlite { gone.len() } else { 0 };
    assert_eq!(ended, expected);
    let worker = Worker::new(app.lodge.clone(), "node-2");
    assert_eq!(
        run(&worker).await,
        expected,
        "only the gone processes' jobs"
    );
    for (holder, id) in holders.iter().zip(&held) {
        let row = lodge_store::jobs::by_id(store.reader(), *id)
            .await
            .expect("job")
            .expect("job row");
        let ran = sqlite && gone.contains(holder);
        assert_eq!(
            row.status == lodge_core::JobStatus::Done,
            ran,
            "{holder}: {row:?}"
        );
        if !ran {
            assert_eq!(row.locked_by.as_deref(), Some(holder.as_str()), "{row:?}");
        }
    }
    // Ending again finds nothing more (the live process still runs).
    assert_eq!(
        app.lodge.end_claims_of_dead_workers().await.expect("end"),
        0
    );
    let _ = alive.kill();
    let _ = alive.wait();
    let _ = zombie.wait();
    assert_eq!(fake.created().len(), expected);
    app.stop().await;
}

/// A job claimed by a worker that then died is taken again once its lease ends, and the
/// account is made once.
async fn killed_worker_job_is_taken_again_after_its_lease(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "orphan.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-2");
    let lease = worker.lease_us;

    // "dead-node" claims the job, then dies without finishing it.
    let store = &app.lodge.store;
    let now = app.lodge.now_us();
    let mut tx = store.begin().await.expect("begin");
    let claimed = lodge_store::jobs::claim(
        &mut tx,
        store.engine(),
        "dead-node",
        now,
        now + lease,
        8,
        lodge_store::jobs::KindFilter::Any,
    )
    .await
    .expect("claim");
    tx.commit().await.expect("commit");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let job = &claimed[0];
    assert_eq!(job.kind, PROVISION);
    assert_eq!(job.locked_by.as_deref(), Some("dead-node"));

    // Within the lease nobody else takes it.
    assert_eq!(run(&worker).await, 0, "held by its lease");
    app.clock
        .advance(SignedDuration::from_micros(lease - 1_000_000));
    assert_eq!(run(&worker).await, 0, "still held a second before the end");
    assert_eq!(hosting(&app, &id).await["status"], "provisioning");
    assert!(fake.created().is_empty());

    // After the lease it runs, once.
    app.clock.advance(SignedDuration::from_secs(2));
    assert_eq!(run(&worker).await, 1, "taken again after the lease");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    let user = str_of(&h, "username").to_owned();
    assert_eq!(fake.created(), HashMap::from([(user, 1)]));
    let row = lodge_store::jobs::by_id(store.reader(), job.id)
        .await
        .expect("job")
        .expect("job row");
    assert_eq!(row.status, lodge_core::JobStatus::Done);
    assert_eq!(row.attempts, 2, "the dead node's claim counted");
    assert_eq!(row.locked_by, None);

    // The dead node coming back cannot finish or fail what it no longer holds.
    let now = app.lodge.now_us();
    assert!(
        !lodge_store::jobs::finish(store.writer(), job.id, "dead-node", now)
            .await
            .expect("finish")
    );
    assert!(
        !lodge_store::jobs::fail(store.writer(), job.id, "dead-node", "late", Some(now), now)
            .await
            .expect("fail")
    );
    let row = lodge_store::jobs::by_id(store.reader(), job.id)
        .await
        .expect("job")
        .expect("job row");
    assert_eq!(row.status, lodge_core::JobStatus::Done);
    app.clock.advance(SignedDuration::from_hours(3));
    assert_eq!(run(&worker).await, 0);
    assert_eq!(fake.created().values().sum::<usize>(), 1);
    assert_eq!(
        paid_history(&hosting(&app, &id).await),
        ["provisioning", "active"]
    );
    app.stop().await;
}

// ---- 4. two workers ----

/// Runs rounds until a round finds nothing; returns how many jobs this worker ran.
pub(crate) async fn drain(worker: Worker) -> usize {
    let mut total = 0;
    for _ in 0..1000 {
        let n = worker.run_once().await.expect("worker round");
        if n == 0 {
            return total;
        }
        total += n;
    }
    panic!("worker {} never ran out of jobs", worker.id());
}

/// Two nodes (separate pools) on one database drain 40 provisioning jobs at once: each job
/// runs exactly once and no account is worked on by both at the same time. The fake panel
/// pairs the workers' jobs up, so that they claim their next jobs at the same moment (without
/// `SKIP LOCKED` this test sees several jobs run twice).
async fn two_workers_never_run_the_same_job(app: TestApp) {
    const N: usize = 40;
    let other = app.second_node().await;
    let fake = FakeDriver::default();
    fake.state().rendezvous = true;
    fake.install(&app.lodge);
    fake.install(&other);
    add_credit(&app, &app.org_id(), "1000.00").await;
    let mut ids = vec![];
    for i in 0..N {
        let o = order_paid(&app, &format!("busy-{i}.test")).await;
        ids.push(str_of(&o, "hosting_id").to_owned());
    }

    let mut a = Worker::new(app.lodge.clone(), "node-a");
    let mut b = Worker::new(other.clone(), "node-b");
    a.batch = 1;
    b.batch = 1;
    let (ran_a, ran_b) = tokio::join!(tokio::spawn(drain(a)), tokio::spawn(drain(b)));
    let (ran_a, ran_b) = (ran_a.expect("worker a"), ran_b.expect("worker b"));
    assert_eq!(ran_a + ran_b, N, "a: {ran_a}, b: {ran_b}");
    assert!(ran_a > 0 && ran_b > 0, "both worked: a {ran_a}, b {ran_b}");

    {
        let s = fake.state();
        assert!(s.overlaps.is_empty(), "run at once: {:?}", s.overlaps);
        assert_eq!(s.create_calls, N);
        assert_eq!(s.created.len(), N, "{:?}", s.created);
        assert!(
            s.created.values().all(|&n| n == 1),
            "made more than once: {:?}",
            s.created
        );
    }
    let rows = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), PROVISION)
        .await
        .expect("jobs");
    assert_eq!(rows.len(), N);
    for j in &rows {
        assert_eq!(j.status, lodge_core::JobStatus::Done, "{j:?}");
        assert_eq!(j.attempts, 1, "claimed once: {j:?}");
    }
    for id in &ids {
        let h = hosting(&app, id).await;
        assert_eq!(h["status"], "active", "{h}");
        assert_eq!(
            paid_history(&h),
            ["provisioning", "active"],
            "one activation: {h}"
        );
    }
    other.store.close().await;
    app.stop().await;
}

// ---- 5. the scheduler ----

/// An unpaid order past the expiry is cancelled exactly once, with two nodes each running a
/// scheduler pass and a worker round.
async fn unpaid_order_is_cancelled_once_by_two_schedulers(app: TestApp) {
    let other = app.second_node().await;
    let o = order(&app, "unpaid.test").await;
    assert_eq!(o["status"], "pending", "{o}");
    let id = str_of(&o, "hosting_id").to_owned();
    let order_id = o["order_id"].as_i64().expect("order id");
    let invoice_id = o["invoice_id"].as_i64().expect("invoice id");
    let nodes = [app.lodge.clone(), other.clone()];
    let workers = [
        Worker::new(app.lodge.clone(), "node-1"),
        Worker::new(other.clone(), "node-2"),
    ];

    // Within the 14 days nothing is due.
    app.clock.advance(SignedDuration::from_hours(13 * 24));
    for n in &nodes {
        assert_eq!(n.schedule_due().await.expect("schedule"), 0);
    }
    for w in &workers {
        assert_eq!(run(w).await, 0);
    }
    assert_eq!(hosting(&app, &id).await["status"], "pending");

    // Past it: both nodes schedule at once; one job, run once.
    app.clock.advance(SignedDuration::from_hours(2 * 24));
    let (a, b) = tokio::join!(nodes[0].schedule_due(), nodes[1].schedule_due());
    assert_eq!(a.expect("schedule a") + b.expect("schedule b"), 1);
    let (a, b) = tokio::join!(workers[0].run_once(), workers[1].run_once());
    assert_eq!(a.expect("round a") + b.expect("round b"), 1);

    assert_eq!(order_status(&app, order_id).await, "cancelled");
    assert_eq!(invoice(&app, invoice_id).await["status"], "cancelled");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "cancelled", "{h}");
    let expire_jobs = || {
        count_where(
            &app,
            "SELECT COUNT(*) FROM jobs WHERE kind = $1",
            "expire_order",
        )
    };
    assert_eq!(expire_jobs().await, 1);
    let told = || {
        count_where(
            &app,
            "SELECT COUNT(*) FROM events WHERE kind = $1 AND data LIKE '%\"by\":\"scheduler\"%'",
            "order.cancelled",
        )
    };
    assert_eq!(told().await, 1, "the order's expiry is told once");
    let cancelled = |h: &Value| history(h).iter().filter(|s| *s == "cancelled").count();
    assert_eq!(cancelled(&h), 1, "{h}");
    assert_eq!(history(&h), ["pending", "cancelled"]);

    // A second round changes nothing.
    app.clock.advance(SignedDuration::from_hours(24));
    for n in &nodes {
        assert_eq!(n.schedule_due().await.expect("schedule"), 0);
    }
    for w in &workers {
        assert_eq!(run(w).await, 0);
    }
    assert_eq!(expire_jobs().await, 1);
    assert_eq!(told().await, 1);
    let h2 = hosting(&app, &id).await;
    assert_eq!(cancelled(&h2), 1, "{h2}");
    assert_eq!(h2["modified"], h["modified"]);
    assert_eq!(order_status(&app, order_id).await, "cancelled");
    other.store.close().await;
    app.stop().await;
}

/// An end-of-period cancellation terminates the account once the clock passes its next due
/// date, and not before; two nodes schedule it once.
async fn end_of_period_cancellation_terminates_at_the_due_date(app: TestApp) {
    let other = app.second_node().await;
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    fake.install(&other);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "leaving.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let nodes = [app.lodge.clone(), other.clone()];
    let workers = [
        Worker::new(app.lodge.clone(), "node-1"),
        Worker::new(other.clone(), "node-2"),
    ];
    assert_eq!(run(&workers[0]).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    let user = str_of(&h, "username").to_owned();
    let due = str_of(&h, "next_due_date").to_owned();

    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "moving on" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(h["cancellation"]["type"], "end_of_period", "{h}");
    assert_eq!(h["cancellation"]["effective_date"], due.as_str(), "{h}");

    // The day before the due date: still active.
    app.clock.set(noon(&due, -1));
    for n in &nodes {
        assert_eq!(n.schedule_due().await.expect("schedule"), 0);
    }
    for w in &workers {
        assert_eq!(run(w).await, 0);
    }
    assert_eq!(hosting(&app, &id).await["status"], "active");
    assert!(fake.state().ops.is_empty());

    // Past it: terminated, once.
    app.clock.set(noon(&due, 1));
    let (a, b) = tokio::join!(nodes[0].schedule_due(), nodes[1].schedule_due());
    assert_eq!(a.expect("schedule a") + b.expect("schedule b"), 1);
    let (a, b) = tokio::join!(workers[0].run_once(), workers[1].run_once());
    assert_eq!(a.expect("round a") + b.expect("round b"), 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert_eq!(fake.state().ops, vec![("terminate", user.clone())]);
    assert_eq!(
        paid_history(&h),
        // The cancellation request is noted in the history (its status unchanged).
        ["provisioning", "active", "active", "terminated"],
        "{h}"
    );

    // Another round: nothing.
    app.clock.advance(SignedDuration::from_hours(24));
    for n in &nodes {
        assert_eq!(n.schedule_due().await.expect("schedule"), 0);
    }
    for w in &workers {
        assert_eq!(run(w).await, 0);
    }
    assert_eq!(fake.state().ops.len(), 1);
    assert_eq!(
        count_where(
            &app,
            "SELECT COUNT(*) FROM jobs WHERE kind = $1",
            "terminate_hosting"
        )
        .await,
        1
    );
    other.store.close().await;
    app.stop().await;
}

// ---- 6. servers ----

async fn servers(app: &TestApp) -> Vec<Value> {
    let (status, list) = app.get("/v1/admin/servers", &app.admin_key()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().expect("server list").clone()
}

async fn stored_credentials(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>("SELECT credentials FROM servers WHERE id = $1")
        .bind(id.to_owned())
        .fetch_one(app.lodge.store.reader())
        .await
        .expect("server row")
}

async fn put_server(app: &TestApp, id: &str, body: &Value) -> (StatusCode, Value) {
    app.call(
        Method::PUT,
        &format!("/v1/admin/servers/{id}"),
        Some(&app.admin_key()),
        Some(body),
    )
    .await
}

/// Both dialects refuse an order up front when no server has room, writing nothing.
async fn assert_no_room(app: &TestApp, domain: &str) {
    let before = (app.count("orders").await, app.count("hosting").await);
    let (status, body) = app
        .post(&order_path(app), &app.key(), &external(app, domain))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body, json!({ "plan_id": [SERVERS_FULL] }));
    let (status, body) = v2(
        app,
        Method::POST,
        "/apiv2/websites/order",
        Auth::Key(&app.key()),
        Some(&order_body(STARTER_PACKAGE, 1, domain)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "continue": false, "errors": [SERVERS_FULL] }));
    assert_eq!(
        (app.count("orders").await, app.count("hosting").await),
        before,
        "a refused order writes nothing"
    );
}

/// A capacity holds when orders race for the last places: the surplus is refused.
async fn capacity_holds_under_concurrent_orders(app: TestApp) {
    let small = app.only_a_limited_server("small", 2).await;

    let answers = futures::future::join_all((0..8).map(|i| {
        let app = &app;
        async move {
            let body = external(app, &format!("rush-{i}.test"));
            app.post(&order_path(app), &app.key(), &body).await
        }
    }))
    .await;
    let mut placed = 0;
    for (status, body) in &answers {
        match *status {
            StatusCode::CREATED => placed += 1,
            StatusCode::BAD_REQUEST => {
                assert_eq!(body, &json!({ "plan_id": [SERVERS_FULL] }));
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(placed, 2, "exactly the capacity: {answers:?}");
    assert_eq!(app.count("hosting").await, 2);
    let listed = app.admin_server(&small).await;
    assert_eq!(listed["accounts"], 2, "{listed}");
    app.stop().await;
}

/// Servers are created (credentials sealed, never shown), updated and deactivated; without
/// room, orders are refused up front in both dialects; capacity is respected.
/// Two partial updates of one server at once: each keeps the other's change (found by the
/// re-audit: read outside a lock and written whole, one undid the other, a deactivation
/// included).
async fn partial_server_updates_at_once_keep_each_others_change(app: TestApp) {
    let id = str_of(&servers(&app).await[0], "id").to_owned();
    for round in 0..10 {
        let (status, _) = put_server(&app, &id, &json!({ "is_active": true, "node": "" })).await;
        assert_eq!(status, StatusCode::OK);
        let node = format!("web-{round}");
        let (off, bind) = (
            json!({ "is_active": false }),
            json!({ "node": node, "capacity": round + 1 }),
        );
        let (a, b) = futures::join!(put_server(&app, &id, &off), put_server(&app, &id, &bind));
        assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
        let s = servers(&app)
            .await
            .into_iter()
            .find(|s| s["id"] == id.as_str())
            .unwrap();
        assert_eq!(s["is_active"], false, "round {round}: {s}");
        assert_eq!(s["node"], node.as_str(), "round {round}: {s}");
        assert_eq!(s["capacity"], round + 1, "round {round}: {s}");
    }
    app.stop().await;
}

async fn servers_are_managed_and_full_servers_refuse_orders(app: TestApp) {
    const SECRET: &str = "panel-token-7f3a9c0d";
    let admin = app.admin_key();
    let list = servers(&app).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let local = list[0].clone();
    assert_eq!(local["name"], "local-nginx");
    assert_eq!(local["driver"], "nginx");
    assert_eq!(local["capacity"], 0);
    assert_eq!(local["is_active"], true);
    assert_eq!(local["has_credentials"], false);
    let local_id = str_of(&local, "id").to_owned();

    // Staff only.
    let (status, body) = app.get("/v1/admin/servers", &app.key()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Create.
    let spec = |hostname: &str, credentials: Option<&str>, active: bool| {
        let mut v = json!({
            "name": "panel-1", "hostname": hostname, "driver": "nginx",
            "ns1": "ns1.panel.example", "ns2": "ns2.panel.example",
            "capacity": 1, "is_active": active,
        });
        if let Some(c) = credentials {
            v["credentials"] = Value::String(c.to_owned());
        }
        v
    };
    let creds = format!("{{\"token\": \"{SECRET}\"}}");
    let (status, s) = app
        .post(
            "/v1/admin/servers",
            &admin,
            &spec("panel-1.example", Some(&creds), true),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert!(!s.to_string().contains(SECRET), "{s}");
    assert!(s.get("credentials").is_none(), "{s}");
    assert_eq!(s["has_credentials"], true, "{s}");
    assert_eq!(s["capacity"], 1);
    assert_eq!(s["accounts"], 0);
    assert_eq!(s["is_active"], true);
    let panel = str_of(&s, "id").to_owned();
    let sealed = stored_credentials(&app, &panel)
        .await
        .expect("credentials stored");
    assert_ne!(sealed, creds);
    assert!(!sealed.contains(SECRET), "stored in the clear: {sealed}");
    let listed = Value::Array(servers(&app).await);
    assert!(!listed.to_string().contains(SECRET), "{listed}");

    // Refused specs write nothing.
    for (what, body, field) in [
        (
            "unknown driver",
            json!({ "name": "x", "hostname": "x.example", "driver": "cpanel-nope" }),
            "driver",
        ),
        (
            "taken name",
            json!({ "name": "panel-1", "hostname": "x.example", "driver": "nginx" }),
            "name",
        ),
        (
            "negative capacity",
            json!({ "name": "y", "hostname": "y.example", "driver": "nginx", "capacity": -1 }),
            "capacity",
        ),
        // One line (found by the re-check: these passed).
        (
            "a line break in the name",
            json!({ "name": "web\nfake log line", "hostname": "w.example", "driver": "nginx" }),
            "name",
        ),
        (
            "a bidi override in the name",
            json!({ "name": "web\u{202E}1", "hostname": "w.example", "driver": "nginx" }),
            "name",
        ),
    ] {
        let (status, resp) = app.post("/v1/admin/servers", &admin, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {resp}");
        assert!(resp.get(field).is_some(), "{what}: {resp}");
    }
    assert_eq!(app.count("servers").await, 2);

    // Update without credentials keeps them; new ones are sealed too.
    let (status, s) = put_server(&app, &panel, &spec("panel-1b.example", None, true)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["hostname"], "panel-1b.example");
    assert_eq!(s["has_credentials"], true, "{s}");
    assert_eq!(stored_credentials(&app, &panel).await, Some(sealed.clone()));
    let creds2 = "{\"token\": \"second-secret-4e1b\"}";
    let (status, s) = put_server(&app, &panel, &spec("panel-1b.example", Some(creds2), true)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert!(!s.to_string().contains("second-secret"), "{s}");
    let sealed2 = stored_credentials(&app, &panel).await.expect("credentials");
    assert_ne!(sealed2, sealed);
    assert!(!sealed2.contains("second-secret"), "{sealed2}");
    let (status, _) = put_server(
        &app,
        "0190f3c2-7d1e-7a2b-9c4d-5e6f708192a3",
        &spec("z.example", None, true),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deactivate both: no room anywhere.
    for id in [&local_id, &panel] {
        let (status, s) = app
            .post(
                &format!("/v1/admin/servers/{id}/deactivate"),
                &admin,
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(s["is_active"], false, "{s}");
    }
    assert_no_room(&app, "no-room.test").await;
    // An update names only what it changes: the rest is kept, the deactivated server stays
    // so (found by the operator audit: nameservers cleared, capacity made unlimited, the
    // server reopened to orders). A field the server does not have is refused.
    let (status, s) = put_server(&app, &panel, &json!({ "node": "web-node-1" })).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(
        (
            &s["node"],
            &s["is_active"],
            &s["capacity"],
            &s["ns1"],
            &s["ns2"],
            &s["hostname"]
        ),
        (
            &json!("web-node-1"),
            &json!(false),
            &json!(1),
            &json!("ns1.panel.example"),
            &json!("ns2.panel.example"),
            &json!("panel-1b.example")
        ),
        "{s}"
    );
    assert_eq!(s["has_credentials"], true, "{s}");
    let (status, s) = put_server(&app, &panel, &json!({ "node": "", "capactiy": 5 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{s}");
    assert!(
        s.get("capactiy").is_some(),
        "keyed by the misspelt field: {s}"
    );
    let (status, s) = put_server(&app, &panel, &json!({ "node": "" })).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert!(s["node"].is_null() || s["node"] == "", "{s}");
    assert_no_room(&app, "no-room.test").await;

    // panel-1 back (capacity 1): one account fits, the next is refused.
    let (status, s) = put_server(&app, &panel, &spec("panel-1b.example", None, true)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    let first = order(&app, "first-fit.test").await;
    let first_id = str_of(&first, "hosting_id").to_owned();
    assert_eq!(hosting(&app, &first_id).await["server"]["name"], "panel-1");
    let on_panel = servers(&app)
        .await
        .into_iter()
        .find(|s| s["id"] == panel.as_str())
        .expect("panel-1 listed");
    assert_eq!(on_panel["accounts"], 1, "{on_panel}");
    assert_no_room(&app, "second-fit.test").await;
    // Its driver cannot change while it holds a live account (made by that driver).
    let mut other_driver = spec("panel-1b.example", None, true);
    other_driver["driver"] = json!("directadmin");
    let (status, s) = put_server(&app, &panel, &other_driver).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{s}");
    assert!(
        s["driver"][0]
            .as_str()
            .unwrap_or_default()
            .contains("cannot change"),
        "{s}"
    );
    let on_panel = servers(&app)
        .await
        .into_iter()
        .find(|s| s["id"] == panel.as_str())
        .expect("panel-1 listed");
    assert_eq!(on_panel["driver"], "nginx", "unchanged: {on_panel}");

    // Cancelling the (unpaid) account frees the room.
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &first_id)),
            &app.key(),
            &json!({ "type": "immediate" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["status"], "cancelled", "{h}");
    let again = order(&app, "second-fit.test").await;
    let again_id = str_of(&again, "hosting_id");
    assert_eq!(hosting(&app, again_id).await["server"]["name"], "panel-1");
    app.stop().await;
}

/// The customer withdraws an end-of-period cancellation after its termination was queued:
/// the queued job terminates nothing.
async fn withdrawn_cancellation_stops_a_queued_termination(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "staying.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");
    assert_eq!(run(&worker).await, 1);
    let due = str_of(&hosting(&app, &id).await, "next_due_date").to_owned();
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "end_of_period", "reason": "maybe" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    app.clock.set(noon(&due, 1));
    assert_eq!(
        app.lodge.schedule_due().await.expect("schedule"),
        1,
        "termination queued"
    );
    let (status, h) = crate::harness::revoke_cancellation(&app, &id).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(run(&worker).await, 1, "the queued job runs");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert!(
        !fake.state().ops.iter().any(|(op, _)| *op == "terminate"),
        "the driver terminated nothing"
    );
    // That job ran; a later cancellation is a new termination, not kept out by it (found
    // by the panels audit: one key per account kept every later termination out, and the
    // account stayed hosted without billing).
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "now for real" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(run(&worker).await, 1, "the new termination runs");
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert!(fake.state().ops.iter().any(|(op, _)| *op == "terminate"));
}

/// An immediate cancellation of a paid, active account terminates it on the next worker
/// round, without waiting for its due date.
async fn immediate_cancellation_terminates_now(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "leaving-now.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");
    assert_eq!(run(&worker).await, 1);
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    let user = str_of(&h, "username").to_owned();
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "done" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(run(&worker).await, 1, "the termination runs at once");
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "terminated", "{h}");
    assert_eq!(fake.state().ops, vec![("terminate", user)]);
}

/// Staff suspend with a reason: the account's history records it. A field the action does
/// not take is refused and queues nothing (found by the operator audit: `reason` and any
/// other field were dropped without a word); no body at all is fine.
async fn staff_give_a_reason_for_a_suspension_and_nothing_else(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "reasoned.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");
    assert_eq!(run(&worker).await, 1);
    // Staff find it by its domain, any case, or by organization and status (found by the
    // operator audit: there was no way to find a customer's account by domain).
    let find = |query: String| {
        let app = &app;
        async move {
            app.get(&format!("/v1/admin/hosting?{query}"), &app.admin_key())
                .await
        }
    };
    let (status, found) = find("domain=Reasoned.Test".into()).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["id"], id.as_str(), "{found}");
    let (_, found) = find(format!("organization_id={}&status=active", app.org_id())).await;
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == id.as_str()),
        "{found}"
    );
    // Each filter alone, none, and all three (each is in the statement only when given).
    for query in [
        String::new(),
        "status=active".into(),
        format!("organization_id={}", app.org_id()),
        format!(
            "domain=reasoned.test&organization_id={}&status=active&limit=5",
            app.org_id()
        ),
    ] {
        let (status, found) = find(query.clone()).await;
        assert_eq!(status, StatusCode::OK, "{query}: {found}");
        assert_eq!(found[0]["id"], id.as_str(), "{query}: {found}");
    }
    let (_, none) = find("domain=nobody.test".into()).await;
    assert_eq!(none, json!([]));
    let (_, none) = find("domain=reasoned.test&status=suspended".into()).await;
    assert_eq!(none, json!([]));
    for bad in [
        "status=asleep",
        "organization_id=x",
        "limit=0",
        "name=reasoned.test",
    ] {
        let (status, body) = find(bad.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = app
        .get("/v1/admin/hosting?domain=reasoned.test", &app.key())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let path = format!("/v1/admin/hosting/{id}/suspend");
    let (status, e) = app
        .post(
            &path,
            &app.admin_key(),
            &json!({ "reason": "abuse", "bogus": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.get("bogus").is_some(), "{e}");
    let (status, e) = app
        .post(
            &path,
            &app.admin_key(),
            &json!({ "reason": "x".repeat(501) }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.get("reason").is_some(), "{e}");
    assert_eq!(run(&worker).await, 0, "nothing was queued");
    let (status, h) = app
        .post(
            &path,
            &app.admin_key(),
            &json!({ "reason": "abuse report #42" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{h}");
    assert_eq!(run(&worker).await, 1);
    let h = crate::harness::staff_hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    let last = h["history"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["note"], "abuse report #42", "{h}");
    let (status, h) = app
        .call(
            Method::POST,
            &format!("/v1/admin/hosting/{id}/unsuspend"),
            Some(&app.admin_key()),
            Some(&Value::Null),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a null body, as no body: {h}");
    assert_eq!(run(&worker).await, 1);
    assert_eq!(hosting(&app, &id).await["status"], "active");
    // A name in Unicode is found as it was ordered, in either form (found by the engines'
    // parity audit: the search compared the Unicode text with the stored ASCII form).
    let idn = order_paid(&app, "bücher-reasoned.test").await;
    let stored = str_of(&idn, "domain_name").to_owned();
    assert!(stored.starts_with("xn--"), "{idn}");
    for query in [
        "domain=B%C3%BCcher-Reasoned.test".to_owned(),
        format!("domain={stored}"),
    ] {
        let (status, found) = find(query.clone()).await;
        assert_eq!(status, StatusCode::OK, "{query}: {found}");
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{query}: {found}");
        assert_eq!(found[0]["id"], idn["hosting_id"], "{query}: {found}");
    }
}

/// A customer cancelling at once an account whose termination staff queued already: the
/// cancellation is recorded, and the account is terminated once (found by review: a
/// second termination job was queued, and two workers would archive and drop the same
/// files and database at once).
async fn cancelling_now_while_staff_terminate_terminates_once(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "ending-twice.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let workers = [
        Worker::new(app.lodge.clone(), "node-1"),
        Worker::new(app.lodge.clone(), "node-2"),
    ];
    assert_eq!(run(&workers[0]).await, 1);
    let user = str_of(&hosting(&app, &id).await, "username").to_owned();
    let (status, t) = staff(&app, &id, "terminate").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{t}");
    let (status, h) = app
        .post(
            &format!("{}/cancel", hosting_path(&app, &id)),
            &app.key(),
            &json!({ "type": "immediate", "reason": "done" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["cancellation"]["type"], "immediate", "{h}");
    assert_eq!(
        count_where(
            &app,
            "SELECT COUNT(*) FROM jobs WHERE kind = $1",
            "terminate_hosting"
        )
        .await,
        1
    );
    let (a, b) = tokio::join!(workers[0].run_once(), workers[1].run_once());
    assert_eq!(a.expect("round a") + b.expect("round b"), 1);
    assert_eq!(hosting(&app, &id).await["status"], "terminated");
    assert_eq!(fake.state().ops, vec![("terminate", user)]);
}

/// A job that runs longer than its lease (a panel taking minutes to make an account)
/// keeps extending it while it runs: another node coming by meanwhile finds it held and
/// does not make the account a second time.
async fn a_job_longer_than_its_lease_keeps_it(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "takes-minutes.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let mut a = Worker::new(app.lodge.clone(), "node-a");
    a.heartbeat = Duration::from_millis(20);
    let b = Worker::new(app.lodge.clone(), "node-b");
    let (clock, b_took) = (app.clock.clone(), Arc::new(Mutex::new(Vec::new())));
    let took = b_took.clone();
    fake.state().on_next_create = Some(Hook(Box::new(move || {
        Box::pin(async move {
            // Six minutes pass while the panel works (the lease is two), a minute at a
            // time; node b comes by after each. (No assertion here: a panic in the panel
            // is the job's failure, caught by the worker.)
            for _ in 0..6 {
                clock.advance(SignedDuration::from_mins(1));
                tokio::time::sleep(Duration::from_millis(150)).await;
                let n = b.run_once().await.expect("b's round");
                took.lock().unwrap_or_else(|e| e.into_inner()).push(n);
            }
        })
    })));
    assert_eq!(run(&a).await, 1);
    assert_eq!(
        *b_took.lock().expect("b's rounds"),
        vec![0; 6],
        "b took a held job"
    );
    assert_eq!(fake.state().create_calls, 1, "made twice");
    assert_eq!(hosting(&app, &id).await["status"], "active");
    app.stop().await;
}

/// A suspension that failed once shows its error on the account; once its retry went
/// through, the error is gone (found by the stack audit: it stayed, even after
/// termination).
async fn an_error_is_cleared_once_its_step_is_done(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "fails-once.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let worker = Worker::new(app.lodge.clone(), "node-1");
    drain(worker.clone()).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    fake.state().op_failures_left = 1;
    let (status, body) = staff(&app, &id, "suspend").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "active", "{h}");
    assert!(h["last_error"].is_string(), "the failure shows: {h}");
    past_backoff(&app);
    drain(worker.clone()).await;
    let h = hosting(&app, &id).await;
    assert_eq!(h["status"], "suspended", "{h}");
    assert!(h["last_error"].is_null(), "done: {h}");
    app.stop().await;
}

/// A job whose step hangs is stopped after the longest a job may run and retried, not held
/// (its lease renewed) for ever.
async fn a_job_that_hangs_is_stopped_and_retried(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "hangs.test").await;
    let id = str_of(&o, "hosting_id").to_owned();
    let mut a = Worker::new(app.lodge.clone(), "node-a");
    a.heartbeat = Duration::from_millis(20);
    a.max_run = Duration::from_millis(300);
    fake.state().on_next_create = Some(Hook(Box::new(|| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    })));
    let started = Instant::now();
    assert_eq!(run(&a).await, 1);
    assert!(started.elapsed() < Duration::from_secs(60), "stopped");
    let rows = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), PROVISION)
        .await
        .expect("jobs");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, lodge_core::JobStatus::Queued, "{rows:?}");
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("ran longer"),
        "{rows:?}"
    );
    assert_eq!(hosting(&app, &id).await["status"], "provisioning");
    // Its retry comes: it is made.
    past_backoff(&app);
    drain(a).await;
    assert_eq!(hosting(&app, &id).await["status"], "active");
    app.stop().await;
}

/// A round's jobs run one after another: when the first takes longer than the lease (a
/// slow panel, a mail server taking its timeout), another worker may claim the second
/// meanwhile. The first worker, renewing the lease before it starts the second, finds it
/// gone and leaves it (found by the webhooks audit: both ran it, a mail sent twice).
/// Here node b's attempt fails, so the job waits for its retry: node a must not run it
/// before then.
async fn a_job_whose_lease_ran_out_while_it_waited_runs_once(app: TestApp) {
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    order_paid(&app, "slow-first.test").await;
    let second = order_paid(&app, "waits-second.test").await;
    let second = str_of(&second, "hosting_id").to_owned();
    let a = Worker::new(app.lodge.clone(), "node-a");
    let b = Worker::new(app.lodge.clone(), "node-b");
    let first_job = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), PROVISION)
        .await
        .expect("jobs")
        .iter()
        .map(|j| j.id)
        .min()
        .expect("a job");
    let (clock, panel, lodge, lease) = (
        app.clock.clone(),
        fake.clone(),
        app.lodge.clone(),
        a.lease_us,
    );
    fake.state().on_next_create = Some(Hook(Box::new(move || {
        Box::pin(async move {
            // The panel takes three minutes (the lease is two; the running job's own
            // lease kept, as a long job's would be); node b comes by, takes the second
            // job, and the panel refuses it this time.
            clock.advance(SignedDuration::from_mins(3));
            let until = lodge.now_us() + lease;
            assert!(
                lodge_store::jobs::renew(lodge.store.writer(), first_job, "node-a", until)
                    .await
                    .expect("renew")
            );
            panel.state().failures_left = 1;
            assert_eq!(b.run_once().await.expect("b's round"), 1);
        })
    })));
    assert_eq!(run(&a).await, 2, "a claimed both");
    assert_eq!(fake.state().create_calls, 2, "a ran the second job again");
    let h = hosting(&app, &second).await;
    assert_eq!(h["status"], "provisioning", "waits for its retry: {h}");
    let rows = lodge_store::jobs::jobs_of_kind(app.lodge.store.reader(), PROVISION)
        .await
        .expect("jobs");
    let queued: Vec<_> = rows
        .iter()
        .filter(|j| j.status == lodge_core::JobStatus::Queued)
        .collect();
    assert_eq!(queued.len(), 1, "{rows:?}");
    // Its retry comes: it is made once.
    past_backoff(&app);
    drain(a).await;
    assert_eq!(hosting(&app, &second).await["status"], "active");
    let s = fake.state();
    assert!(
        s.created.values().all(|&n| n == 1),
        "made twice: {:?}",
        s.created
    );
}

/// A node's three workers: webhook deliveries and mail each on a lane of its own, everything
/// else on the third, so a slow or dead receiver holds up neither the other receivers nor
/// provisioning (found by the webhooks audit, by the resilience audit: an SMTP server that
/// never answered held each order's provisioning for two mail timeouts, and by the
/// re-audit: sharing a lane, it held the webhooks). Each lane claims only its own.
async fn webhook_deliveries_have_a_lane_of_their_own(app: TestApp) {
    use lodge_services::provisioning::Lane;
    let fake = FakeDriver::default();
    fake.install(&app.lodge);
    add_credit(&app, &app.org_id(), "100.00").await;
    let o = order_paid(&app, "lanes.test").await;
    let now = app.lodge.now_us();
    {
        let mut conn = app.lodge.store.write_conn().await.unwrap();
        assert!(lodge_store::jobs::enqueue(
            &mut *conn,
            &lodge_store::jobs::NewJob {
                kind: lodge_store::webhooks::JOB_WEBHOOK,
                payload: "{}",
                dedupe_key: None,
                run_at: now,
                max_attempts: 5,
                now,
            },
        )
        .await
        .unwrap());
    }
    {
        let mut conn = app.lodge.store.write_conn().await.unwrap();
        assert!(lodge_store::jobs::enqueue(
            &mut *conn,
            &lodge_store::jobs::NewJob {
                kind: lodge_services::mail::JOB_MAIL,
                payload: "{}",
                dedupe_key: None,
                run_at: now,
                max_attempts: 5,
                now,
            },
        )
        .await
        .unwrap());
    }
    let attempts = |app: &TestApp, kind: &'static str| {
        let reader = app.lodge.store.reader().clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT attempts FROM jobs WHERE kind = $1")
                .bind(kind)
                .fetch_one(&reader)
                .await
                .unwrap()
        }
    };
    let hook_attempts = |app: &TestApp| attempts(app, "webhook");
    let jobs = Worker::new(app.lodge.clone(), "node-1").on_lane(Lane::Rest);
    let hooks = Worker::new(app.lodge.clone(), "node-1").on_lane(Lane::Webhooks);
    let mail = Worker::new(app.lodge.clone(), "node-1").on_lane(Lane::Mail);
    assert_eq!(run(&jobs).await, 1, "the provisioning only");
    assert_eq!(
        hosting(&app, str_of(&o, "hosting_id")).await["status"],
        "active"
    );
    assert_eq!(
        hook_attempts(&app).await,
        0,
        "not claimed by the jobs' lane"
    );
    assert_eq!(attempts(&app, "mail").await, 0, "nor the mail");
    assert_eq!(run(&jobs).await, 0);
    assert_eq!(run(&hooks).await, 1, "the webhook delivery only");
    assert_eq!(hook_attempts(&app).await, 1);
    assert_eq!(attempts(&app, "mail").await, 0, "not the mail");
    assert_eq!(run(&mail).await, 1, "the mail only");
    assert_eq!(attempts(&app, "mail").await, 1);
    assert_eq!(hook_attempts(&app).await, 1);
}
