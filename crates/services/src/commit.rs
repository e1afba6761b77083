//! Group commit, generic: a committer takes every unit of work waiting and commits them
//! together, instead of one durable commit (one wait for the disk, and on PostgreSQL for the
//! gapless invoice counter) per unit. Each unit is still all-or-nothing on its own: a batch
//! first runs as its use case says ([`BatchWrite::FIRST`]); if it runs without savepoints and a
//! unit fails, it is rolled back and run again with a savepoint per unit ([`Units`]). A unit
//! refused before it writes anything ([`BatchWrite::refuse`]) has not failed: its refusal is
//! its outcome and the batch goes on. No caller hears its outcome before the commit that
//! holds its unit is on disk.
//!
//! This module knows neither orders nor payments nor [`crate::Lodge`]: a use case describes
//! its batch with [`BatchWrite`] (the locks a batch takes first, how one unit is written,
//! what the batch writes after its units) next to its own code (`orders::batch`,
//! `billing::batch`), and hands units to a [`Committer`].
//!
//! On SQLite the batch runs on the store's batch writer ([`lodge_store::Store::batch`]): the
//! whole group commit is one call on the writer's own thread, without a thread hand-off per
//! statement. Elsewhere (PostgreSQL) it is a transaction on a pool connection, and several
//! batches may run at once ([`BatchWrite::COMMITTERS_ON_POSTGRES`]). A batch that meets a
//! deadlock or serialization failure is run again (nothing of it was acknowledged yet).
//!
//! "Nothing async inside a batch" holds by construction: a unit is written by
//! [`BatchWrite::write_one`], which receives the unit (its data and its
//! [`WriteCtx`](ctx::WriteCtx)) and a connection, and nothing else it could wait on. On the
//! batch writer, [`run_ready`] turns a wait on anything else into an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lodge_store::conn::{begin_unit, end_unit};
use lodge_store::deferred::Deferred;
use lodge_store::{run_ready, BatchConn, SqlConn, Store, StoreError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{Result, ServiceError};

pub mod ctx;

pub use ctx::{WriteCtx, WriteEnv};

/// At most this many units share one commit.
pub const MAX_BATCH: usize = 64;

/// Batches committing at once on PostgreSQL (SQLite has one writer: one at a time), unless
/// a use case says otherwise ([`BatchWrite::COMMITTERS_ON_POSTGRES`]).
pub const POSTGRES_COMMITTERS: usize = 4;

/// Runs of a batch that meets deadlocks or serialization failures before its units fail.
const ATTEMPTS: u32 = 4;

/// Batches one turn on the batch writer may run back to back (see [`on_writer`]).
pub const CHAINED_BATCHES: usize = 4;

/// The outcomes of a batch: each unit's own, in the batch's order.
pub type Outcomes<T> = Vec<Result<T>>;

/// How a batch keeps each of its units all-or-nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Every unit in its own savepoint: a unit that fails is undone alone.
    Savepoints,
    /// No savepoints: the first unit that fails ends the attempt ([`Attempt::UnitFailed`]),
    /// and the transaction is rolled back (one refused by [`BatchWrite::refuse`], before it
    /// wrote anything, has not failed). Units seldom fail, and a savepoint is not free:
    /// SQLite copies every page a unit changes into the savepoint's journal, PostgreSQL
    /// opens a subtransaction.
    Whole,
}

/// Why an attempt at a batch did not finish. Either way nothing of the transaction may be
/// committed.
#[derive(Debug)]
pub enum Attempt {
    /// The transaction failed (if transient, the batch can run again).
    Store(StoreError),
    /// With [`Units::Whole`]: this unit of the batch failed, with this error.
    UnitFailed(usize, ServiceError),
    /// With [`Units::Whole`]: a row written after the batch's last unit ([`Deferred`]) was
    /// refused, and which unit's it was is not known: the batch runs again with
    /// savepoints (where nothing is written later), even a batch of one, so the unit
    /// fails alone and with its own error (a name taken, not a bare conflict).
    RowsFailed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Store(e)
    }
}

impl Attempt {
    /// The store's error; a unit's failure (which only [`Units::Whole`] reports this way) as
    /// an internal one.
    fn into_store(self) -> StoreError {
        match self {
            Attempt::Store(e) => e,
            Attempt::UnitFailed(i, e) => StoreError::Corrupt(format!(
                "unit {i} of the batch failed outside its savepoint: {e}"
            )),
            Attempt::RowsFailed(e) => e,
        }
    }
}

/// A use case's batch: what a group commit of its units writes. The functions receive a
/// connection inside the batch's open transaction and the units (which carry their own
/// [`WriteCtx`](ctx::WriteCtx)); they may await only the connection.
pub trait BatchWrite: 'static {
    /// One unit of work (its data and what writing it needs).
    type Unit: Send + Sync + 'static;
    /// What writing one unit produced.
    type Outcome: Send + 'static;

    /// How the first attempt at a batch keeps its units apart.
    const FIRST: Units = Units::Whole;

    /// [`BatchWrite::FIRST`] on PostgreSQL, where a savepoint is a subtransaction and two
    /// more round trips a unit.
    const FIRST_ON_POSTGRES: Units = Self::FIRST;

    /// Batches of this use case committing at once on PostgreSQL.
    const COMMITTERS_ON_POSTGRES: usize = POSTGRES_COMMITTERS;

    /// On PostgreSQL with [`Units::Whole`], the rows nothing reads before the commit may be
    /// written together after the last unit ([`Deferred`]), a few statements a table
    /// instead of a round trip each.
    const DEFER_ROWS: bool = false;

    /// Locks the batch takes before its first unit (so that the locks units take later
    /// never sit between two of these, and concurrent batches cannot deadlock on them).
    fn lock<'a, C: SqlConn>(
        db: &'a mut C,
        units: &'a [Self::Unit],
    ) -> impl Future<Output = std::result::Result<(), StoreError>> + Send + 'a;

    /// What a batch's units share while it runs as one ([`Units::Whole`]): what an earlier
    /// unit read or reserved that a later one may use instead of asking the database again
    /// (a balance followed in memory under its lock). Never with savepoints, where a unit
    /// rolled back would leave it untrue.
    type Shared: Send;

    /// The [`BatchWrite::Shared`] of an attempt at a batch of `units`.
    fn share(units: &[Self::Unit]) -> Self::Shared;

    /// Writes what the units left in what they shared after the last one (balances they
    /// followed in memory), before [`BatchWrite::finish`].
    fn settle<'a, C: SqlConn>(
        db: &'a mut C,
        shared: Self::Shared,
    ) -> impl Future<Output = std::result::Result<(), StoreError>> + Send + 'a;

    /// Refuses a unit before it writes anything, from what it reads under the batch's locks
    /// (with what the units share, when they run as one): the refusal is its outcome, and
    /// the batch goes on without it, as one still (nothing to roll back). `Ok(None)`: write
    /// it. By default nothing is refused here; [`BatchWrite::write_one`] may still fail.
    fn refuse<'a, C: SqlConn>(
        _db: &'a mut C,
        _unit: &'a Self::Unit,
        _shared: Option<&'a mut Self::Shared>,
    ) -> impl Future<Output = Result<Option<ServiceError>>> + Send + 'a {
        async { Ok(None) }
    }

    /// Writes one unit (with what the batch's units share, when they run as one).
    fn write_one<'a, C: SqlConn>(
        db: &'a mut C,
        unit: &'a Self::Unit,
        shared: Option<&'a mut Self::Shared>,
    ) -> impl Future<Output = Result<Self::Outcome>> + Send + 'a;

    /// Writes what the batch as a whole writes after its units (e.g. numbering invoices in
    /// one step), given each unit's outcome.
    fn finish<'a, C: SqlConn>(
        db: &'a mut C,
        units: &'a [Self::Unit],
        outcomes: &'a [Result<Self::Outcome>],
    ) -> impl Future<Output = std::result::Result<(), StoreError>> + Send + 'a;
}

/// Writes a batch in one open transaction (each unit in its own savepoint with
/// [`Units::Savepoints`]). A unit's own failure is its entry's `Err` (with [`Units::Whole`],
/// [`Attempt::UnitFailed`]); `Err` otherwise only when the transaction as a whole failed.
/// After an `Err` nothing of the transaction may be committed.
pub async fn write_all<B: BatchWrite, C: SqlConn>(
    db: &mut C,
    units: &[B::Unit],
    mode: Units,
) -> std::result::Result<Outcomes<B::Outcome>, Attempt> {
    B::lock(db, units).await?;
    let outcomes = if B::DEFER_ROWS && mode == Units::Whole && db.is_postgres() {
        let mut rows = Deferred::new(&mut *db);
        let outcomes = write_each::<B, _>(&mut rows, units, mode).await?;
        rows.flush().await.map_err(after_the_units)?;
        outcomes
    } else {
        write_each::<B, _>(db, units, mode).await?
    };
    B::finish(db, units, &outcomes).await?;
    Ok(outcomes)
}

/// A failure of what a batch run as one writes after its units (the rows written later,
/// what they shared): a collision runs the batch again as it was, anything else a unit at a
/// time, since which unit's write it was is not known.
fn after_the_units(e: StoreError) -> Attempt {
    if e.is_transient() {
        Attempt::Store(e)
    } else {
        tracing::debug!(error = %e, "a write after the batch's units failed");
        Attempt::RowsFailed(e)
    }
}

/// Writes each unit, in its own savepoint with [`Units::Savepoints`].
async fn write_each<B: BatchWrite, C: SqlConn>(
    db: &mut C,
    units: &[B::Unit],
    mode: Units,
) -> std::result::Result<Outcomes<B::Outcome>, Attempt> {
    let mut outcomes = Vec::with_capacity(units.len());
    let mut shared = (mode == Units::Whole).then(|| B::share(units));
    for (i, unit) in units.iter().enumerate() {
        if mode == Units::Savepoints {
            begin_unit(db).await?;
        }
        // Refused before it wrote anything: the batch goes on as it runs.
        let (outcome, refused) = match B::refuse(db, unit, shared.as_mut()).await {
            Ok(Some(refusal)) => (Err(refusal), true),
            Ok(None) => (B::write_one(db, unit, shared.as_mut()).await, false),
            Err(e) => (Err(e), false),
        };
        let outcome = match outcome {
            // A collision with another transaction: the whole batch must run again.
            Err(ServiceError::Store(e)) if e.is_transient() => return Err(Attempt::Store(e)),
            outcome => outcome,
        };
        match mode {
            Units::Savepoints => end_unit(db, outcome.is_ok()).await?,
            Units::Whole if refused => {}
            Units::Whole => {
                if let Err(e) = outcome {
                    return Err(Attempt::UnitFailed(i, e));
                }
            }
        }
        outcomes.push(outcome);
    }
    if let Some(shared) = shared {
        B::settle(db, shared).await.map_err(after_the_units)?;
    }
    Ok(outcomes)
}

/// One group commit on SQLite's batch writer, in one call on its thread: first as
/// [`BatchWrite::FIRST`] says; if that ran without savepoints and a unit failed, rolled back
/// and run again with a savepoint per unit, so the others are written all the same.
pub fn commit_on_writer<B: BatchWrite>(
    db: &mut BatchConn,
    units: &[B::Unit],
) -> std::result::Result<Outcomes<B::Outcome>, StoreError> {
    if B::FIRST == Units::Whole {
        let failed =
            match db.transaction(|db| run_ready(write_all::<B, _>(db, units, Units::Whole))) {
                Ok(outcomes) => return Ok(outcomes),
                Err(Attempt::Store(e)) => return Err(e),
                Err(Attempt::UnitFailed(_, e)) if units.len() == 1 => return Ok(vec![Err(e)]),
                Err(Attempt::UnitFailed(i, _)) => i,
                Err(Attempt::RowsFailed(_)) => 0,
            };
        tracing::debug!(
            unit = failed,
            "a unit of the batch failed; running it with savepoints"
        );
    }
    db.transaction(|db| run_ready(write_all::<B, _>(db, units, Units::Savepoints)))
        .map_err(Attempt::into_store)
}

/// One group commit on a pool connection (PostgreSQL, or SQLite without a file): first as
/// [`BatchWrite::FIRST`] says, then with one savepoint per unit if a unit failed (as
/// [`commit_on_writer`]), and again if it collides with another transaction (a deadlock or
/// serialization failure: nothing of it was acknowledged yet); each collision is counted in
/// `collisions`.
pub async fn commit_on_pool<B: BatchWrite>(
    store: &Store,
    units: &[B::Unit],
    collisions: &AtomicU64,
) -> std::result::Result<Outcomes<B::Outcome>, StoreError> {
    let mut mode = if store.engine() == lodge_store::Engine::Postgres {
        B::FIRST_ON_POSTGRES
    } else {
        B::FIRST
    };
    let mut attempt = 1;
    loop {
        let run = async {
            let mut tx = store.begin().await?;
            match write_all::<B, _>(&mut tx, units, mode).await {
                Ok(outcomes) => {
                    tx.commit().await.map_err(StoreError::from)?;
                    Ok(outcomes)
                }
                Err(e) => {
                    // Roll back now: the rows it wrote stay locked until then.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        };
        match run.await {
            Ok(outcomes) => return Ok(outcomes),
            Err(Attempt::UnitFailed(_, e)) if units.len() == 1 => return Ok(vec![Err(e)]),
            Err(Attempt::UnitFailed(i, _)) if mode == Units::Whole => {
                tracing::debug!(
                    unit = i,
                    "a unit of the batch failed; running it with savepoints"
                );
                mode = Units::Savepoints;
            }
            Err(Attempt::RowsFailed(_)) if mode == Units::Whole => {
                mode = Units::Savepoints;
            }
            Err(Attempt::Store(e)) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "group commit collided; running it again");
                collisions.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into_store()),
        }
    }
}

/// Work waiting for a committer, and where its outcome goes.
struct Pending<U, T> {
    unit: U,
    reply: oneshot::Sender<Result<T>>,
}

impl<U, T> std::fmt::Debug for Pending<U, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// A batch taken from the channel: the units, and their replies in the same order.
struct Taken<U, T> {
    units: Vec<U>,
    replies: Vec<oneshot::Sender<Result<T>>>,
}

/// `first` and what else is waiting already, up to [`MAX_BATCH`].
fn waiting<U, T>(first: Pending<U, T>, rx: &mut mpsc::Receiver<Pending<U, T>>) -> Taken<U, T> {
    let mut taken = Taken {
        units: Vec::with_capacity(MAX_BATCH),
        replies: Vec::with_capacity(MAX_BATCH),
    };
    let mut next = Some(first);
    while let Some(p) = next.take() {
        taken.units.push(p.unit);
        taken.replies.push(p.reply);
        if taken.units.len() < MAX_BATCH {
            next = rx.try_recv().ok();
        }
    }
    taken
}

/// Answers everything of a batch: its own outcome if the batch committed, else the batch's
/// failure.
fn reply<T>(
    replies: Vec<oneshot::Sender<Result<T>>>,
    outcome: std::result::Result<Outcomes<T>, StoreError>,
) {
    match outcome {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            // A moment's outage (a full disk, the file locked by another process) is a 503
            // to retry, as when one write alone meets it.
            let unavailable = e.is_unavailable();
            for reply in replies {
                let why = format!("the group commit failed; nothing was committed: {e}");
                let _ = reply.send(Err(if unavailable {
                    ServiceError::Store(StoreError::Unavailable(why))
                } else {
                    ServiceError::Internal(why)
                }));
            }
        }
    }
}

/// What runs a batch taken from the channel on the batch writer's thread.
type OnWriter<U, T> = fn(&mut BatchConn, Taken<U, T>);

/// One group commit of `B` on the writer's thread; replies only after the commit (with
/// `synchronous=FULL`, once it is on disk).
fn commit_taken<B: BatchWrite>(db: &mut BatchConn, taken: Taken<B::Unit, B::Outcome>) {
    let outcome = commit_on_writer::<B>(db, &taken.units);
    reply(taken.replies, outcome);
}

/// SQLite's committing loop: each time the batch writer is free, everything waiting goes
/// to it as one batch, which `commit` runs on the writer's thread (and answers after its
/// commit). If more work arrived meanwhile, the writer takes it as the next batch at once,
/// without handing back to this loop (up to [`CHAINED_BATCHES`] batches a turn, so other
/// writes get their turn): each hand-off costs two thread wake-ups, during which the
/// writer stood idle (about a tenth of its time with 64 connections placing orders). If
/// the writer cannot run a batch, its replies are dropped and each caller hears that its
/// work was not done.
async fn on_writer<U: Send + 'static, T: Send + 'static>(
    rx: mpsc::Receiver<Pending<U, T>>,
    store: Store,
    commit: OnWriter<U, T>,
) {
    // Shared with the turn on the writer's thread, which takes it while this loop waits
    // for that turn to end.
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                break;
            };
            waiting(first, &mut rx)
        };
        let more = rx.clone();
        let turn = store.batch(move |db| {
            commit(db, batch);
            let Ok(mut rx) = more.try_lock() else {
                return;
            };
            for _ in 1..CHAINED_BATCHES {
                match rx.try_recv() {
                    Ok(first) => commit(db, waiting(first, &mut rx)),
                    Err(_) => break,
                }
            }
        });
        if let Err(e) = turn.await {
            tracing::error!(error = %e, "group commit could not run");
        }
    }
}

/// Starts [`on_writer`] on a thread of its own, with a runtime of its own.
///
/// As a task, the loop waited, each time the writer finished a batch, behind every request
/// the runtime's workers had queued meanwhile, and the writer stood idle until it ran:
/// measured with 64 connections placing orders, the writer was idle about a quarter of the
/// time, ~3 ms between batches. On a thread the loop is woken at once. (PostgreSQL's loop
/// stays a task: several batches commit at once there, on tasks and pool connections of the
/// main runtime.)
fn start_on_writer<U: Send + 'static, T: Send + 'static>(
    name: &str,
    rx: mpsc::Receiver<Pending<U, T>>,
    store: Store,
    commit: OnWriter<U, T>,
) {
    type Work = Pin<Box<dyn Future<Output = ()> + Send>>;
    let work: Work = Box::pin(on_writer(rx, store, commit));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime for the committer; it runs as a task");
            tokio::spawn(work);
            return;
        }
    };
    // Taken by the thread, or back here if it could not start.
    let slot = Arc::new(Mutex::new(Some(work)));
    let theirs = slot.clone();
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let work = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(work) = work {
                runtime.block_on(work);
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "no thread for the committer; it runs as a task");
        let work = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(work) = work {
            tokio::spawn(work);
        }
    }
}

/// The committing loop on pool connections (PostgreSQL): up to
/// [`BatchWrite::COMMITTERS_ON_POSTGRES`] batches commit at once, each on a task of its own.
async fn on_pool<B: BatchWrite>(
    mut rx: mpsc::Receiver<Pending<B::Unit, B::Outcome>>,
    store: Store,
    collisions: Arc<AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(B::COMMITTERS_ON_POSTGRES.max(1)));
    while let Some(first) = rx.recv().await {
        // Wait for a free committer before taking the units waiting, so the batch holds
        // every unit that arrived meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let taken = waiting(first, &mut rx);
        let store = store.clone();
        let collisions = collisions.clone();
        tokio::spawn(async move {
            let outcome = commit_on_pool::<B>(&store, &taken.units, &collisions).await;
            reply(taken.replies, outcome);
            drop(slot);
        });
    }
}

/// The sending side of a committing loop for the use case `B`. The loop ends when every
/// sender is gone.
pub struct Committer<B: BatchWrite> {
    tx: mpsc::Sender<Pending<B::Unit, B::Outcome>>,
    collisions: Arc<AtomicU64>,
}

impl<B: BatchWrite> Clone for Committer<B> {
    fn clone(&self) -> Self {
        Committer {
            tx: self.tx.clone(),
            collisions: self.collisions.clone(),
        }
    }
}

impl<B: BatchWrite> std::fmt::Debug for Committer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("collisions", &self.collisions())
            .finish_non_exhaustive()
    }
}

impl<B: BatchWrite> Committer<B> {
    /// Starts the committing loop: on SQLite's batch writer, on a thread named `name`
    /// ([`start_on_writer`]), else on pool connections ([`on_pool`]). Call within a runtime.
    pub fn start(name: &str, store: Store) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let collisions = Arc::new(AtomicU64::new(0));
        if store.has_batch_writer() {
            start_on_writer(name, rx, store, commit_taken::<B>);
        } else {
            tokio::spawn(on_pool::<B>(rx, store, collisions.clone()));
        }
        Committer { tx, collisions }
    }

    /// How many batches met a deadlock or serialization failure and ran again.
    pub fn collisions(&self) -> u64 {
        self.collisions.load(Ordering::Relaxed)
    }

    /// Hands a unit to the committing loop and waits for its outcome (after the commit that
    /// holds it).
    pub async fn submit(&self, unit: B::Unit) -> Result<B::Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { unit, reply })
            .await
            .map_err(|_| ServiceError::Internal("the committer stopped".into()))?;
        answer
            .await
            .map_err(|_| ServiceError::Internal("the committer dropped its work".into()))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use lodge_store::{BatchConn, Store};
    use tokio::sync::{mpsc, oneshot};

    use super::{on_writer, Pending, Taken};

    /// What ran on the batch writer, in order.
    static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// A batch of labelled work: records it, and holds the writer a while if it is work 1.
    fn record(_db: &mut BatchConn, batch: Taken<u32, ()>) {
        let labels: Vec<String> = batch.units.iter().map(u32::to_string).collect();
        RAN.lock()
            .unwrap()
            .push(format!("batch {}", labels.join(",")));
        if batch.units.contains(&1) {
            std::thread::sleep(Duration::from_millis(300));
        }
        for reply in batch.replies {
            let _ = reply.send(Ok(()));
        }
    }

    /// Work that arrives while the writer runs a batch is the writer's next batch in the
    /// same turn, ahead of a write that was already waiting for the writer; that write
    /// runs right after the turn.
    #[tokio::test]
    async fn the_writer_takes_work_that_arrived_during_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(on_writer(rx, store.clone(), record));
        let send = |unit: u32| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (reply, answer) = oneshot::channel();
                tx.send(Pending { unit, reply }).await.unwrap();
                answer.await.unwrap()
            })
        };
        let first = send(1);
        while RAN.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Batch 1 holds the writer for 300 ms: work 2 waits in the channel, then another
        // write waits for the writer.
        let second = send(2);
        while tx.capacity() == tx.max_capacity() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let other = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .batch(|_| RAN.lock().unwrap().push("other write".into()))
                    .await
            })
        };
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        other.await.unwrap().unwrap();
        assert_eq!(*RAN.lock().unwrap(), ["batch 1", "batch 2", "other write"]);
    }

    /// Units numbered; 20 and up are refused by [`BatchWrite::refuse`], 10 to 19 fail in
    /// their write. Each outcome says whether it was written with what the batch shares
    /// (run as one) or without (with savepoints, after a unit failed).
    struct Numbered;

    impl super::BatchWrite for Numbered {
        type Unit = u32;
        type Outcome = (u32, bool);
        /// Whether the batch's settling fails (a unit of 5 to 9 in it).
        type Shared = bool;

        async fn lock<C: lodge_store::SqlConn>(
            _db: &mut C,
            _units: &[u32],
        ) -> Result<(), lodge_store::StoreError> {
            Ok(())
        }

        fn share(units: &[u32]) -> bool {
            units.iter().any(|u| (5..10).contains(u))
        }

        async fn settle<C: lodge_store::SqlConn>(
            _db: &mut C,
            fails: bool,
        ) -> Result<(), lodge_store::StoreError> {
            if fails {
                return Err(lodge_store::StoreError::Corrupt(
                    "what the batch shared could not be written".into(),
                ));
            }
            Ok(())
        }

        async fn refuse<C: lodge_store::SqlConn>(
            _db: &mut C,
            unit: &u32,
            _shared: Option<&mut bool>,
        ) -> crate::Result<Option<crate::ServiceError>> {
            Ok((*unit >= 20).then(|| crate::ServiceError::field("unit", "refused first")))
        }

        async fn write_one<C: lodge_store::SqlConn>(
            _db: &mut C,
            unit: &u32,
            shared: Option<&mut bool>,
        ) -> crate::Result<(u32, bool)> {
            if (10..20).contains(unit) {
                return Err(crate::ServiceError::field("unit", "failed writing"));
            }
            Ok((*unit, shared.is_some()))
        }

        async fn finish<C: lodge_store::SqlConn>(
            _db: &mut C,
            _units: &[u32],
            _outcomes: &[crate::Result<(u32, bool)>],
        ) -> Result<(), lodge_store::StoreError> {
            Ok(())
        }
    }

    /// A unit refused before it writes is its own outcome and the batch goes on as one; a
    /// unit failing in its write makes the batch run again with savepoints, and so does a
    /// failure of what the batch writes after its units (its settling), where every unit
    /// is then written alone and whole. On the batch writer and on a pool connection.
    #[tokio::test]
    async fn a_unit_refused_before_writing_leaves_the_batch_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap();
        let shown = |outcomes: Vec<crate::Result<(u32, bool)>>| -> Vec<String> {
            outcomes
                .into_iter()
                .map(|o| match o {
                    Ok((u, whole)) => format!("{u} {}", if whole { "whole" } else { "alone" }),
                    Err(e) => format!("refused: {e}"),
                })
                .collect()
        };
        for (units, expected) in [
            (vec![1, 20, 3], ["1 whole", "refused", "3 whole"]),
            (vec![1, 10, 3], ["1 alone", "refused", "3 alone"]),
            (vec![1, 7, 3], ["1 alone", "7 alone", "3 alone"]),
        ] {
            let on_writer = {
                let units = units.clone();
                store
                    .batch(move |db| super::commit_on_writer::<Numbered>(db, &units))
                    .await
                    .unwrap()
                    .unwrap()
            };
            let collisions = std::sync::atomic::AtomicU64::new(0);
            let on_pool = super::commit_on_pool::<Numbered>(&store, &units, &collisions)
                .await
                .unwrap();
            for got in [shown(on_writer), shown(on_pool)] {
                assert_eq!(got.len(), 3);
                for (got, expected) in got.iter().zip(expected) {
                    assert!(got.starts_with(expected), "{got} is not {expected}");
                }
            }
        }
    }
}
