//! `Idempotency-Key` for mutating POSTs: the first response for a key is stored and replayed
//! for retries with the same body; the same key with another body is refused (`422`).
//!
//! Orders ([`in_transaction`]) claim their key inside the order's own transaction and store
//! their answer before it commits: the order and its answer exist together or not at all,
//! so a retry after any failure, a commit whose outcome was never heard included, either
//! replays the answer or places the order for the first time. Of concurrent requests with
//! one key, one places the order and the others replay its answer.
//!
//! Other requests ([`once`]) claim the key first in a transaction of its own, act, then
//! store the answer; concurrent requests with one key wait for the first to finish.

use std::future::Future;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::{internal, ApiError};
use crate::extract::IdempotencyKey;
use crate::AppState;

/// A claim older than this whose request never answered (its node died) can be retaken.
const STALE_CLAIM_US: i64 = 600 * 1_000_000;
const WAIT_FOR_FIRST: Duration = Duration::from_secs(60);

pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    hex::encode(h.finalize())
}

fn replay(status: i64, body: String) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

/// Runs `act` at most once per `(scope, key)`.
pub async fn once<F, Fut>(
    st: &AppState,
    scope: &str,
    key: Option<IdempotencyKey>,
    hash: String,
    act: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response>,
{
    let Some(IdempotencyKey(key)) = key else {
        return act().await;
    };
    match run_once(st, scope, &key, &hash, act).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run_once<F, Fut>(
    st: &AppState,
    scope: &str,
    key: &str,
    hash: &str,
    act: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response>,
{
    loop {
        if st.lodge.claim_key(scope, key, hash).await? {
            break;
        }
        // Taken: its answer, or wait for it; `None` once the claim was given back.
        if let Some(answer) = stored_answer(st, scope, key, hash).await? {
            return Ok(answer);
        }
    }
    let resp = act().await;
    let status = resp.status();
    if status.is_server_error() {
        st.lodge.release_key(scope, key).await?;
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, 4 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            st.lodge.release_key(scope, key).await?;
            return Ok(internal(&e));
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    st.lodge
        .complete_key(scope, key, i64::from(status.as_u16()), &text)
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The key, scope and request hash an order claims in its own transaction.
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

/// Runs `act` (which places an order under `Claim`, see the module's documentation) at most
/// once per `(scope, key)`: a stored answer is replayed without running it, and when `act`
/// finds the key taken by a request that committed meanwhile
/// ([`lodge_services::ServiceError::KeyTaken`]), or is refused after such a request took
/// what it asked for, that request's answer is replayed. Nothing is stored for a refusal: a
/// retry is judged afresh.
pub async fn in_transaction<F, Fut>(
    st: &AppState,
    scope: &str,
    key: Option<IdempotencyKey>,
    hash: String,
    act: F,
) -> Response
where
    F: FnOnce(Option<Claim>) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let Some(IdempotencyKey(key)) = key else {
        return act(None).await.unwrap_or_else(IntoResponse::into_response);
    };
    let answered = async {
        if let Some(r) = stored_answer(st, scope, &key, &hash).await? {
            return Ok(r);
        }
        let claim = Claim {
            scope: scope.to_owned(),
            key: key.clone(),
            request_hash: hash.clone(),
        };
        match act(Some(claim)).await {
            Ok(placed) => Ok(placed),
            // Refused, perhaps because a request with this key committed meanwhile (it took
            // the key, `KeyTaken`, or the name): then that request's answer is this one's.
            Err(refused) => stored_answer(st, scope, &key, &hash).await?.ok_or(refused),
        }
    };
    answered.await.unwrap_or_else(IntoResponse::into_response)
}

/// The answer stored for `(scope, key)`: its replay, `422` if it was for another request,
/// `None` if the key is free. A claim still without an answer (a request in flight) is
/// waited for, or forgotten once stale.
async fn stored_answer(
    st: &AppState,
    scope: &str,
    key: &str,
    hash: &str,
) -> Result<Option<Response>, ApiError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        let row = st.lodge.key_answer(scope, key).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if row.request_hash != hash {
            return Err(ApiError::Detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This Idempotency-Key was already used with a different request.".into(),
            ));
        }
        if let (Some(status), Some(body)) = (row.status_code, row.response) {
            return Ok(Some(replay(status, body)));
        }
        let now = st.lodge.now_us();
        if now - row.created_at > STALE_CLAIM_US {
            st.lodge
                .release_stale_key(scope, key, now - STALE_CLAIM_US)
                .await?;
            continue;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::Detail(
                StatusCode::CONFLICT,
                "A request with this Idempotency-Key is still in progress.".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
