//! Group commit for orders on SQLite. SQLite has one writer, and each durable commit waits
//! for the disk; instead of one commit per order, the writer takes every order waiting and
//! commits them together. Each order still runs in its own savepoint, so it is all-or-nothing
//! on its own, and no caller hears "placed" before the commit that holds its order is on disk.
//!
//! The batch runs on the store's batch writer ([`lodge_store::Store::batch`]): the whole
//! group commit is one call on the writer's own thread, the same statements as on
//! PostgreSQL, without a thread hand-off per statement.

use std::collections::VecDeque;

use lodge_store::{run_ready, BatchConn, Store};
use tokio::sync::{mpsc, oneshot};

use crate::orders::{OrderOutcome, ValidOrder};
use crate::{Lodge, Result, ServiceError};

/// At most this many orders share one commit.
pub const MAX_BATCH: usize = 64;

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
        tokio::spawn(run(rx, store));
        OrderBatcher { tx }
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

async fn run(mut rx: mpsc::Receiver<Pending>, store: Store) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // The orders' replies travel with the batch; if the writer cannot run it, they are
        // dropped and each caller hears that its order was not placed.
        if let Err(e) = store.batch(move |db| commit_batch(db, batch)).await {
            tracing::error!(error = %e, "group commit could not run");
        }
    }
}

/// One group commit, on the writer's thread. Replies go out only after the commit returned
/// (with `synchronous=FULL`, once it is on disk).
fn commit_batch(db: &mut BatchConn, batch: Vec<Pending>) {
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
        Ok::<(), lodge_store::StoreError>(())
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
