//! The stored answers of requests sent with an `Idempotency-Key`, for the dialects' replay:
//! claim a key, read what is stored for it, store an answer, give a claim back.

use lodge_store::idempotency;

use crate::model::IdempotencyRow;
use crate::{Lodge, Result};

impl Lodge {
    /// Claims `(scope, key)` for a request with this hash; `false` when it is taken.
    pub async fn claim_key(&self, scope: &str, key: &str, request_hash: &str) -> Result<bool> {
        let mut conn = self.store.write_conn().await?;
        Ok(idempotency::claim(&mut *conn, scope, key, request_hash, self.now_us()).await?)
    }

    /// What is stored for `(scope, key)`: the claim, with its answer once there is one.
    pub async fn key_answer(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRow>> {
        let mut db = self.store.read_conn().await?;
        Ok(idempotency::get(&mut db, scope, key).await?)
    }

    /// Stores the answer of a claimed key.
    pub async fn complete_key(
        &self,
        scope: &str,
        key: &str,
        status: i64,
        body: &str,
    ) -> Result<()> {
        let mut conn = self.store.write_conn().await?;
        idempotency::complete(&mut *conn, scope, key, status, body).await?;
        Ok(())
    }

    /// Gives a claim without an answer back (its request failed in a way worth retrying).
    pub async fn release_key(&self, scope: &str, key: &str) -> Result<()> {
        Ok(idempotency::release(self.store.writer(), scope, key).await?)
    }

    /// Forgets a claim without an answer made before `older_than` (its request died).
    pub async fn release_stale_key(&self, scope: &str, key: &str, older_than: i64) -> Result<()> {
        let mut conn = self.store.write_conn().await?;
        idempotency::release_stale(&mut conn, scope, key, older_than).await?;
        Ok(())
    }
}
