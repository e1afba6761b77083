//! Group commit for orders. Each durable commit waits for the disk (and on PostgreSQL, for
//! the gapless invoice counter, which every issuing transaction must lock); instead of one
//! commit per order, a committer takes every order waiting and commits them together. Each
//! order is still all-or-nothing on its own: the batch first runs without savepoints, and if
//! any order fails it is rolled back and run again with a savepoint per order ([`Units`]).
//! No caller hears "placed" before the commit that holds its order is on disk.
//!
//! On SQLite the batch runs on the store's batch writer ([`lodge_store::Store::batch`]): the
//! whole group commit is one call on the writer's own thread, without a thread hand-off per
//! statement. Elsewhere (PostgreSQL) it is a transaction on a pool connection, and several
//! batches may run at once: each batch takes its organizations' row locks in id order and
//! locks the invoice counter only at its end, to number all its invoices in one step, so
//! batches queue on the counter only for their commits. A batch that still meets a deadlock
//! or serialization failure is run again (nothing of it was acknowledged yet).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lodge_store::conn::{begin_unit, end_unit};
use lodge_store::deferred::Deferred;
use lodge_store::{billing, run_ready, BatchConn, SqlConn, Store, StoreError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::orders::{OrderOutcome, ValidOrder};
use crate::{Lodge, Result, ServiceError};

/// At most this many orders share one commit.
pub const MAX_BATCH: usize = 64;

/// Batches committing at once on PostgreSQL (SQLite has one writer: one at a time).
pub const POSTGRES_COMMITTERS: usize = 4;

/// Runs of a batch that meets deadlocks or serialization failures before its orders fail.
const ATTEMPTS: u32 = 4;

/// Work waiting for a committer: who asks (the node's services and clock), what, for whom,
/// and where its outcome goes.
struct Pending<W, T> {
    lodge: Lodge,
    work: W,
    actor: String,
    reply: oneshot::Sender<Result<T>>,
}

type PendingOrder = Pending<ValidOrder, OrderOutcome>;
type PendingPayment = Pending<Vec<i64>, ()>;

/// Hands work to a committing loop and waits for its outcome.
async fn submit<W, T>(
    tx: &mpsc::Sender<Pending<W, T>>,
    lodge: &Lodge,
    work: W,
    actor: &str,
) -> Result<T> {
    let (reply, answer) = oneshot::channel();
    tx.send(Pending {
        lodge: lodge.clone(),
        work,
        actor: actor.to_owned(),
        reply,
    })
    .await
    .map_err(|_| ServiceError::Internal("the committer stopped".into()))?;
    answer
        .await
        .map_err(|_| ServiceError::Internal("the committer dropped its work".into()))?
}

/// `first` and what else is waiting already, up to [`MAX_BATCH`].
fn waiting<P>(first: P, rx: &mut mpsc::Receiver<P>) -> Vec<P> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

/// Answers everything of a batch: its own outcome if the batch committed, else the batch's
/// failure.
fn reply<W, T>(
    batch: Vec<Pending<W, T>>,
    outcome: std::result::Result<Vec<Result<T>>, StoreError>,
) {
    match outcome {
        Ok(results) => {
            for (p, result) in batch.into_iter().zip(results) {
                let _ = p.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            for p in batch {
                let _ = p.reply.send(Err(ServiceError::Internal(format!(
                    "the group commit failed; nothing was committed: {e}"
                ))));
            }
        }
    }
}

/// Batches one turn on the batch writer may run back to back (see [`on_writer`]).
pub const CHAINED_BATCHES: usize = 4;

/// SQLite's committing loop: each time the batch writer is free, everything waiting goes
/// to it as one batch, which `commit` runs on the writer's thread (and answers after its
/// commit). If more work arrived meanwhile, the writer takes it as the next batch at once,
/// without handing back to this loop (up to [`CHAINED_BATCHES`] batches a turn, so other
/// writes get their turn): each hand-off costs two thread wake-ups, during which the
/// writer stood idle (about a tenth of its time with 64 connections placing orders). If
/// the writer cannot run a batch, its replies are dropped and each caller hears that its
/// work was not done.
async fn on_writer<W: Send + 'static, T: Send + 'static>(
    rx: mpsc::Receiver<Pending<W, T>>,
    store: Store,
    commit: fn(&mut BatchConn, Vec<Pending<W, T>>),
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
fn start_on_writer<W: Send + 'static, T: Send + 'static>(
    name: &str,
    rx: mpsc::Receiver<Pending<W, T>>,
    store: Store,
    commit: fn(&mut BatchConn, Vec<Pending<W, T>>),
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

/// The sending side, held by [`Lodge`]. The committing loop ends when every sender is gone.
#[derive(Debug, Clone)]
pub struct OrderBatcher {
    tx: mpsc::Sender<PendingOrder>,
    collisions: Arc<std::sync::atomic::AtomicU64>,
}

impl<W, T> std::fmt::Debug for Pending<W, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl OrderBatcher {
    /// Starts the committing loop: on SQLite's batch writer ([`start_on_writer`]), else on
    /// pool connections ([`on_pool`]). Call within a runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let collisions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        if store.has_batch_writer() {
            start_on_writer("lodge-orders", rx, store, commit_batch);
        } else {
            tokio::spawn(on_pool(rx, store, collisions.clone()));
        }
        OrderBatcher { tx, collisions }
    }

    /// How many batches met a deadlock or serialization failure and ran again.
    pub fn collisions(&self) -> u64 {
        self.collisions.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) async fn place(
        &self,
        lodge: &Lodge,
        order: &ValidOrder,
        actor: &str,
    ) -> Result<OrderOutcome> {
        submit(&self.tx, lodge, order.clone(), actor).await
    }
}

/// The committing loop on pool connections (PostgreSQL): up to [`POSTGRES_COMMITTERS`]
/// batches commit at once, each on a task of its own.
async fn on_pool(
    mut rx: mpsc::Receiver<PendingOrder>,
    store: Store,
    collisions: Arc<std::sync::atomic::AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(POSTGRES_COMMITTERS));
    while let Some(first) = rx.recv().await {
        // Wait for a free committer before taking the orders waiting, so the batch holds
        // every order that arrived meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let batch = waiting(first, &mut rx);
        let store = store.clone();
        let collisions = collisions.clone();
        tokio::spawn(async move {
            commit_batch_async(&store, batch, &collisions).await;
            drop(slot);
        });
    }
}

/// Payments from account credit waiting for SQLite's batch writer: each runs in its own
/// savepoint of a transaction shared with the payments waiting at the same moment, and its
/// caller hears the outcome once that transaction is on disk. (On PostgreSQL payments run
/// concurrently, each in its own transaction.)
#[derive(Debug, Clone)]
pub struct PaymentBatcher {
    tx: mpsc::Sender<PendingPayment>,
}

impl PaymentBatcher {
    /// Starts the committing loop ([`start_on_writer`]); call within a runtime, on a store
    /// with a batch writer.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        start_on_writer("lodge-payments", rx, store, commit_payments);
        PaymentBatcher { tx }
    }

    pub(crate) async fn pay(&self, lodge: &Lodge, invoices: &[i64], actor: &str) -> Result<()> {
        submit(&self.tx, lodge, invoices.to_vec(), actor).await
    }
}

/// One group commit of payments on the writer's thread, a savepoint each (a payment refused,
/// say of an invoice paid meanwhile, is undone alone); replies only after the commit.
fn commit_payments(db: &mut BatchConn, batch: Vec<PendingPayment>) {
    let outcome = db.transaction(|db| {
        let mut results = Vec::with_capacity(batch.len());
        for p in &batch {
            run_ready(begin_unit(db))?;
            let result = run_ready(p.lodge.pay_from_credit_in(db, &p.work, &p.actor));
            run_ready(end_unit(db, result.is_ok()))?;
            results.push(result);
        }
        Ok::<_, StoreError>(results)
    });
    reply(batch, outcome);
}

/// One group commit on a pool connection (PostgreSQL, or SQLite without a file).
async fn commit_batch_async(
    store: &Store,
    batch: Vec<PendingOrder>,
    collisions: &std::sync::atomic::AtomicU64,
) {
    let orders: Vec<_> = batch.iter().map(PendingOrder::as_order).collect();
    let outcome = commit_on_pool(store, &orders, collisions).await;
    reply(batch, outcome);
}

/// One group commit, on the writer's thread. Replies go out only after the commit returned
/// (with `synchronous=FULL`, once it is on disk).
fn commit_batch(db: &mut BatchConn, batch: Vec<PendingOrder>) {
    let orders: Vec<_> = batch.iter().map(PendingOrder::as_order).collect();
    let outcome = commit_on_writer(db, &orders);
    reply(batch, outcome);
}

/// An order to place: who places it (the node's services and clock), what, and for whom.
pub type OrderToPlace<'a> = (&'a Lodge, &'a ValidOrder, &'a str);

impl PendingOrder {
    fn as_order(&self) -> OrderToPlace<'_> {
        (&self.lodge, &self.work, &self.actor)
    }
}

/// The orders placed by a batch: each order's own outcome, in the batch's order.
pub type Placed = Vec<Result<OrderOutcome>>;

/// How a batch keeps each of its orders all-or-nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Every order in its own savepoint: an order that fails is undone alone.
    Savepoints,
    /// No savepoints: the first order that fails ends the attempt
    /// ([`Attempt::OrderFailed`]), and the caller rolls the whole transaction back. Validated
    /// orders seldom fail, and a savepoint is not free: SQLite copies every page an order
    /// changes into the savepoint's journal, PostgreSQL opens a subtransaction.
    Whole,
}

/// Why an attempt at a batch did not finish. Either way nothing of the transaction may be
/// committed.
#[derive(Debug)]
pub enum Attempt {
    /// The transaction failed (if transient, the batch can run again).
    Store(StoreError),
    /// With [`Units::Whole`]: this order of the batch failed, with this error.
    OrderFailed(usize, ServiceError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Store(e)
    }
}

/// One group commit on SQLite's batch writer, in one call on its thread: first with the
/// orders sharing the transaction without savepoints; only if one of them fails, rolled back
/// and run again with a savepoint per order, so the others are placed all the same.
pub fn commit_on_writer(
    db: &mut BatchConn,
    orders: &[OrderToPlace<'_>],
) -> std::result::Result<Placed, StoreError> {
    let failed = match db.transaction(|db| run_ready(place_all(db, orders, Units::Whole))) {
        Ok(placed) => return Ok(placed),
        Err(Attempt::Store(e)) => return Err(e),
        Err(Attempt::OrderFailed(_, e)) if orders.len() == 1 => return Ok(vec![Err(e)]),
        Err(Attempt::OrderFailed(i, _)) => i,
    };
    tracing::debug!(
        order = failed,
        "an order of the batch failed; running it with savepoints"
    );
    db.transaction(|db| run_ready(place_all(db, orders, Units::Savepoints)))
        .map_err(Attempt::into_store)
}

/// One group commit on a pool connection (PostgreSQL, or SQLite without a file): first
/// without savepoints, then with one per order if an order failed (as
/// [`commit_on_writer`]), and again if it collides with another transaction (a deadlock
/// or serialization failure: nothing of it was acknowledged yet); each collision is
/// counted in `collisions`.
pub async fn commit_on_pool(
    store: &Store,
    orders: &[OrderToPlace<'_>],
    collisions: &std::sync::atomic::AtomicU64,
) -> std::result::Result<Placed, StoreError> {
    let mut units = Units::Whole;
    let mut attempt = 1;
    loop {
        let run = async {
            let mut tx = store.begin().await?;
            match place_all(&mut tx, orders, units).await {
                Ok(placed) => {
                    tx.commit().await.map_err(StoreError::from)?;
                    Ok(placed)
                }
                Err(e) => {
                    // Roll back now: the rows it wrote stay locked until then.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        };
        match run.await {
            Ok(placed) => return Ok(placed),
            Err(Attempt::OrderFailed(_, e)) if orders.len() == 1 => return Ok(vec![Err(e)]),
            Err(Attempt::OrderFailed(i, _)) if units == Units::Whole => {
                tracing::debug!(
                    order = i,
                    "an order of the batch failed; running it with savepoints"
                );
                units = Units::Savepoints;
            }
            Err(Attempt::Store(e)) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "group commit collided; running it again");
                collisions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into_store()),
        }
    }
}

impl Attempt {
    /// The store's error; an order's failure (which only [`Units::Whole`] reports this way)
    /// as an internal one.
    fn into_store(self) -> StoreError {
        match self {
            Attempt::Store(e) => e,
            Attempt::OrderFailed(i, e) => StoreError::Corrupt(format!(
                "order {i} of the batch failed outside its savepoint: {e}"
            )),
        }
    }
}

/// Places orders in one open transaction (each in its own savepoint with
/// [`Units::Savepoints`]), then numbers the invoices of those placed in one step. An order's
/// own failure is its entry's `Err` (with [`Units::Whole`], [`Attempt::OrderFailed`]);
/// `Err` otherwise only when the transaction as a whole failed. After an `Err` nothing of
/// the transaction may be committed.
///
/// Every organization, then every `Idempotency-Key`, is locked before any order is placed,
/// so the locks orders take later (a limited server, a coupon) never sit between two of
/// those, and concurrent batches cannot deadlock on them.
pub async fn place_all<C: SqlConn>(
    db: &mut C,
    orders: &[OrderToPlace<'_>],
    units: Units,
) -> std::result::Result<Placed, Attempt> {
    let orgs: Vec<_> = orders.iter().map(|(_, o, _)| o.organization).collect();
    billing::lock_organizations(db, &orgs).await?;
    let keys: Vec<(&str, &str)> = orders
        .iter()
        .filter_map(|(_, o, _)| o.idempotency.as_deref())
        .map(|k| (k.scope.as_str(), k.key.as_str()))
        .collect();
    lodge_store::idempotency::lock_keys(db, &keys).await?;
    let results = if units == Units::Whole && db.is_postgres() {
        // Each statement is a round trip to PostgreSQL: the rows nothing reads before the
        // commit are written together after the last order, a few statements a table.
        let mut rows = Deferred::new(&mut *db);
        let results = place_each(&mut rows, orders, units).await?;
        rows.flush().await.map_err(|e| {
            if e.is_transient() {
                Attempt::Store(e)
            } else {
                // Which order's row it was is not known: run the batch again with
                // savepoints (and without deferred rows), where it fails alone.
                tracing::debug!(error = %e, "a row written after the batch's orders failed");
                Attempt::OrderFailed(0, ServiceError::Store(e))
            }
        })?;
        results
    } else {
        place_each(db, orders, units).await?
    };
    let invoices: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.invoice_id)
        .collect();
    let clock = orders.first().map(|(lodge, _, _)| *lodge);
    billing::number_invoices(db, &invoices, || clock.map_or(0, Lodge::now_us)).await?;
    Ok(results)
}

/// Places each order, in its own savepoint with [`Units::Savepoints`].
async fn place_each<C: SqlConn>(
    db: &mut C,
    orders: &[OrderToPlace<'_>],
    units: Units,
) -> std::result::Result<Placed, Attempt> {
    let mut results = Vec::with_capacity(orders.len());
    for (i, (lodge, order, actor)) in orders.iter().enumerate() {
        if units == Units::Savepoints {
            begin_unit(db).await?;
        }
        let result = match lodge.place_order_in(db, order, actor).await {
            // A collision with another transaction: the whole batch must run again.
            Err(ServiceError::Store(e)) if e.is_transient() => return Err(Attempt::Store(e)),
            result => result,
        };
        match units {
            Units::Savepoints => end_unit(db, result.is_ok()).await?,
            Units::Whole => {
                if let Err(e) = result {
                    return Err(Attempt::OrderFailed(i, e));
                }
            }
        }
        results.push(result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use lodge_store::{BatchConn, Store};
    use tokio::sync::mpsc;

    use super::{on_writer, submit, Pending};
    use crate::Lodge;

    /// What ran on the batch writer, in order.
    static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// A batch of labelled work: records it, and holds the writer a while if it is work 1.
    fn record(_db: &mut BatchConn, batch: Vec<Pending<u32, ()>>) {
        let labels: Vec<String> = batch.iter().map(|p| p.work.to_string()).collect();
        RAN.lock()
            .unwrap()
            .push(format!("batch {}", labels.join(",")));
        if batch.iter().any(|p| p.work == 1) {
            std::thread::sleep(Duration::from_millis(300));
        }
        for p in batch {
            let _ = p.reply.send(Ok(()));
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
        let lodge = Lodge::new(
            store.clone(),
            std::sync::Arc::new(lodge_core::clock::SystemClock),
            crate::Settings::new(lodge_core::Currency::USD, "s".to_owned().into()),
            crate::crypto::Sealer::new(&[7; 32]),
        );
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(on_writer(rx, store.clone(), record));
        let send = |work: u32| {
            let (tx, lodge) = (tx.clone(), lodge.clone());
            tokio::spawn(async move { submit(&tx, &lodge, work, "test").await })
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
}
