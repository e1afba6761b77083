//! Provisioning that really happens: the durable job worker, the scheduler, servers and the
//! hosting lifecycle operations staff use.
//!
//! Jobs are claimed with a lease; a job held by a node that died is claimed again once its
//! lease ends. Failures retry with exponential backoff and jitter up to the job's limit, the
//! last error is kept, and a job out of attempts is `dead` (listed and retried through the
//! admin API). Every handler is idempotent, so running a job twice never makes two accounts.

use std::time::Duration;

use lodge_core::{
    DomainStatus, HostingEvent, HostingId, HostingStatus, JobStatus, PlanId, ServerId,
};
use lodge_store::hosting::{self, HostingRow};
use lodge_store::jobs::{self, JobRow};
use lodge_store::{billing, servers, StoreError};
use rand::Rng;
use serde::Deserialize;

use crate::billing::{JOB_PROVISION, JOB_REGISTER_DOMAIN, JOB_TERMINATE, JOB_TRANSFER_DOMAIN};
use crate::drivers::Account;
use crate::registrar::Outcome;
use crate::{Lodge, Result, ServiceError};

pub const JOB_SUSPEND: &str = "suspend_hosting";
/// Webhook deliveries a worker runs at once ([`Worker::run_once`]).
const WEBHOOKS_AT_ONCE: usize = 8;
pub const JOB_UNSUSPEND: &str = "unsuspend_hosting";
pub const JOB_EXPIRE_ORDER: &str = "expire_order";
pub const JOB_CHANGE_PASSWORD: &str = "change_password";

/// How long a request's `Idempotency-Key` is remembered (24 hours, as Stripe does): a
/// retry within it replays the first answer; after it the scheduler forgets the key, and a
/// request with it is a new request.
pub const IDEMPOTENCY_KEY_TTL_US: i64 = 24 * 3_600 * 1_000_000;

/// The delay before retry `attempt` (1-based): 10 s doubling to at most an hour, ±20 %.
pub fn backoff_us(attempt: i64) -> i64 {
    let exp = u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0);
    let base = 10_000_000_i64
        .saturating_mul(1_i64 << exp.min(20))
        .min(3_600_000_000);
    let jitter = rand::thread_rng().gen_range(-(base / 5)..=(base / 5));
    base + jitter
}

#[derive(Debug, Deserialize)]
struct HostingPayload {
    hosting_id: HostingId,
    /// Why a termination was queued: `staff`, `cancelled`, `end of period` or `overdue`.
    #[serde(default)]
    reason: Option<String>,
    /// Who the history records (default `worker`; `scheduler` for automatic steps).
    #[serde(default)]
    actor: Option<String>,
    /// The history entry's note (default: the step's own word).
    #[serde(default)]
    note: Option<String>,
    /// The overdue renewal a suspension is for.
    #[serde(default)]
    invoice_id: Option<i64>,
}

impl HostingPayload {
    /// Who the history records for this job's step: the scheduler for what it decided on
    /// its own (end-of-period and overdue terminations), else as queued.
    fn actor(&self) -> &str {
        match (self.actor.as_deref(), self.reason.as_deref()) {
            (Some(a), _) => a,
            (None, Some("end of period" | "overdue")) => crate::renewals::SCHEDULER,
            (None, _) => "worker",
        }
    }
}

#[derive(Debug, Deserialize)]
struct DomainPayload {
    domain_id: lodge_core::DomainId,
}

#[derive(Debug, Deserialize)]
struct OrderPayload {
    order_id: i64,
}

fn payload<T: for<'de> Deserialize<'de>>(job: &JobRow) -> Result<T> {
    serde_json::from_str(&job.payload)
        .map_err(|e| ServiceError::Internal(format!("job {} has a bad payload: {e}", job.id)))
}

/// Runs `forget` (one short statement forgetting at most `at_once` rows) until it forgets
/// fewer, ten times at most: a backlog (after a long stop) never holds a scheduler pass, or
/// SQLite's writer, up; the next passes go on. How many rows were forgotten.
async fn in_rounds<F, Fut>(at_once: u64, mut forget: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = lodge_store::Result<u64>>,
{
    const ROUNDS: usize = 10;
    let mut forgotten = 0;
    for _ in 0..ROUNDS {
        let n = forget().await?;
        forgotten += n;
        if n < at_once {
            break;
        }
    }
    Ok(forgotten)
}

/// What [`Lodge::forget_old_records`] forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub jobs: u64,
    pub deliveries: u64,
    pub mail: u64,
}

/// What one scheduler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerPass {
    /// Jobs newly queued (expiries, end-of-period terminations, suspensions, terminations).
    pub jobs_queued: usize,
    pub renewals: crate::renewals::RenewalPass,
    pub overdue: crate::renewals::OverduePass,
    /// Steps of the pass that failed (each logged; the next pass tries again).
    pub failed_steps: u32,
}

/// How long a job of another node's server waits before it is offered again.
const ELSEWHERE_WAIT_US: i64 = 2_000_000;

/// How often a termination waiting for the account's creation looks again.
const CREATION_WAIT_US: i64 = 30_000_000;

/// How long after a creation's last attempt a termination waits (a panel's create whose
/// answer timed out finishes within minutes).
pub const CREATION_SETTLE_US: i64 = 10 * 60 * 1_000_000;

/// A job worker of one node.
#[derive(Debug, Clone)]
pub struct Worker {
    lodge: Lodge,
    id: String,
    /// How long a claim holds, microseconds.
    pub lease_us: i64,
    /// Jobs claimed per round.
    pub batch: i64,
    /// Which jobs it claims.
    pub lane: Lane,
    /// How often a running job's lease is extended while it runs (a third of the lease by
    /// default), so that a job longer than its lease (a panel taking minutes to make an
    /// account) is not claimed and run a second time by another node meanwhile.
    pub heartbeat: Duration,
    /// The longest a job may run: past it, it fails (and is retried as any failure is), so
    /// that a step that hangs (a command that never exits) does not hold its job, renewed,
    /// for ever (found by review of the heartbeat).
    pub max_run: Duration,
    /// Turns true when the node stops ([`Worker::run`]): the jobs of a round not yet started
    /// are then handed back to the queue instead of run, so that another node (or this one,
    /// started again) takes them at once rather than when their lease ends (found by the
    /// resilience audit: a stop in a round behind a slow mail left the rest claimed for
    /// two minutes).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// [`Worker::max_run`] by default.
pub const MAX_JOB_RUN: Duration = Duration::from_secs(30 * 60);

/// The jobs a worker claims. A node runs three lanes: webhook deliveries and mail wait on
/// other people's servers (up to their timeout, retried for a day when one is down), so
/// each has a lane of its own, and a slow or dead receiver never holds up the others or
/// provisioning and suspensions (found by the webhooks audit: six mails took 46 s behind
/// four slow endpoints; by the resilience audit: an SMTP server that accepted and never
/// answered held each paid order's provisioning for two 60 s mail timeouts; by the
/// re-audit: with mail and webhooks in one lane, it held the webhooks too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Every kind (one worker doing everything: tests, the simulation).
    All,
    /// Webhook deliveries only (side by side).
    Webhooks,
    /// Mail only (one after another, in the order sent).
    Mail,
    /// Everything but webhook deliveries and mail.
    Rest,
}

/// The kinds with a lane of their own.
const OWN_LANES: [&str; 2] = [crate::webhooks::JOB_WEBHOOK, crate::mail::JOB_MAIL];

impl Lane {
    fn filter(self) -> jobs::KindFilter<'static> {
        match self {
            Lane::All => jobs::KindFilter::Any,
            Lane::Webhooks => jobs::KindFilter::Only(&OWN_LANES[..1]),
            Lane::Mail => jobs::KindFilter::Only(&OWN_LANES[1..]),
            Lane::Rest => jobs::KindFilter::AllBut(&OWN_LANES),
        }
    }
}

impl Worker {
    pub fn new(lodge: Lodge, id: impl Into<String>) -> Self {
        Worker {
            lodge,
            id: id.into(),
            lease_us: 120_000_000,
            batch: 8,
            lane: Lane::All,
            // A third of the lease.
            heartbeat: Duration::from_secs(40),
            max_run: MAX_JOB_RUN,
            stop: None,
        }
    }

    /// The same worker on one lane (its id marked with it, so that each lane's claims are
    /// its own).
    pub fn on_lane(mut self, lane: Lane) -> Self {
        match lane {
            Lane::Webhooks => self.id.push_str("/webhooks"),
            Lane::Mail => self.id.push_str("/mail"),
            Lane::All | Lane::Rest => {}
        }
        self.lane = lane;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims the due jobs and runs them; returns how many ran.
    pub async fn run_once(&self) -> Result<usize> {
        let now = self.lodge.now_us();
        let store = &self.lodge.store;
        let mut tx = store.begin().await?;
        let claimed = jobs::claim_on(
            &mut tx,
            store.engine(),
            &self.id,
            &self.lodge.settings.node_name,
            now,
            now + self.lease_us,
            self.batch,
            self.lane.filter(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        let n = claimed.len();
        // Webhook deliveries wait on other people's servers (up to their timeout each): they
        // run side by side, beside the mail (one after another, so a customer's notices come
        // in the order they were sent) and the other jobs (one after another in the order
        // claimed). A slow receiver then holds up the jobs claimed with it by one timeout at
        // most (the round ends when its slowest delivery does), not one per delivery.
        let (hooks, rest): (Vec<JobRow>, Vec<JobRow>) = claimed
            .into_iter()
            .partition(|j| j.kind == crate::webhooks::JOB_WEBHOOK);
        let (mails, rest): (Vec<JobRow>, Vec<JobRow>) = rest
            .into_iter()
            .partition(|j| j.kind == crate::mail::JOB_MAIL);
        // Each claimed job is run even when one before it failed to record its outcome (the
        // database away a moment): stopping there left the rest claimed until their lease ran
        // out, two minutes (found by the resilience audit).
        let (a, b, c) = tokio::join!(
            self.run_claimed(rest, 1),
            self.run_claimed(mails, 1),
            self.run_claimed(hooks, WEBHOOKS_AT_ONCE)
        );
        a?;
        b?;
        c?;
        Ok(n)
    }

    /// Runs `jobs` in the order claimed, `at_once` at a time; each runs to its end (each
    /// records its own outcome) and the first error, if any, is the round's. When the node
    /// stops meanwhile, the jobs not yet started are handed back to the queue (the ones
    /// running are left to end, or to their lease): side by side (`at_once` > 1, webhook
    /// deliveries, which receivers order by themselves) at once; one after another (mail,
    /// the rest) once the running job has ended, so that none runs elsewhere before the
    /// one claimed ahead of it (found by review: a customer's second notice went out before
    /// the first).
    async fn run_claimed(&self, claimed: Vec<JobRow>, at_once: usize) -> Result<()> {
        let claimed = std::sync::Mutex::new(std::collections::VecDeque::from(claimed));
        let queue = || {
            claimed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let runner = || async {
            let mut first_error = None;
            loop {
                // Its own statement: the lock is not held while the job runs.
                let next = queue().pop_front();
                let Some(job) = next else { break };
                if let Err(e) = self.run_job(job).await {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        };
        let runners = futures::future::join_all((0..at_once.max(1)).map(|_| runner()));
        tokio::pin!(runners);
        let results = if at_once == 1 {
            // Each job is handed back by `run_job_in_span` when its turn comes.
            runners.await
        } else {
            tokio::select! {
                r = &mut runners => r,
                () = self.stopped() => {
                    // Beside the running deliveries (their lease kept meanwhile).
                    let unstarted = queue().drain(..).collect();
                    let ((), r) = tokio::join!(self.hand_back(unstarted), &mut runners);
                    r
                }
            }
        };
        results.into_iter().collect::<Result<Vec<()>>>().map(drop)
    }

    /// Returns once the node is told to stop (never for a worker run by [`Worker::run_once`]
    /// alone).
    async fn stopped(&self) {
        if let Some(mut stop) = self.stop.clone() {
            if stop.wait_for(|s| *s).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    /// Hands claimed, unstarted jobs back to the queue (see [`jobs::hand_back`]); one that
    /// cannot be (the database away) is left to its lease.
    async fn hand_back(&self, unstarted: Vec<JobRow>) {
        let now = self.lodge.now_us();
        for job in unstarted {
            match jobs::hand_back(self.lodge.store.writer(), job.id, &self.id, now).await {
                Ok(true) => tracing::info!(
                    id = job.id,
                    kind = %job.kind,
                    "job handed back to the queue unstarted: the node is stopping"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    id = job.id,
                    error = %e,
                    "a claimed job could not be handed back: it runs again once its lease ends"
                ),
            }
        }
    }

    async fn run_job(&self, job: JobRow) -> Result<()> {
        use tracing::Instrument;
        // `instrument`, not `span.enter()`: an entered guard held across `.await` would tag
        // whatever else runs on this thread meanwhile.
        let span =
            tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        self.run_job_in_span(job).instrument(span).await
    }

    async fn run_job_in_span(&self, mut job: JobRow) -> Result<()> {
        use futures::FutureExt;
        if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
            self.hand_back(vec![job]).await;
            return Ok(());
        }
        // The jobs of a round run one after another: one that waited behind slow ones (a
        // mail server taking its timeout) may have used up half its lease; it is renewed
        // first, and skipped if the lease ran out and another worker took the job (found
        // by the webhooks audit: both ran it).
        let now = self.lodge.now_us();
        let until = job.locked_until.unwrap_or(0);
        if now > until - self.lease_us / 2 {
            let renewed = now + self.lease_us;
            if !jobs::renew(self.lodge.store.writer(), job.id, &self.id, renewed).await? {
                tracing::warn!(
                    "job skipped: its lease ran out while it waited, and another worker holds it"
                );
                return Ok(());
            }
            job.locked_until = Some(renewed);
        }
        // A job that panics (a bug) fails as any error does, retried and then dead, visible
        // in the jobs list: it never takes the worker, and every job after it, down.
        let max_run = self.max_run;
        let performed = async {
            match tokio::time::timeout(max_run, self.lodge.perform(&job)).await {
                Ok(r) => r,
                Err(_) => Err(ServiceError::Internal(format!(
                    "the job ran longer than {} s and was stopped",
                    max_run.as_secs()
                ))),
            }
        };
        let performed = std::panic::AssertUnwindSafe(performed).catch_unwind();
        let outcome = {
            tokio::pin!(performed);
            tokio::select! {
                biased;
                r = &mut performed => r,
                () = self.keep_lease(job.id) => performed.await,
            }
        };
        let result = match outcome {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(ServiceError::Internal(format!(
                    "the job panicked (a bug in Lodge): {what}"
                )))
            }
        };
        let now = self.lodge.now_us();
        let store = self.lodge.store.writer();
        match result {
            Ok(()) => {
                if !jobs::finish(store, job.id, &self.id, now).await? {
                    tracing::warn!("job finished after its lease was lost");
                }
            }
            Err(ServiceError::OtherNode(node, m)) => {
                // Another node's server: back to the queue for that node's worker, the
                // attempt not counted (a typed error: no text a receiver or panel answers
                // can pass for it). One waiting for over ten minutes is said loudly: that
                // node may be gone or renamed.
                if now - job.created_at > 600_000_000 {
                    tracing::warn!(reason = %m, "job still waiting for another node");
                } else {
                    tracing::debug!(reason = %m, "job left to another node");
                }
                jobs::release(
                    store,
                    job.id,
                    &self.id,
                    &node,
                    &m,
                    now + ELSEWHERE_WAIT_US,
                    now,
                )
                .await?;
            }
            Err(ServiceError::NotYet(run_at, m)) => {
                tracing::info!(reason = %m, "job put off");
                jobs::postpone(store, job.id, &self.id, &m, run_at.max(now), now).await?;
            }
            // The database went away under the job (its pool's wait ran out, the connection
            // broke): no fault of the job's, so no attempt of its own is taken. Tried again
            // shortly (found by the fault audit: a provisioning job of a paid account took
            // an attempt each round PostgreSQL was short of connections, and would have died
            // in about twenty minutes).
            Err(e) if database_outage(&e) => {
                tracing::warn!(error = %e, "job put off: the database is unavailable");
                let note = format!("the database was unavailable: {e}");
                jobs::postpone(store, job.id, &self.id, &note, now + OUTAGE_WAIT_US, now).await?;
            }
            Err(e) => {
                let final_refusal = matches!(e, ServiceError::Refused(_));
                let message = match e {
                    ServiceError::Internal(m) | ServiceError::Refused(m) => m,
                    other => other.to_string(),
                };
                // A panel's refusal (the name is someone else's, …) is not retried. Only the
                // jobs that drive a panel (and its DNS and database steps) can carry one;
                // others quote what another server answered (a webhook receiver, an SMTP
                // server, Stripe, a registrar, an ACME CA), which must not stop retries.
                let refused = matches!(
                    job.kind.as_str(),
                    JOB_PROVISION
                        | JOB_SUSPEND
                        | JOB_UNSUSPEND
                        | JOB_TERMINATE
                        | JOB_CHANGE_PASSWORD
                        | crate::renewals::JOB_SUSPEND_OVERDUE
                        | crate::plan_change::JOB_CHANGE_PACKAGE
                ) && message.contains(crate::drivers::REFUSED);
                let dead = job.attempts >= job.max_attempts || refused || final_refusal;
                let retry_at = (!dead).then(|| now + backoff_us(job.attempts));
                tracing::warn!(error = %message, dead, "job failed");
                jobs::fail(store, job.id, &self.id, &message, retry_at, now).await?;
                self.lodge.after_failure(&job, &message, dead).await?;
            }
        }
        Ok(())
    }

    /// Extends the lease of the job it runs every [`Worker::heartbeat`] while the job runs;
    /// returns only if the lease is lost (another worker claimed the job: this node was
    /// cut off from the database for longer than the lease), after saying so.
    async fn keep_lease(&self, id: i64) {
        loop {
            tokio::time::sleep(self.heartbeat).await;
            let until = self.lodge.now_us() + self.lease_us;
            match jobs::renew(self.lodge.store.writer(), id, &self.id, until).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "the running job's lease was lost: another worker may run it too"
                    );
                    return;
                }
                // The next beat tries again; the lease has two more beats to run.
                Err(e) => tracing::warn!(error = %e, "the running job's lease was not renewed"),
            }
        }
    }

    /// Runs until `shutdown` turns true: scheduler passes every `schedule_every`, jobs as
    /// they come (polling every `poll`).
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        poll: Duration,
        schedule_every: Duration,
    ) {
        self.stop = Some(shutdown.clone());
        let mut last_schedule: Option<tokio::time::Instant> = None;
        // Rounds failed in a row (the database unreachable, its disk full): each waits
        // longer, up to half a minute, and is logged at the 1st, 2nd, 4th, 8th… (found by
        // the fault audit: several lines a second, on a full disk, for as long as it was).
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if matches!(self.lane, Lane::All | Lane::Rest)
                && last_schedule.is_none_or(|t| t.elapsed() >= schedule_every)
            {
                if let Err(e) = self.lodge.schedule_due().await {
                    tracing::error!(error = %e, "scheduler pass failed");
                }
                last_schedule = Some(tokio::time::Instant::now());
            }
            let ran = match self.run_once().await {
                Ok(n) => {
                    if failures > 0 {
                        tracing::info!(failures, "worker rounds work again");
                        failures = 0;
                    }
                    n
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures.is_power_of_two() {
                        tracing::error!(error = %e, failures, "worker round failed");
                    }
                    0
                }
            };
            if ran == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(round_wait(poll, failures)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// A username for an account: up to 8 letters of its domain, then its number (unique, as
/// [`crate::drivers::panel_username`] is: the name splits back at its first digit).
pub fn username_for(domain: &str, legacy_id: i64) -> String {
    crate::drivers::login_name(domain, 8, &legacy_id.unsigned_abs().to_string())
}

/// How many open card payments of settled invoices a scheduler pass cancels at most (each
/// one or two calls to Stripe); the rest wait for the next pass.
const SUPERSEDED_INTENTS_A_PASS: i64 = 50;

/// How long a worker waits before its next round: `poll`, doubled for each round failed in a
/// row, at most 30 s.
fn round_wait(poll: Duration, failures: u32) -> Duration {
    poll.saturating_mul(1 << failures.min(10))
        .min(Duration::from_secs(30).max(poll))
}

/// Whether the process of `/proc/<pid>` runs: it exists and is no zombie (one killed and not
/// yet reaped by its parent; found by the re-check).
fn process_runs(proc_pid: &std::path::Path) -> bool {
    match std::fs::read_to_string(proc_pid.join("stat")) {
        // `pid (comm) state …`: the state follows the last `)` (a name may hold one).
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// How long a job the database's outage interrupted waits before it is tried again.
const OUTAGE_WAIT_US: i64 = 15_000_000;

/// Whether a job's error is the database's unavailability, not the job's failure.
fn database_outage(e: &ServiceError) -> bool {
    matches!(e, ServiceError::Store(s) if s.is_unavailable())
}

/// The process id in a worker id of this node's (`<node name>-<process id>-<random>`, as
/// `lodge serve` and `lodge worker` name their workers, then `/webhooks` or `/mail` for
/// those lanes: [`Worker::on_lane`]), `None` for another node's or another form.
fn worker_process(worker: &str, node: &str) -> Option<u32> {
    let rest = worker.strip_prefix(node)?.strip_prefix('-')?;
    let rest = rest.split_once('/').map_or(rest, |(id, _lane)| id);
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

impl Lodge {
    /// On SQLite, where every worker runs on this machine: the claims of this node's workers
    /// whose process is gone (killed, crashed, the machine restarted) end now, instead of
    /// when their lease runs out, so that the accounts a paid order was provisioning when
    /// Lodge died are taken up at the next start rather than two minutes later, and staff
    /// actions on them are not held that long (found by the crash audit). A claim of a
    /// process still running (a `lodge worker` beside `serve`) is left alone, as is any
    /// claim whose holder cannot be told (another node's name, another form), and
    /// PostgreSQL's: there nodes of one name may run on several machines, where a process
    /// id says nothing, and their claims end with their lease. Where `/proc` is missing
    /// (not Linux) nothing is ended. Returns how many claims ended.
    pub async fn end_claims_of_dead_workers(&self) -> Result<usize> {
        let proc = std::path::Path::new("/proc");
        if self.store.engine() != lodge_store::Engine::Sqlite || !proc.join("self").exists() {
            return Ok(0);
        }
        let node = &self.settings.node_name;
        let claims = jobs::running_claims(self.store.reader()).await?;
        let now = self.now_us();
        let mut ended = 0;
        for (id, worker) in claims {
            let Some(pid) = worker_process(&worker, node) else {
                continue;
            };
            // This process's own id is an earlier one's (a container restarted keeps its
            // host name and is process 1 again): its worker claims nothing before this.
            if pid != std::process::id() && process_runs(&proc.join(pid.to_string())) {
                continue;
            }
            if jobs::end_lease(self.store.writer(), id, &worker, now - 1).await? {
                tracing::info!(job = id, worker = %worker, "a claim of a worker process that is gone ended at start");
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Runs one job's work. Errors are retried by the worker.
    async fn perform(&self, job: &JobRow) -> Result<()> {
        match job.kind.as_str() {
            JOB_PROVISION => {
                self.provision(payload::<HostingPayload>(job)?.hosting_id)
                    .await
            }
            JOB_SUSPEND => {
                let p = payload::<HostingPayload>(job)?;
                self.lifecycle(&p, Lifecycle::Suspend).await
            }
            JOB_UNSUSPEND => {
                let p = payload::<HostingPayload>(job)?;
                self.lifecycle(&p, Lifecycle::Unsuspend).await
            }
            JOB_TERMINATE => {
                let p = payload::<HostingPayload>(job)?;
                self.lifecycle(&p, Lifecycle::Terminate).await
            }
            crate::gateway::JOB_CARD_REFUND => self.card_refund_job(&job.payload).await,
            crate::renewals::JOB_RENEW_DOMAIN => {
                #[derive(Deserialize)]
                struct Renew {
                    domain_id: lodge_core::DomainId,
                    years: u32,
                    #[serde(default)]
                    from: Option<String>,
                }
                let p = payload::<Renew>(job)?;
                let source = job
                    .dedupe_key
                    .clone()
                    .unwrap_or_else(|| format!("job:{}", job.id));
                self.renew_domain(p.domain_id, p.years, &source, p.from.as_deref())
                    .await
            }
            crate::renewals::JOB_SUSPEND_OVERDUE => {
                let p = payload::<HostingPayload>(job)?;
                let invoice = p.invoice_id.ok_or_else(|| {
                    ServiceError::Internal(format!("job {} names no invoice", job.id))
                })?;
                self.suspend_overdue(p.hosting_id, invoice).await
            }
            JOB_CHANGE_PASSWORD => {
                self.run_change_password(payload::<HostingPayload>(job)?.hosting_id)
                    .await
            }
            JOB_EXPIRE_ORDER => {
                self.expire_order(payload::<OrderPayload>(job)?.order_id)
                    .await
            }
            crate::plan_change::JOB_CHANGE_PACKAGE => self.run_change_package(job).await,
            crate::webhooks::JOB_WEBHOOK => self.run_webhook(job).await,
            crate::mail::JOB_MAIL => self.run_mail_job(job).await,
            crate::tls::JOB_ISSUE_CERTIFICATE => self.run_issue_certificate(job).await,
            JOB_REGISTER_DOMAIN | JOB_TRANSFER_DOMAIN => {
                self.run_registrar(payload::<DomainPayload>(job)?.domain_id, &job.kind)
                    .await
            }
            other => Err(ServiceError::Internal(format!(
                "unknown job kind {other:?}"
            ))),
        }
    }

    /// Whether the account's creation on its server is over, so that a termination finds
    /// there all it must remove: `NotYet` while its latest provisioning job (the order's,
    /// or a staff retry's) is queued or running, and for [`CREATION_SETTLE_US`] after it
    /// failed for good (its last create, whose answer may have timed out, may still be
    /// finishing on the panel). Else a termination found nothing, ended the account, and
    /// the panel then finished making it: a live account nothing would remove (found by the
    /// panels audit).
    async fn creation_settled(&self, h: &HostingRow) -> Result<()> {
        let now = self.now_us();
        let Some(job) =
            jobs::latest_for_hosting(self.store.reader(), &h.id.to_string(), JOB_PROVISION).await?
        else {
            return Ok(());
        };
        match job.status {
            JobStatus::Queued | JobStatus::Running => Err(ServiceError::NotYet(
                now + CREATION_WAIT_US,
                "the account is still being created on its server: its termination waits until that is over".into(),
            )),
            // Failed for good: its last attempt's create may have timed out unanswered.
            JobStatus::Dead if job.modified_at + CREATION_SETTLE_US > now => {
                Err(ServiceError::NotYet(
                    job.modified_at + CREATION_SETTLE_US,
                    "the account's creation ended moments ago and may still be finishing on its server: its termination waits".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// After a failed attempt: show the error on the hosting account; when the job is out of
    /// attempts, a provisioning account becomes `failed`.
    async fn after_failure(&self, job: &JobRow, message: &str, dead: bool) -> Result<()> {
        if job.kind == crate::tls::JOB_ISSUE_CERTIFICATE {
            return Ok(()); // shown on the certificate, not as the account's error
        }
        let Ok(p) = serde_json::from_str::<HostingPayload>(&job.payload) else {
            return Ok(());
        };
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        hosting::set_last_error(&mut tx, p.hosting_id, Some(message), now).await?;
        if dead && job.kind == JOB_PROVISION {
            hosting::transition(
                &mut tx,
                p.hosting_id,
                HostingEvent::ProvisionFailed,
                message,
                &format!("job:{}", job.id),
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The account as its driver sees it, and the driver bound to its server; `None` when
    /// it is on no server.
    pub(crate) async fn account(&self, h: &HostingRow) -> Result<Option<(Account, Target)>> {
        let Some(server_id) = h.server_id.as_deref() else {
            return Ok(None);
        };
        let server_id: ServerId = server_id
            .parse()
            .map_err(|_| ServiceError::Internal("bad server id".into()))?;
        let server = servers::by_id(self.store.reader(), server_id)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("server {server_id} is gone")))?;
        let target = self.target(&server)?;
        let package = self.package_for(h.plan_id, &server.driver).await?;
        let password = match hosting::secret(self.store.reader(), h.id).await? {
            Some(s) => Some(self.sealer.open(&s)?),
            None => None,
        };
        let limits = self
            .catalog()
            .await?
            .plan(h.plan_id)
            .map(|p| crate::drivers::PlanLimits::of(&p.row))
            .unwrap_or_default();
        Ok(Some((
            Account {
                username: h
                    .username
                    .clone()
                    .unwrap_or_else(|| target.driver.username(&h.domain_name, h.legacy_id)),
                domain: h.domain_name.clone(),
                package,
                password,
                server: server.hostname.clone(),
                limits,
                client_ip: None,
            },
            target,
        )))
    }

    /// The panel package of a plan on servers of `driver`: the catalog's `packages` entry for
    /// the driver, else the plan's `field2`, else its slug.
    pub(crate) async fn package_for(&self, plan: PlanId, driver: &str) -> Result<String> {
        if let Some(p) =
            lodge_store::catalog::plan_package(self.store.reader(), plan, driver).await?
        {
            return Ok(p);
        }
        let catalog = self.catalog().await?;
        Ok(catalog
            .plan(plan)
            .map(|p| {
                if p.row.field2.is_empty() {
                    p.row.slug.clone()
                } else {
                    p.row.field2.clone()
                }
            })
            .unwrap_or_default())
    }

    /// The driver of a server, bound to it (a panel driver connects with its credentials).
    pub(crate) fn target(&self, server: &servers::ServerRow) -> Result<Target> {
        // A server bound to a node (the nginx driver's: its sites are that machine's files)
        // is acted on there only (found by the multi-node audit: another node's worker
        // "suspended" sites on its own machine while the live ones kept serving).
        if let Some(node) = server.node.as_deref() {
            if !node.eq_ignore_ascii_case(&self.settings.node_name) {
                return Err(ServiceError::OtherNode(
                    node.to_owned(),
                    format!(
                        "the server {:?} is acted on by the Lodge node {node:?} (this is {:?}): \
                     its jobs wait for that node's worker",
                        server.name, self.settings.node_name
                    ),
                ));
            }
        }
        let credentials = server
            .credentials
            .as_deref()
            .map(|c| self.sealer.open(c))
            .transpose()?;
        let access = crate::drivers::ServerAccess {
            hostname: server.hostname.clone(),
            credentials,
        };
        let driver = self
            .drivers
            .for_server(&server.driver, &access)
            .ok_or_else(|| {
                ServiceError::Internal(format!("no provisioning driver named {:?}", server.driver))
            })?
            .map_err(|e| ServiceError::Internal(format!("{}: {e}", server.driver)))?;
        Ok(Target {
            name: server.driver.clone(),
            driver,
        })
    }

    /// Creates the account on its server (idempotent) and marks it active.
    async fn provision(&self, id: HostingId) -> Result<()> {
        let Some(h) = hosting::hosting(self.store.reader(), id).await? else {
            return Ok(());
        };
        if h.status != HostingStatus::Provisioning {
            return Ok(()); // already active, cancelled or terminated: nothing to do
        }
        let mut h = h;
        if h.server_id.is_none() {
            // Ordered before any server existed, or its server was removed: place it now.
            let plan = self.catalog().await?.plan(h.plan_id).cloned();
            let driver = plan.map(|p| p.row.driver).unwrap_or_else(|| "nginx".into());
            let server = servers::place(&mut self.store.read_conn().await?, &driver, h.plan_id)
                .await?
                .ok_or_else(|| {
                    ServiceError::Internal("All webhosting servers are currently full.".into())
                })?
                .server;
            let mut tx = self.store.begin().await?;
            hosting::set_server(&mut tx, id, Some(&server.to_string()), None, self.now_us())
                .await?;
            tx.commit().await.map_err(StoreError::from)?;
            h.server_id = Some(server.to_string());
        }
        let Some((account, target)) = self.account(&h).await? else {
            return Err(ServiceError::Internal("the account has no server".into()));
        };
        if h.username.is_none() && self.drivers.is_panel(&target.name) {
            // Stored before the first call to a panel: every retry makes the same call, and
            // a failed account shows the name the panel refused. (The nginx driver's name is
            // the same on every attempt and is stored once the site exists.)
            let mut tx = self.store.begin().await?;
            hosting::set_server(&mut tx, id, None, Some(&account.username), self.now_us()).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        let password_replaced = match target.driver.create(&account).await {
            // The panel refused the customer's password (below its minimum strength, which
            // Lodge cannot know): the paid account is made with a strong password of
            // Lodge's instead of failing for good (found by the panels audit); the customer
            // sets their own later, or logs in with the one-time control panel link.
            Err(e)
                if e.is_refused()
                    && account.password.is_some()
                    && e.0.to_ascii_lowercase().contains("password") =>
            {
                tracing::warn!(hosting = %id, error = %e, "the panel refused the chosen password; creating the account with a generated one");
                let generated = Account {
                    password: None,
                    ..account.clone()
                };
                target.driver.create(&generated).await.map(|()| true)
            }
            r => r.map(|()| false),
        }
        .map_err(|e| ServiceError::Internal(format!("{}: {e}", target.name)))?;
        // Its DNS zone (when DNS hosting is on): created, or adopted on a retry.
        self.create_zone(&h).await?;
        // Its database (when MariaDB is on and the plan has databases; a control panel
        // makes its own): made, or found.
        if !self.drivers.is_panel(&target.name) {
            self.create_database(&h, &account.username).await?;
        }
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        hosting::set_server(&mut tx, id, None, Some(&account.username), now).await?;
        hosting::set_last_error(&mut tx, id, None, now).await?;
        if password_replaced {
            lodge_store::plan_change::note_history(
                &mut *tx,
                id,
                h.status,
                "the panel refused the chosen password as too weak: the account was made with a strong password; set a new one, or use the control panel login link",
                "system",
                now,
            )
            .await?;
        }
        if hosting::transition(
            &mut tx,
            id,
            HostingEvent::Provisioned,
            "provisioned",
            "worker",
            now,
        )
        .await?
        {
            crate::events::hosting_event(
                &mut *tx,
                crate::events::EventKind::HostingActive,
                id,
                "provisioned",
                "worker",
                now,
            )
            .await?;
            // Its certificate, by a job of its own: provisioning never waits for TLS.
            self.enqueue_certificate(&mut tx, id, &target.name).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn lifecycle(&self, p: &HostingPayload, op: Lifecycle) -> Result<()> {
        let id = p.hosting_id;
        let reason = p.reason.as_deref();
        let Some(h) = hosting::hosting(self.store.reader(), id).await? else {
            return Ok(());
        };
        let event = op.event();
        if h.status.next(event).is_none() {
            return Ok(()); // already there, or past it
        }
        if op == Lifecycle::Terminate
            && h.cancel_type.is_none()
            && h.status == HostingStatus::Pending
        {
            return Ok(());
        }
        // The scheduler lifts only its own suspension: staff who suspended the account too
        // after the payment queued this (at the same moment, on another node) keep theirs
        // (found by review).
        if op == Lifecycle::Unsuspend
            && p.actor() == crate::renewals::SCHEDULER
            && lodge_store::renewals::last_suspended_by(&mut self.store.read_conn().await?, id)
                .await?
                .as_deref()
                != Some(crate::renewals::SCHEDULER)
        {
            return Ok(());
        }
        // A cancellation withdrawn after its termination was queued: nothing to terminate.
        // Staff terminations and overdue renewals (the invoice is cancelled) are decided.
        if op == Lifecycle::Terminate
            && h.cancel_type.is_none()
            && !matches!(reason, Some("staff" | "overdue"))
        {
            return Ok(());
        }
        if op == Lifecycle::Terminate {
            self.creation_settled(&h).await?;
        }
        if let Some((account, target)) = self.account(&h).await? {
            let d = &target.driver;
            let r = match op {
                Lifecycle::Suspend => d.suspend(&account).await,
                Lifecycle::Unsuspend => d.unsuspend(&account).await,
                Lifecycle::Terminate => match d.terminate(&account).await {
                    // An account that failed because its name on the panel is someone
                    // else's holds nothing there to remove, and the other one must not be
                    // touched: it ends (found by the panels audit: it could never end,
                    // holding its domain). Only a failed account: a live one refused so
                    // (its domain renamed on the panel, another login) stays to be seen to.
                    Err(e) if e.is_refused() && h.status == HostingStatus::Failed => {
                        tracing::warn!(hosting = %id, error = %e, "terminating a failed account whose name on the panel is another's: nothing of ours to remove");
                        Ok(())
                    }
                    r => r,
                },
            };
            r.map_err(|e| ServiceError::Internal(format!("{}: {e}", target.name)))?;
        }
        // Its database user is locked while suspended; on termination the database is
        // dumped into the archive, then dropped.
        match op {
            Lifecycle::Suspend => self.lock_database(&h, true).await?,
            Lifecycle::Unsuspend => self.lock_database(&h, false).await?,
            Lifecycle::Terminate => self.remove_database(&h).await?,
        }
        // A suspended account keeps its zone (its suspension page is served at the same
        // address); a terminated one's zone goes.
        if op == Lifecycle::Terminate {
            self.remove_zone(&h).await?;
        }
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        let note = p.note.as_deref().unwrap_or(op.note());
        let moved = hosting::transition(&mut tx, id, event, note, p.actor(), now).await?;
        // Every step of it went through: an error an earlier attempt left is over (found
        // by the stack audit: the customer was told of a failure after it had been
        // retried and done, even after termination).
        hosting::set_last_error(&mut tx, id, None, now).await?;
        if op == Lifecycle::Terminate {
            self.retire_certificate(&mut tx, id).await?;
        }
        if moved {
            let kind = match op {
                Lifecycle::Suspend => crate::events::EventKind::HostingSuspended,
                Lifecycle::Unsuspend => crate::events::EventKind::HostingUnsuspended,
                Lifecycle::Terminate => crate::events::EventKind::HostingTerminated,
            };
            crate::events::hosting_event(&mut *tx, kind, id, note, p.actor(), now).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        if moved && op == Lifecycle::Terminate {
            // In its own transaction, in the money paths' lock order (organization first);
            // if this fails the overdue pass still cancels the invoice in the end.
            if let Err(e) = self.release_unpaid_renewals(h.organization_id, id).await {
                tracing::warn!(error = %e, "releasing a terminated account's unpaid renewals failed");
            }
            if let Err(e) = self.release_awaiting_change(h.organization_id, id).await {
                tracing::warn!(error = %e, "releasing a terminated account's waiting plan change failed");
            }
        }
        Ok(())
    }

    async fn expire_order(&self, order_id: i64) -> Result<()> {
        let Some(order) = billing::order(self.store.reader(), order_id).await? else {
            return Ok(());
        };
        let mut tx = self.store.begin().await?;
        self.cancel_pending_order(
            &mut tx,
            order.organization_id,
            order_id,
            "unpaid invoice expired",
            "scheduler",
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn run_registrar(&self, id: lodge_core::DomainId, kind: &str) -> Result<()> {
        let Some(d) = hosting::domain(self.store.reader(), id).await? else {
            return Ok(());
        };
        let registrar = self.registrar_of(&d).await?;
        let name = lodge_core::DomainName::parse(&d.name)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        // Recorded with the registrar its job asks (the one its TLD goes to now, if it went
        // elsewhere since the order: found by review, the order's was kept).
        if d.registrar != registrar.name_for(&name) {
            self.record_registrar(id, registrar.name_for(&name)).await?;
        }
        if registrar.has_registry(&name) {
            // A registry to ask and read back (EPP): crate::registrar::jobs.
            return if kind == JOB_REGISTER_DOMAIN {
                if d.status != DomainStatus::PendingRegistration {
                    return Ok(());
                }
                self.register_at_registry(&d).await
            } else {
                if d.status != DomainStatus::PendingTransfer {
                    return Ok(());
                }
                let epp: Option<String> = sealed_epp_code(self, id).await?;
                self.transfer_at_registry(&d, epp.as_deref().unwrap_or(""))
                    .await
            };
        }
        let outcome = if kind == JOB_REGISTER_DOMAIN {
            if d.status != DomainStatus::PendingRegistration {
                return Ok(());
            }
            registrar.register(&name, 1).await
        } else {
            if d.status != DomainStatus::PendingTransfer {
                return Ok(());
            }
            let epp: Option<String> = sealed_epp_code(self, id).await?;
            registrar
                .transfer(&name, epp.as_deref().unwrap_or(""))
                .await
        }
        .map_err(|e| ServiceError::Internal(format!("registrar: {e}")))?;
        // Refused for good (no registrar without a registry says so today): cancelled with
        // its line back to credit, as at a registry, not left pending (found by review).
        if let Outcome::Refused(why) = &outcome {
            return self.domain_failed(&d, why, "registrar").await.map(drop);
        }
        if let Outcome::Completed {
            registration_date,
            expiration_date,
        } = outcome
        {
            let mut tx = self.store.begin().await?;
            hosting::activate_domain(
                &mut tx,
                id,
                &registration_date,
                &expiration_date,
                "[]",
                self.now_us(),
                false,
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(())
    }

    /// One scheduler pass: enqueues each due item's job exactly once (dedupe keys), whichever
    /// node runs it, then forgets the `Idempotency-Key`s older than
    /// [`IDEMPOTENCY_KEY_TTL_US`] (housekeeping: its failure is logged, and does not fail
    /// the pass). Returns how many jobs were newly enqueued.
    pub async fn schedule_due(&self) -> Result<usize> {
        Ok(self.scheduler_pass().await?.jobs_queued)
    }

    /// One scheduler pass ([`Lodge::schedule_due`]), with what each part did. The renewal
    /// and overdue passes log their failures and leave them to the next pass.
    pub async fn scheduler_pass(&self) -> Result<SchedulerPass> {
        let mut added = self.enqueue_due().await?;
        let mut failed_steps = 0;
        // Before the renewals, which the credit it gives back may pay.
        match self.expire_stale_plan_changes().await {
            Ok(n) if n > 0 => tracing::info!(
                changes = n,
                "plan changes unpaid past their period cancelled"
            ),
            Ok(_) => {}
            Err(e) => {
                failed_steps += 1;
                tracing::error!(error = %e, "the stale plan change pass failed; the next one goes on")
            }
        }
        let renewals = match self.bill_renewals().await {
            Ok(pass) => {
                if pass.invoices > 0 || pass.failed > 0 {
                    tracing::info!(
                        invoices = pass.invoices,
                        periods = pass.periods,
                        paid_from_credit = pass.paid_from_credit,
                        failed = pass.failed,
                        "renewals billed"
                    );
                }
                pass
            }
            Err(e) => {
                failed_steps += 1;
                tracing::error!(error = %e, "the renewal pass failed; the next one goes on");
                crate::renewals::RenewalPass::default()
            }
        };
        if let Err(e) = self.renewal_notices().await {
            failed_steps += 1;
            tracing::error!(error = %e, "the renewal notices pass failed; the next one goes on");
        }
        let overdue = match self.enforce_overdue().await {
            Ok(pass) => pass,
            Err(e) => {
                failed_steps += 1;
                tracing::error!(error = %e, "the overdue pass failed; the next one goes on");
                crate::renewals::OverduePass::default()
            }
        };
        added += overdue.suspensions + overdue.terminations;
        // After the overdue pass: on the day a renewal's accounts are terminated, its
        // domains expire too, and the invoice is cancelled whole (its money back) rather
        // than lightened by their lines first.
        match self.expire_domains().await {
            Ok(n) if n > 0 => tracing::info!(domains = n, "domains expired unrenewed"),
            Ok(_) => {}
            Err(e) => {
                failed_steps += 1;
                tracing::error!(error = %e, "the domain expiry pass failed; the next one goes on")
            }
        }
        // Certificates due for renewal (or never issued).
        match self.enqueue_certificate_renewals().await {
            Ok(n) => added += n,
            Err(e) => {
                failed_steps += 1;
                tracing::error!(error = %e, "the certificate renewal pass failed; the next one goes on")
            }
        }
        // The registries: poll queues (finishing transfers) and the daily sync.
        match self.registry_pass().await {
            Ok(p) if p.messages > 0 || p.synced > 0 || p.failed > 0 => {
                tracing::info!(
                    messages = p.messages,
                    transfers = p.transfers,
                    registrations = p.registrations,
                    synced = p.synced,
                    failed = p.failed,
                    "registry pass"
                );
            }
            Ok(_) => {}
            Err(e) => {
                failed_steps += 1;
                tracing::error!(error = %e, "the registry pass failed; the next one goes on")
            }
        }
        // Card forms left open on invoices settled otherwise.
        match self
            .cancel_superseded_intents(SUPERSEDED_INTENTS_A_PASS)
            .await
        {
            Ok(n) if n > 0 => tracing::info!(intents = n, "card payments no longer due cancelled"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cancelling card payments no longer due failed; the next pass goes on")
            }
        }
        if let Err(e) = self.forget_idempotency_keys().await {
            tracing::warn!(error = %e, "forgetting old idempotency keys failed; next pass retries");
        }
        if let Err(e) = self.forget_ended_logins().await {
            tracing::warn!(error = %e, "forgetting ended logins failed; next pass retries");
        }
        match self.forget_old_records().await {
            Ok(f) if f.jobs + f.deliveries + f.mail > 0 => tracing::info!(
                jobs = f.jobs,
                webhook_deliveries = f.deliveries,
                mail = f.mail,
                days = self.settings.retention_days,
                "records past the retention window forgotten"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "forgetting records past the retention window failed; next pass retries")
            }
        }
        Ok(SchedulerPass {
            jobs_queued: added,
            renewals,
            overdue,
            failed_steps,
        })
    }

    async fn enqueue_due(&self) -> Result<usize> {
        let now = self.now_us();
        let mut added = 0;
        let cutoff = now - self.settings.invoice_expiry_days * lodge_store::DAY_US;
        for order in billing::expired_first_invoices(self.store.reader(), cutoff).await? {
            let mut tx = self.store.begin().await?;
            if self
                .enqueue(
                    &mut tx,
                    JOB_EXPIRE_ORDER,
                    serde_json::json!({ "order_id": order }),
                    &format!("expire:{order}"),
                )
                .await?
            {
                added += 1;
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        let today = self.today().to_string();
        for (id, asked_at) in hosting::cancellations_due(self.store.reader(), &today).await? {
            let mut tx = self.store.begin().await?;
            if crate::billing::termination_waiting(&mut tx, &id.to_string()).await? {
                tx.rollback().await.map_err(StoreError::from)?;
                continue;
            }
            if self
                .enqueue(
                    &mut tx,
                    JOB_TERMINATE,
                    serde_json::json!({ "hosting_id": id, "reason": "end of period" }),
                    &crate::billing::terminate_key(id, &format!("cancel:{asked_at}")),
                )
                .await?
            {
                added += 1;
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(added)
    }

    /// Forgets the `Idempotency-Key`s stored more than [`IDEMPOTENCY_KEY_TTL_US`] ago, a
    /// thousand at a time (each delete a short write), at most ten thousand a pass so that a
    /// backlog (after a long stop) never holds the scheduler up; the next passes go on.
    /// Returns how many were forgotten.
    pub async fn forget_idempotency_keys(&self) -> Result<u64> {
        let before = self.now_us() - IDEMPOTENCY_KEY_TTL_US;
        let writer = self.store.writer();
        let forgotten = in_rounds(lodge_store::idempotency::FORGET_AT_ONCE, || {
            lodge_store::idempotency::forget_before(writer, before)
        })
        .await?;
        Ok(forgotten)
    }

    /// Forgets the logins a day past their expiry (refused by it anyway): `/v1` refresh
    /// tokens, and `/apiv2` sessions (found by the soak audit: kept for ever).
    pub async fn forget_ended_logins(&self) -> Result<()> {
        let before = self.now_us() - lodge_store::DAY_US;
        let mut db = self
            .store
            .writer()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        lodge_store::tokens::forget_expired(&mut *db, before).await?;
        drop(db);
        let writer = self.store.writer();
        in_rounds(lodge_store::retention::FORGET_AT_ONCE, move || {
            lodge_store::retention::forget(writer, lodge_store::retention::Record::Sessions, before)
        })
        .await?;
        Ok(())
    }

    /// Forgets what is older than [`Settings::retention_days`] (nothing when it is 0): jobs
    /// done, webhook delivery attempts and the mail log, and dead webhook deliveries and
    /// mails (`jobs` counts both kinds of job); up to ten thousand rows of each a
    /// pass, in short statements of a thousand, so that the first pass over a large
    /// backlog never holds the scheduler (or the SQLite writer) up; the next passes go on.
    ///
    /// The window is never shorter than the termination grace: until an unpaid renewal
    /// terminates its accounts, the scheduler's suspension pass knows an account it
    /// suspended for that invoice (and staff may have unsuspended) by that job's key, and
    /// forgetting the job would suspend it again (found by review).
    pub async fn forget_old_records(&self) -> Result<Forgotten> {
        use lodge_store::retention::{self, Record};
        if self.settings.retention_days <= 0 {
            return Ok(Forgotten::default());
        }
        let days = self
            .settings
            .retention_days
            .max(self.settings.policy.terminate_after_days + 1);
        let before = self.now_us() - days * lodge_store::DAY_US;
        let writer = self.store.writer();
        let forget = |what| {
            in_rounds(retention::FORGET_AT_ONCE, move || {
                retention::forget(writer, what, before)
            })
        };
        Ok(Forgotten {
            jobs: forget(Record::DoneJobs).await?
                + forget(Record::DeadDeliveries(OWN_LANES[0], OWN_LANES[1])).await?,
            deliveries: forget(Record::Deliveries).await?,
            mail: forget(Record::Mail).await?,
        })
    }

    /// Staff lifecycle operations on a hosting account (`/v1/admin/hosting/{id}/…`).
    pub async fn admin_hosting(
        &self,
        id: HostingId,
        action: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<HostingRow> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        // Under the account's lock: two staff actions at once are judged one after the
        // other (the open-jobs check below sees the first one's job).
        let h = hosting::lock_hosting(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let conflict = |what: &str| {
            ServiceError::Conflict(format!("Cannot {what} an account that is {}.", h.status))
        };
        // One such action at a time: a second would be judged against the status before
        // the first is done (three suspends queued, or an unsuspend after a terminate).
        if matches!(action, "suspend" | "unsuspend" | "terminate") {
            let open = jobs::open_kinds_for_hosting(
                &mut tx,
                &id.to_string(),
                &[JOB_SUSPEND, JOB_UNSUSPEND, JOB_TERMINATE],
            )
            .await?;
            if let Some(kind) = open.first() {
                let what = match kind.as_str() {
                    JOB_SUSPEND => "suspension",
                    JOB_UNSUSPEND => "unsuspension",
                    _ => "termination",
                };
                return Err(ServiceError::Conflict(format!(
                    "A {what} of this account is under way: try again once it is done."
                )));
            }
        }
        match action {
            // Suspended already for an unpaid renewal: staff's own suspension is recorded
            // (nothing to do on the server), so that paying the renewal no longer lifts it
            // (found by the billing audit: 409, and an abuse suspension could not be put
            // in place until the renewal was paid, which then lifted it).
            "suspend"
                if h.status == HostingStatus::Suspended
                    && lodge_store::renewals::last_suspended_by(&mut tx, id)
                        .await?
                        .as_deref()
                        == Some(crate::renewals::SCHEDULER) =>
            {
                let note = match reason {
                    Some(r) => format!("suspended by staff too: {r}"),
                    None => "suspended by staff too".to_owned(),
                };
                hosting::record_history(&mut tx, id, Some(h.status), h.status, &note, actor, now)
                    .await?;
            }
            "suspend" => {
                if h.status.next(HostingEvent::Suspend).is_none() {
                    return Err(conflict("suspend"));
                }
                self.enqueue_by(&mut tx, JOB_SUSPEND, id, Some((actor, reason)), now)
                    .await?;
            }
            "unsuspend" => {
                if h.status.next(HostingEvent::Unsuspend).is_none() {
                    return Err(conflict("unsuspend"));
                }
                self.enqueue_by(&mut tx, JOB_UNSUSPEND, id, Some((actor, reason)), now)
                    .await?;
            }
            "terminate" => {
                // A never-paid account is cancelled, not terminated.
                if h.status == HostingStatus::Pending
                    || h.status.next(HostingEvent::Terminate).is_none()
                {
                    return Err(conflict("terminate"));
                }
                // Keyed per request: a termination that ran before (a withdrawn
                // cancellation's) must not keep this one out; one still open is refused
                // above.
                self.enqueue(
                    &mut tx,
                    JOB_TERMINATE,
                    serde_json::json!({ "hosting_id": id, "reason": "staff", "actor": actor,
                                        "note": reason }),
                    &crate::billing::terminate_key(id, &format!("staff:{now}")),
                )
                .await?;
            }
            "retry" => {
                // Under the account's lock: of two retries one wins, the other is refused.
                if !hosting::transition(
                    &mut tx,
                    id,
                    HostingEvent::Retry,
                    reason.unwrap_or("retry by staff"),
                    actor,
                    now,
                )
                .await?
                {
                    return Err(conflict("retry provisioning of"));
                }
                let key = format!("provision:{id}");
                match jobs::by_dedupe_key(&mut *tx, &key).await? {
                    Some(job) if job.status == JobStatus::Dead => {
                        jobs::retry(&mut *tx, job.id, now).await?;
                    }
                    // Still waiting out a failure's backoff: tried now.
                    Some(job) if job.status == JobStatus::Queued => {
                        jobs::run_now(&mut *tx, job.id, now).await?;
                    }
                    _ => {
                        self.enqueue_plain(&mut tx, JOB_PROVISION, id, now).await?;
                    }
                }
            }
            _ => return Err(ServiceError::NotFound),
        }
        tx.commit().await.map_err(StoreError::from)?;
        hosting::hosting(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    async fn enqueue_plain(
        &self,
        conn: &mut lodge_store::AnyConnection,
        kind: &str,
        id: HostingId,
        now: i64,
    ) -> Result<()> {
        self.enqueue_by(conn, kind, id, None, now).await
    }

    /// [`Self::enqueue_plain`], naming who asked (`Some`: staff, and the reason they gave)
    /// for the history.
    async fn enqueue_by(
        &self,
        conn: &mut lodge_store::AnyConnection,
        kind: &str,
        id: HostingId,
        actor: Option<(&str, Option<&str>)>,
        now: i64,
    ) -> Result<()> {
        let payload = match actor {
            Some((actor, note)) => {
                serde_json::json!({ "hosting_id": id, "actor": actor, "note": note })
            }
            None => serde_json::json!({ "hosting_id": id }),
        };
        jobs::enqueue(
            conn,
            &jobs::NewJob {
                kind,
                payload: &payload.to_string(),
                dedupe_key: None,
                run_at: now,
                max_attempts: 8,
                now,
            },
        )
        .await?;
        Ok(())
    }

    /// The job queue now, for monitoring (`/metrics`).
    pub async fn job_queue_stats(&self) -> Result<jobs::QueueStats> {
        Ok(jobs::queue_stats(self.store.reader(), self.now_us()).await?)
    }

    /// Dead jobs (or another status), newest first; only those older than the job `before`
    /// when given (the next page).
    pub async fn jobs_with_status(
        &self,
        status: JobStatus,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobRow>> {
        Ok(jobs::with_status(self.store.reader(), status, before, limit).await?)
    }

    /// Puts a dead job back in the queue with fresh attempts (a failed account goes back to
    /// provisioning), or runs now one waiting to be tried again after a failure.
    pub async fn retry_job(&self, id: i64, actor: &str) -> Result<JobRow> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        let job = jobs::by_id(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let revived = jobs::retry(&mut *tx, id, now).await?;
        // Else, waiting to be tried again after a failure (its backoff grows to an hour):
        // tried now, as staff who fixed its cause expect, its attempts kept.
        if !revived && !jobs::run_now(&mut *tx, id, now).await? {
            return Err(ServiceError::Conflict(format!(
                "This job is {}: only a dead job, or one waiting to be tried again after a \
                 failure, can be retried.",
                job.status
            )));
        }
        // A dead provisioning job's account goes back to provisioning.
        if revived && job.kind == JOB_PROVISION {
            if let Ok(p) = serde_json::from_str::<HostingPayload>(&job.payload) {
                hosting::transition(
                    &mut tx,
                    p.hosting_id,
                    HostingEvent::Retry,
                    "job retried",
                    actor,
                    now,
                )
                .await?;
            }
        }
        let job = jobs::by_id(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(job)
    }

    /// A customer sets the account's panel password: checked, sealed on the account, and
    /// sent to the panel by the worker (`change_password` job). Only a live account
    /// (active or suspended) on a server.
    pub async fn change_hosting_password(
        &self,
        access: &crate::auth::Access,
        project: Option<lodge_core::ProjectId>,
        id: HostingId,
        password: &str,
    ) -> Result<HostingRow> {
        access.require_write()?;
        let h = self.org_hosting(access, project, id).await?;
        if !panel_password_ok(password) {
            return Err(ServiceError::field("password", PANEL_PASSWORD_RULE));
        }
        if !matches!(h.status, HostingStatus::Active | HostingStatus::Suspended)
            || h.server_id.is_none()
        {
            return Err(ServiceError::Conflict(format!(
                "Cannot change the password of an account that is {}.",
                h.status
            )));
        }
        let sealed = self.sealer.seal(password)?;
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        hosting::set_secret(&mut tx, id, &sealed, now).await?;
        self.enqueue_plain(&mut tx, JOB_CHANGE_PASSWORD, id, now)
            .await?;
        lodge_store::plan_change::note_history(
            &mut *tx,
            id,
            h.status,
            "password change requested",
            &access.actor(),
            now,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.org_hosting(access, project, id).await
    }

    /// The worker's `change_password` job: the account's stored password to its panel.
    async fn run_change_password(&self, id: HostingId) -> Result<()> {
        let Some(h) = hosting::hosting(self.store.reader(), id).await? else {
            return Ok(());
        };
        if !matches!(h.status, HostingStatus::Active | HostingStatus::Suspended) {
            return Ok(()); // ended meanwhile
        }
        let Some((account, target)) = self.account(&h).await? else {
            return Ok(());
        };
        let Some(password) = account.password.as_deref() else {
            return Ok(());
        };
        target
            .driver
            .change_password(&account, password)
            .await
            .map_err(|e| ServiceError::Internal(format!("{}: {e}", target.name)))?;
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        lodge_store::plan_change::note_history(
            &mut *tx,
            id,
            h.status,
            "password changed on the panel",
            "worker",
            now,
        )
        .await?;
        hosting::set_last_error(&mut tx, id, None, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Where the customer logs in to the account's control panel: asked of the panel (a
    /// one-time link or session) for a live account on a panel server, else `None`. A panel
    /// that fails or takes over 10 s gives `None` (logged): the detail still answers.
    ///
    /// `client_ip` is the customer's address (a panel may bind the session to it). Only for
    /// a caller who may change the account: the panel changes everything (found by review:
    /// a read-only key, a viewer, a read-only staff key got it).
    pub async fn login_url(
        &self,
        access: &crate::auth::Access,
        h: &HostingRow,
        client_ip: Option<std::net::IpAddr>,
    ) -> Option<String> {
        if access.require_write().is_err()
            || !matches!(h.status, HostingStatus::Active | HostingStatus::Suspended)
        {
            return None;
        }
        let found = match self.account(h).await {
            Ok(Some(x)) => x,
            Ok(None) => return None,
            // Another node's server (nginx, no panel to log in to).
            Err(ServiceError::OtherNode(..)) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "no login URL: the account's server");
                return None;
            }
        };
        let (mut account, target) = found;
        if !self.drivers.is_panel(&target.name) {
            return None;
        }
        account.client_ip = client_ip;
        match tokio::time::timeout(Duration::from_secs(10), target.driver.login_url(&account)).await
        {
            Ok(Ok(url)) => url,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, driver = %target.name, "the panel gave no login URL");
                None
            }
            Err(_) => {
                tracing::warn!(driver = %target.name, "the panel's login URL timed out");
                None
            }
        }
    }

    /// Whether a plan can be placed on some server now.
    pub async fn has_room(&self, driver: &str, plan: PlanId) -> Result<bool> {
        let mut db = self.store.read_conn().await?;
        Ok(servers::place(&mut db, driver, plan).await?.is_some())
    }
}

async fn sealed_epp_code(lodge: &Lodge, id: lodge_core::DomainId) -> Result<Option<String>> {
    match hosting::epp_code(lodge.store.reader(), id).await? {
        Some(sealed) => Ok(Some(lodge.sealer.open(&sealed)?)),
        None => Ok(None),
    }
}

/// A server's driver, bound to that server.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub name: String,
    pub driver: std::sync::Arc<dyn crate::drivers::Provisioner>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Suspend,
    Unsuspend,
    Terminate,
}

impl Lifecycle {
    fn event(self) -> HostingEvent {
        match self {
            Lifecycle::Suspend => HostingEvent::Suspend,
            Lifecycle::Unsuspend => HostingEvent::Unsuspend,
            Lifecycle::Terminate => HostingEvent::Terminate,
        }
    }

    fn note(self) -> &'static str {
        match self {
            Lifecycle::Suspend => "suspended",
            Lifecycle::Unsuspend => "unsuspended",
            Lifecycle::Terminate => "terminated",
        }
    }
}

/// What a hosting account's password must be, as customers are told.
pub const PANEL_PASSWORD_RULE: &str =
    "8 to 64 printable ASCII characters, with at least one letter and one digit.";

/// Whether a hosting account's password keeps [`PANEL_PASSWORD_RULE`] (set when ordering
/// or changed later; every panel takes such a password).
pub fn panel_password_ok(password: &str) -> bool {
    (8..=64).contains(&password.chars().count())
        && password.chars().all(|c| c.is_ascii_graphic())
        && password.chars().any(|c| c.is_ascii_alphabetic())
        && password.chars().any(|c| c.is_ascii_digit())
}

impl Lodge {
    /// What the configured services say at start: each of PowerDNS (its API and key),
    /// MariaDB (the administrative login) and PHP-FPM (its pool and socket directories)
    /// that is on, with `Ok(what it said)` or `Err(why not)`. Nothing refuses to start on
    /// it (a service may come up later; jobs retry): the operator reads it in the log
    /// (found by the stack audit: a wrong key or password showed only at the first order).
    pub async fn check_services(&self) -> Vec<(&'static str, std::result::Result<String, String>)> {
        let mut out = Vec::new();
        if let Some(dns) = &self.dns {
            out.push((
                "powerdns",
                dns.check()
                    .await
                    .map(|()| "its API answers and takes the key".to_owned())
                    .map_err(|e| e.to_string()),
            ));
        }
        if let Some(db) = &self.mariadb {
            out.push(("mariadb", self.check_mariadb(db).await));
        }
        if self.settings.mail.is_some() {
            out.push((
                "smtp",
                self.check_smtp()
                    .await
                    .map(|()| "the server answers and takes the login".to_owned()),
            ));
        }
        if let Some(php) = &self.settings.php {
            // Made when missing (a socket directory under /run is gone after a reboot;
            // php-fpm, reloaded, then starts no pool at all).
            let mut problems = Vec::new();
            for (name, dir) in [("pool_dir", &php.pool_dir), ("socket_dir", &php.socket_dir)] {
                if let Err(e) = tokio::fs::create_dir_all(dir).await {
                    problems.push(format!("{name} {}: {e}", dir.display()));
                }
            }
            out.push((
                "php-fpm",
                if problems.is_empty() {
                    Ok("its pool and socket directories exist".to_owned())
                } else {
                    Err(problems.join("; "))
                },
            ));
        }
        out
    }

    /// The database server's version; and the accounts' grants made before `_` was escaped
    /// narrowed to their database (an installation upgraded from before 885bae6 kept
    /// them: found by the stack audit's follow-up).
    async fn check_mariadb(
        &self,
        db: &crate::mariadb::MariaDb,
    ) -> std::result::Result<String, String> {
        let version = db.check().await.map_err(|e| e.to_string())?;
        let accounts = lodge_store::databases::all_names(self.store.reader())
            .await
            .map_err(|e| e.to_string())?;
        match db.narrow_old_grants(&accounts).await {
            Ok((0, _)) => Ok(format!("server {version}")),
            Ok((n, beyond)) if beyond.is_empty() => Ok(format!(
                "server {version}; the grants of {n} accounts' databases narrowed to the one database (`_` was a wildcard in them)"
            )),
            Ok((n, beyond)) => Ok(format!(
                "server {version}; the grants of {n} accounts' databases narrowed to the one database (`_` was a wildcard in them); databases the accounts made through the old grants, kept but no longer granted, for staff to settle: {}",
                beyond.join(", ")
            )),
            Err(e) => Err(format!("server {version}; narrowing old grants: {e}")),
        }
    }

    /// On PostgreSQL (where several nodes may share the database): the active nginx
    /// servers that name no node, whose jobs run on whichever node takes them, on that
    /// node's machine; said once at start.
    pub async fn unbound_local_servers(&self) -> Result<Vec<String>> {
        if self.store.engine() != lodge_store::Engine::Postgres {
            return Ok(Vec::new());
        }
        Ok(servers::all(self.store.reader())
            .await?
            .into_iter()
            .filter(|s| s.is_active == 1 && s.driver == "nginx" && s.node.is_none())
            .map(|s| s.name)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rounds_wait_longer_up_to_half_a_minute() {
        let poll = Duration::from_millis(500);
        assert_eq!(round_wait(poll, 0), poll);
        assert_eq!(round_wait(poll, 1), Duration::from_secs(1));
        assert_eq!(round_wait(poll, 3), Duration::from_secs(4));
        assert_eq!(round_wait(poll, 7), Duration::from_secs(30));
        assert_eq!(round_wait(poll, u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn only_the_databases_unavailability_is_an_outage() {
        assert!(database_outage(&ServiceError::Store(StoreError::Db(
            sqlx::Error::PoolTimedOut
        ))));
        assert!(database_outage(&ServiceError::Store(
            StoreError::Unavailable("down".into())
        )));
        assert!(!database_outage(&ServiceError::Store(StoreError::NotFound)));
        assert!(!database_outage(&ServiceError::Internal(
            "panel said no".into()
        )));
        // A registrar or panel that cannot answer is the job's own failure, retried with
        // its attempts.
        assert!(!database_outage(&ServiceError::Unavailable(
            "registry down".into()
        )));
    }

    #[test]
    fn a_process_runs_while_its_proc_entry_is_no_zombie() {
        assert!(process_runs(std::path::Path::new("/proc/self")));
        assert!(!process_runs(std::path::Path::new("/proc/no-such-process")));
    }

    #[test]
    fn a_worker_id_names_its_process() {
        assert_eq!(worker_process("web-1-4242-0a1b2c", "web-1"), Some(4242));
        assert_eq!(worker_process("lodge-7-ffffff", "lodge"), Some(7));
        // The webhook and mail lanes' (found by review: their claims were not ended).
        assert_eq!(
            worker_process("web-1-4242-0a1b2c/webhooks", "web-1"),
            Some(4242)
        );
        assert_eq!(
            worker_process("web-1-4242-0a1b2c/mail", "web-1"),
            Some(4242)
        );
        // Another node's, or a node whose name only starts alike.
        assert_eq!(worker_process("web-1-4242-0a1b2c", "web"), None);
        assert_eq!(worker_process("web-10-4242-0a1b2c", "web-1"), None);
        // Not a worker id of that form.
        for id in [
            "web-1",
            "web-1-",
            "web-1-4242",
            "web-1-x-0a1b2c",
            "web-1-42-",
            "web-1-42-zz",
            "simulation",
        ] {
            assert_eq!(worker_process(id, "web-1"), None, "{id}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..30 {
            let b = backoff_us(attempt);
            let exp = u32::try_from(attempt.clamp(1, 20) - 1).unwrap();
            let base = (10_000_000_i64 << exp.min(20)).min(3_600_000_000);
            assert!(
                b >= base - base / 5 && b <= base + base / 5,
                "{attempt}: {b}"
            );
        }
    }

    #[test]
    fn usernames_are_safe() {
        assert_eq!(username_for("shop.example.com", 42), "shopexam42");
        assert_eq!(username_for("123.example.com", 7), "examplec7");
        assert_eq!(username_for("xn--bcher-kva.com", 9), "xnbcherk9");
        // The audit's collision on nginx.
        assert_ne!(
            username_for("shop.de", 125),
            username_for("shopde12.com", 5)
        );
    }
}
