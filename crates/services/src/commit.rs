//! Group commit for orders on SQLite. SQLite has one writer, and each durable commit waits
//! for the disk; instead of one commit per order, the writer takes every order waiting and
//! commits them together. Each order still runs in its own savepoint, so it is all-or-nothing
//! on its own, and no caller hears "placed" before the commit that holds its order is on disk.

use lodge_store::{Acquire, AnyPool};
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
    pub fn start(pool: AnyPool) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(rx, pool));
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

async fn run(mut rx: mpsc::Receiver<Pending>, pool: AnyPool) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        commit_batch(&pool, batch).await;
    }
}

async fn commit_batch(pool: &AnyPool, batch: Vec<Pending>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = format!("could not begin a transaction: {e}");
            for p in batch {
                let _ = p.reply.send(Err(ServiceError::Internal(msg.clone())));
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    for p in batch {
        let result = async {
            let mut sp = tx.begin().await.map_err(lodge_store::StoreError::from)?;
            match p.lodge.place_order_in(&mut sp, &p.order, &p.actor).await {
                Ok(o) => {
                    sp.commit().await.map_err(lodge_store::StoreError::from)?;
                    Ok(o)
                }
                Err(e) => {
                    sp.rollback().await.map_err(lodge_store::StoreError::from)?;
                    Err(e)
                }
            }
        }
        .await;
        done.push((p.reply, result));
    }
    match tx.commit().await {
        Ok(()) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            for (reply, _) in done {
                let _ = reply.send(Err(ServiceError::Internal(format!("commit failed: {e}"))));
            }
        }
    }
}
