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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use lodge_store::{billing, run_ready, vals, BatchConn, SqlConn, Store, StoreError};
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

/// One group commit on a pool connection (PostgreSQL, or SQLite without a file).
async fn commit_batch_async(
    store: &Store,
    mut batch: Vec<Pending>,
    collisions: &std::sync::atomic::AtomicU64,
) {
    // Every batch locks organizations' rows in the same order.
    batch.sort_by_key(|p| p.order.organization);
    let mut attempt = 1;
    let outcome = loop {
        match try_commit(store, &batch).await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "group commit collided; running it again");
                collisions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            done => break done,
        }
    };
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

/// Places every order of the batch in its own savepoint, numbers the invoices of those that
/// succeeded and commits. `Err` only when the batch as a whole failed.
async fn try_commit(
    store: &Store,
    batch: &[Pending],
) -> std::result::Result<Vec<Result<OrderOutcome>>, StoreError> {
    let mut tx = store.begin().await?;
    // Every organization of the batch is locked before any order is placed: the locks an
    // order takes later (a limited server, a coupon) then never sit between two of them.
    let orgs: Vec<_> = batch.iter().map(|p| p.order.organization).collect();
    billing::lock_organizations(&mut tx, &orgs).await?;
    let mut results = Vec::with_capacity(batch.len());
    for p in batch {
        tx.exec("SAVEPOINT unit", vals![]).await?;
        let result = match p.lodge.place_order_in(&mut tx, &p.order, &p.actor).await {
            // A collision with another transaction: run the whole batch again.
            Err(ServiceError::Store(e)) if e.is_transient() => return Err(e),
            result => result,
        };
        if result.is_err() {
            tx.exec("ROLLBACK TO SAVEPOINT unit", vals![]).await?;
        }
        tx.exec("RELEASE SAVEPOINT unit", vals![]).await?;
        results.push(result);
    }
    let clock = batch.first().map(|p| p.lodge.clone());
    billing::number_invoices(&mut tx, &invoices_of(&results), move || {
        clock.map_or(0, |l| l.now_us())
    })
    .await?;
    tx.commit().await?;
    Ok(results)
}

/// The invoices of the orders placed, in batch order.
fn invoices_of(results: &[Result<OrderOutcome>]) -> Vec<i64> {
    results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.invoice_id)
        .collect()
}

/// One group commit, on the writer's thread. Replies go out only after the commit returned
/// (with `synchronous=FULL`, once it is on disk).
fn commit_batch(db: &mut BatchConn, batch: Vec<Pending>) {
    let done_lodge = batch.first().map(|p| p.lodge.clone());
    let mut waiting: VecDeque<Pending> = batch.into();
    let mut done = Vec::with_capacity(waiting.len());
    let committed = db.transaction(|db| {
        while let Some(p) = waiting.pop_front() {
            let result = match db.savepoint() {
                Ok(()) => run_ready(p.lodge.place_order_in(db, &p.order, &p.actor)),
                Err(e) => Err(e.into()),
            };
            // Keep or undo this order's writes; if even that fails, the batch is lost.
            let closed = if result.is_ok() {
                db.release()
            } else {
                db.rollback_to()
            };
            done.push((p.reply, result));
            closed?;
        }
        let invoices: Vec<i64> = done
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok()?.invoice_id)
            .collect();
        let clock = done_lodge.clone();
        run_ready(billing::number_invoices(db, &invoices, move || {
            clock.map_or(0, |l| l.now_us())
        }))
    });
    match committed {
        Ok(()) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            let replies = done.into_iter().map(|(reply, _)| reply);
            for reply in replies.chain(waiting.into_iter().map(|p| p.reply)) {
                let _ = reply.send(Err(ServiceError::Internal(format!(
                    "the order was not committed: {e}"
                ))));
            }
        }
    }
}
