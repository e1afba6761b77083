//! Group commit for orders. Each durable commit waits for the disk (and on PostgreSQL, for
//! the gapless invoice counter, which every issuing transaction must lock); instead of one
//! commit per order, a committer takes every order waiting and commits them together. Each
//! order still runs in its own savepoint, so it is all-or-nothing on its own, and no caller
//! hears "placed" before the commit that holds its order is on disk.
//!
//! On SQLite the batch runs on the store's batch writer ([`lodge_store::Store::batch`]): the
//! whole group commit is one call on the writer's own thread, without a thread hand-off per
//! statement. Elsewhere (PostgreSQL) it is a transaction on a pool connection, and several
//! batches may run at once: each batch takes its organizations' row locks in id order and
//! locks the invoice counter only at its end, to number all its invoices in one step, so
//! batches queue on the counter only for their commits. A batch that still meets a deadlock
//! or serialization failure is run again (nothing of it was acknowledged yet).

use std::sync::Arc;
use std::time::Duration;

use lodge_store::conn::{begin_unit, end_unit};
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

struct Pending {
    lodge: Lodge,
    order: ValidOrder,
    actor: String,
    reply: oneshot::Sender<Result<OrderOutcome>>,
}

/// The sending side, held by [`Lodge`]. The committing task ends when every sender is gone.
#[derive(Debug, Clone)]
pub struct OrderBatcher {
    tx: mpsc::Sender<Pending>,
    collisions: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl OrderBatcher {
    /// Starts the committing task on the current runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let collisions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(run(rx, store, collisions.clone()));
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
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                lodge: lodge.clone(),
                order: order.clone(),
                actor: actor.to_owned(),
                reply,
            })
            .await
            .map_err(|_| ServiceError::Internal("the order committer stopped".into()))?;
        answer
            .await
            .map_err(|_| ServiceError::Internal("the order committer dropped an order".into()))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    store: Store,
    collisions: Arc<std::sync::atomic::AtomicU64>,
) {
    let committers = if store.has_batch_writer() || store.engine() != lodge_store::Engine::Postgres
    {
        1
    } else {
        POSTGRES_COMMITTERS
    };
    let slots = Arc::new(Semaphore::new(committers));
    while let Some(first) = rx.recv().await {
        // Wait for a free committer before taking the orders waiting, so the batch holds
        // every order that arrived meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if store.has_batch_writer() {
            // The orders' replies travel with the batch; if the writer cannot run it, they
            // are dropped and each caller hears that its order was not placed.
            if let Err(e) = store.batch(move |db| commit_batch(db, batch)).await {
                tracing::error!(error = %e, "group commit could not run");
            }
            drop(slot);
        } else {
            let store = store.clone();
            let collisions = collisions.clone();
            tokio::spawn(async move {
                commit_batch_async(&store, batch, &collisions).await;
                drop(slot);
            });
        }
    }
}

/// One group commit on a pool connection (PostgreSQL, or SQLite without a file), run again
/// if it collides with another transaction.
async fn commit_batch_async(
    store: &Store,
    batch: Vec<Pending>,
    collisions: &std::sync::atomic::AtomicU64,
) {
    let orders: Vec<_> = batch.iter().map(Pending::as_order).collect();
    let mut attempt = 1;
    let outcome = loop {
        let run = async {
            let mut tx = store.begin().await?;
            let results = place_all(&mut tx, &orders).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(results)
        };
        match run.await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "group commit collided; running it again");
                collisions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            done => break done,
        }
    };
    reply(batch, outcome);
}

/// One group commit, on the writer's thread. Replies go out only after the commit returned
/// (with `synchronous=FULL`, once it is on disk).
fn commit_batch(db: &mut BatchConn, batch: Vec<Pending>) {
    let orders: Vec<_> = batch.iter().map(Pending::as_order).collect();
    let outcome = db.transaction(|db| run_ready(place_all(db, &orders)));
    reply(batch, outcome);
}

/// Answers every order of a batch: its own outcome if the batch committed, else the
/// batch's failure.
fn reply(batch: Vec<Pending>, outcome: std::result::Result<Vec<Result<OrderOutcome>>, StoreError>) {
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
                    "the order was not committed: {e}"
                ))));
            }
        }
    }
}

/// An order to place: who places it (the node's services and clock), what, and for whom.
pub type OrderToPlace<'a> = (&'a Lodge, &'a ValidOrder, &'a str);

impl Pending {
    fn as_order(&self) -> OrderToPlace<'_> {
        (&self.lodge, &self.order, &self.actor)
    }
}

/// Places orders in one open transaction, each in its own savepoint, then numbers the
/// invoices of those placed in one step. `Err` only when the transaction as a whole failed
/// (then nothing of it may be committed): an order's own failure is its entry's `Err`.
///
/// Every organization is locked before any order is placed, so the locks orders take later
/// (a limited server, a coupon) never sit between two organizations' locks, and concurrent
/// batches cannot deadlock on them.
pub async fn place_all<C: SqlConn>(
    db: &mut C,
    orders: &[OrderToPlace<'_>],
) -> std::result::Result<Vec<Result<OrderOutcome>>, StoreError> {
    let orgs: Vec<_> = orders.iter().map(|(_, o, _)| o.organization).collect();
    billing::lock_organizations(db, &orgs).await?;
    let mut results = Vec::with_capacity(orders.len());
    for (lodge, order, actor) in orders {
        begin_unit(db).await?;
        let result = match lodge.place_order_in(db, order, actor).await {
            // A collision with another transaction: the whole batch must run again.
            Err(ServiceError::Store(e)) if e.is_transient() => return Err(e),
            result => result,
        };
        end_unit(db, result.is_ok()).await?;
        results.push(result);
    }
    let invoices: Vec<i64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.invoice_id)
        .collect();
    let clock = orders.first().map(|(lodge, _, _)| *lodge);
    billing::number_invoices(db, &invoices, || clock.map_or(0, Lodge::now_us)).await?;
    Ok(results)
}
