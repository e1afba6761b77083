//! `Idempotency-Key`: a keyed request is done at most once, and its retries are answered
//! with its outcome.
//!
//! A keyed mutation claims its key, does its work and stores its outcome in ONE
//! transaction ([`Lodge::claim_key_in`] first, [`Lodge::answer_key_in`] last; an order
//! claims its key with its outcome in one write after its rows, [`claim_answered_in`]): the
//! work and its stored outcome commit together or not at all. A retry after any failure, a commit
//! whose answer never reached the caller included (the server killed right after it), finds
//! either the stored outcome or no trace of the work, and is then done afresh. Of concurrent
//! requests with one key, one does the work; the others' claims wait for its commit
//! (PostgreSQL's unique index, SQLite's single writer), or they are refused for what it took
//! (an order's name), and are answered its outcome ([`Lodge::keyed`]).
//!
//! What is stored is the service's outcome (JSON), not an HTTP answer: each dialect renders
//! it, on the first answer and on every replay alike. A refusal stores nothing: its retry is
//! judged afresh. Keys are forgotten after a day (the scheduler).

use std::future::Future;

use lodge_store::idempotency;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::payment_tokens::PaymentTokens;
use crate::{Lodge, Result, ServiceError};

/// The `status_code` stored with an outcome: the work was done.
const DONE: i64 = 201;

/// A request's key: who sent it (`scope`: keys are per caller), the key, and a digest of the
/// request, so the same key with another request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    /// The request's digests as earlier builds wrote them (a plain SHA-256 of the raw
    /// body; a keyed one of the raw body, before JSON bodies were digested in a canonical
    /// form), also taken as the same request: a retry across the upgrade is answered its
    /// outcome, not refused (found by the re-audit). During a rolling upgrade a node of
    /// the build before canonical digests knows only the raw one: a retry there with the
    /// JSON spelt otherwise than the first time is refused (422), as it always was there.
    /// Kept while such keys may live (a day after the upgrade).
    pub legacy_request_hashes: Vec<String>,
    /// Where earlier builds stored the same request, as `(scope, key)`: read, never
    /// claimed, when the key itself holds nothing, so that a retry across the upgrade is
    /// answered the outcome stored before it (found by the upgrade audit: `/apiv2` keys
    /// gained the organization in their scope, and an order sent without a key its keyed
    /// digest, and such retries were refused as new requests). Kept while such keys may
    /// live (a day after the upgrade).
    pub earlier_places: Vec<(String, String)>,
    /// For a key Lodge derives itself rather than one the caller sent (an identical
    /// `/apiv2` order): how long, in microseconds, a stored outcome answers an identical
    /// request. Past it the key is free again and taken over by the next such request.
    /// `None` for a caller's key, kept until the scheduler forgets it (a day).
    pub fresh_for_us: Option<i64>,
}

impl IdempotencyKey {
    /// A stored claim of this key made before this instant (microseconds) no longer answers
    /// an identical request at `now`, and is taken over; `None` for a caller's key.
    fn stale_before(&self, now: i64) -> Option<i64> {
        self.fresh_for_us
            .map(|w| now.saturating_sub(w).saturating_add(1))
    }
}

/// An outcome stored under a key. What it must not store (a payment token: the database
/// holds none, [`crate::payment_tokens`]) is skipped when it is stored and derived again
/// by [`StoredOutcome::restore`] when it is replayed.
pub trait StoredOutcome: Serialize + DeserializeOwned {
    /// Derives again, on a replay, what the stored outcome does not hold.
    fn restore(&mut self, _tokens: &PaymentTokens) {}
}

impl StoredOutcome for crate::orders::OrderOutcome {
    fn restore(&mut self, tokens: &PaymentTokens) {
        self.payment_token = self.payment_token_salt.as_deref().map(|s| tokens.token(s));
    }
}

impl StoredOutcome for crate::plan_change::PlanChangeOutcome {
    fn restore(&mut self, tokens: &PaymentTokens) {
        self.payment_token = self.payment_token_salt.as_deref().map(|s| tokens.token(s));
    }
}

impl StoredOutcome for crate::billing::Deposit {}
impl StoredOutcome for crate::refunds::RefundOutcome {}
impl StoredOutcome for crate::storefront::PrepayOutcome {}
impl StoredOutcome for crate::hosting::Cancellation {}
impl StoredOutcome for () {}

/// A key with the outcome to store under it, for work whose outcome is known before it is
/// written (a payment from credit, which SQLite's batch writer writes on its own thread).
#[derive(Debug, Clone)]
pub(crate) struct Keyed {
    pub key: IdempotencyKey,
    pub outcome: serde_json::Value,
}

impl Keyed {
    pub(crate) fn new<T: Serialize>(key: &IdempotencyKey, outcome: &T) -> Result<Self> {
        Ok(Keyed {
            key: key.clone(),
            outcome: serde_json::to_value(outcome)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
        })
    }
}

/// An outcome, done now or replayed from a request with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Done(T),
    Replayed(T),
}

impl<T> Answer<T> {
    pub fn is_replay(&self) -> bool {
        matches!(self, Answer::Replayed(_))
    }

    pub fn into_outcome(self) -> T {
        match self {
            Answer::Done(t) | Answer::Replayed(t) => t,
        }
    }
}

impl Lodge {
    /// Runs `act` at most once per key: a stored outcome is replayed without running it, and
    /// when `act` fails because a request with the same key committed meanwhile (its claim
    /// is refused, [`ServiceError::KeyTaken`], or what it asked for is taken), that request's
    /// outcome is the answer. `act` must claim the key and store its outcome in its
    /// transaction: [`Lodge::claim_key_in`] first and [`Lodge::answer_key_in`] last, or both
    /// at once after its work ([`claim_answered_in`], an order's).
    pub async fn keyed<T, F, Fut>(&self, key: Option<&IdempotencyKey>, act: F) -> Result<Answer<T>>
    where
        T: StoredOutcome,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(key) = key else {
            return act().await.map(Answer::Done);
        };
        if let Some(stored) = self.stored_outcome(key).await? {
            return Ok(Answer::Replayed(stored));
        }
        match act().await {
            Ok(done) => Ok(Answer::Done(done)),
            Err(refused) => match self.stored_outcome(key).await? {
                Some(stored) => Ok(Answer::Replayed(stored)),
                None => Err(refused),
            },
        }
    }

    /// The outcome stored for `key`; `None` when the key is free. `KeyReused` when it was
    /// used for another request.
    async fn stored_outcome<T: StoredOutcome>(&self, key: &IdempotencyKey) -> Result<Option<T>> {
        let row = {
            let mut db = self.store.read_conn().await?;
            let mut found = idempotency::get(&mut db, &key.scope, &key.key).await?;
            for (scope, earlier) in &key.earlier_places {
                if found.is_some() {
                    break;
                }
                found = idempotency::get(&mut db, scope, earlier).await?;
            }
            found
        };
        let Some(row) = row else {
            return Ok(None);
        };
        if key
            .stale_before(self.now_us())
            .is_some_and(|stale| row.created_at < stale)
        {
            return Ok(None);
        }
        if row.request_hash != key.request_hash
            && !key.legacy_request_hashes.contains(&row.request_hash)
        {
            return Err(ServiceError::KeyReused);
        }
        match row.response {
            Some(body) => serde_json::from_str(&body)
                .map(|mut stored: T| {
                    stored.restore(self.sealer.payment_tokens());
                    Some(stored)
                })
                .map_err(|_| {
                // Stored by a build before outcomes were stored (an HTTP body).
                ServiceError::Conflict(
                    "This Idempotency-Key was answered by an earlier version of Lodge; use a new key."
                        .into(),
                )
            }),
            // Only the three-step protocol of earlier builds committed a claim alone.
            None => Err(ServiceError::Conflict(
                "The first request with this Idempotency-Key did not finish; use a new key.".into(),
            )),
        }
    }

    /// For a key Lodge derived itself (an identical `/apiv2` order sent again): forgets the
    /// order stored under it when that order no longer stands (its account cancelled or
    /// ended: the customer cancelled it, or deleted its invoice), so that the same order
    /// sent again is placed anew instead of being answered with the dead one. True when
    /// forgotten; a caller's own key is never forgotten.
    pub async fn forget_gone_order(&self, key: &IdempotencyKey) -> Result<bool> {
        if key.fresh_for_us.is_none() {
            return Ok(false);
        }
        let mut conn = self.store.write_conn().await?;
        let places = std::iter::once((&key.scope, &key.key))
            .chain(key.earlier_places.iter().map(|(s, k)| (s, k)));
        for (scope, k) in places {
            let Some(row) = idempotency::get(&mut *conn, scope, k).await? else {
                continue;
            };
            // The place a replay is answered from (the first holding a row).
            let Some(outcome) = row
                .response
                .as_deref()
                .and_then(|b| serde_json::from_str::<crate::orders::OrderOutcome>(b).ok())
            else {
                return Ok(false);
            };
            let stands = lodge_store::hosting::hosting(&mut *conn, outcome.hosting_id)
                .await?
                .is_some_and(|h| h.status.is_live());
            if stands {
                return Ok(false);
            }
            return Ok(idempotency::forget_answered(&mut *conn, scope, k, row.created_at).await?);
        }
        Ok(false)
    }

    /// [`claim_in`] at this node's now.
    pub(crate) async fn claim_key_in<C: lodge_store::SqlConn>(
        &self,
        conn: &mut C,
        key: &IdempotencyKey,
    ) -> Result<()> {
        claim_in(conn, key, self.now_us()).await
    }

    /// Stores `outcome` under `key` in a transaction of its own, for keyed work that writes
    /// nothing else (a payment page's link): the key is then used, and a retry replays it.
    pub(crate) async fn record_outcome<T: Serialize>(
        &self,
        key: &IdempotencyKey,
        outcome: &T,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        self.claim_key_in(&mut tx, key).await?;
        self.answer_key_in(&mut tx, key, outcome).await?;
        tx.commit().await.map_err(lodge_store::StoreError::from)?;
        Ok(())
    }

    /// Stores a placed order's outcome under a second key too (the key an `/apiv2` order
    /// without an `Idempotency-Key` derives, so that a retry without the header is
    /// answered the keyed first's outcome). Refused (`KeyTaken`) when that key holds
    /// another request already.
    pub async fn remember_order_as(
        &self,
        key: &IdempotencyKey,
        outcome: &crate::orders::OrderOutcome,
    ) -> Result<()> {
        self.record_outcome(key, outcome).await
    }

    /// [`answer_in`].
    pub(crate) async fn answer_key_in<C: lodge_store::SqlConn, T: Serialize>(
        &self,
        conn: &mut C,
        key: &IdempotencyKey,
        outcome: &T,
    ) -> Result<()> {
        answer_in(conn, key, outcome).await
    }
}

/// Claims `key` in the caller's transaction, before its first other write;
/// `KeyTaken` when a request with it committed (on PostgreSQL, a claim another
/// transaction holds is waited for first).
pub(crate) async fn claim_in<C: lodge_store::SqlConn>(
    conn: &mut C,
    key: &IdempotencyKey,
    now: i64,
) -> Result<()> {
    let claimed = match key.stale_before(now) {
        None => idempotency::claim(conn, &key.scope, &key.key, &key.request_hash, now).await?,
        Some(stale_before) => {
            idempotency::claim_or_take_over(
                conn,
                &key.scope,
                &key.key,
                &key.request_hash,
                now,
                stale_before,
            )
            .await?
        }
    };
    taken_unless(claimed)
}

/// `KeyTaken` unless the claim was made.
fn taken_unless(claimed: bool) -> Result<()> {
    if claimed {
        Ok(())
    } else {
        Err(ServiceError::KeyTaken)
    }
}

/// Claims `key` and stores `outcome` as its answer in one write, in the transaction of the
/// work it answers, after that work ([`idempotency::claim_answered`]): `KeyTaken` as
/// [`claim_in`]. An order's batch holds the key's lock ([`idempotency::lock_keys`]), so
/// another order's claim of it is never in flight; another keyed request of the same
/// caller with the same key (which does not take that lock) is waited for, as by
/// [`claim_in`].
pub(crate) async fn claim_answered_in<C: lodge_store::SqlConn, T: Serialize>(
    conn: &mut C,
    key: &IdempotencyKey,
    now: i64,
    outcome: &T,
) -> Result<()> {
    let body = serde_json::to_string(outcome).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let claimed = idempotency::claim_answered(
        conn,
        &key.scope,
        &key.key,
        &key.request_hash,
        now,
        key.stale_before(now),
        DONE,
        &body,
    )
    .await?;
    taken_unless(claimed)
}

/// Stores the outcome of the work done under `key`, in the same transaction.
pub(crate) async fn answer_in<C: lodge_store::SqlConn, T: Serialize>(
    conn: &mut C,
    key: &IdempotencyKey,
    outcome: &T,
) -> Result<()> {
    let body = serde_json::to_string(outcome).map_err(|e| ServiceError::Internal(e.to_string()))?;
    idempotency::complete(conn, &key.scope, &key.key, DONE, &body).await?;
    Ok(())
}
