//! `Idempotency-Key` for mutating POSTs: the first response for a key is stored and replayed
//! for retries with the same body; the same key with another body is refused (`422`).
//! Concurrent requests with one key wait for the first to finish, so exactly one acts.

use std::future::Future;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lodge_store::idempotency;
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
    let store = &st.lodge.store;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        let now = st.lodge.now_us();
        if idempotency::claim(store.writer(), scope, key, hash, now).await? {
            break;
        }
        let Some(row) = idempotency::get(store.reader(), scope, key).await? else {
            continue; // released meanwhile: try to claim again
        };
        if row.request_hash != hash {
            return Err(ApiError::Detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This Idempotency-Key was already used with a different request.".into(),
            ));
        }
        if let (Some(status), Some(body)) = (row.status_code, row.response) {
            return Ok(replay(status, body));
        }
        if now - row.created_at > STALE_CLAIM_US {
            let mut conn = store
                .writer()
                .acquire()
                .await
                .map_err(lodge_store::StoreError::from)?;
            idempotency::release_stale(&mut conn, scope, key, now - STALE_CLAIM_US).await?;
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
    let resp = act().await;
    let status = resp.status();
    if status.is_server_error() {
        idempotency::release(store.writer(), scope, key).await?;
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, 4 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            idempotency::release(store.writer(), scope, key).await?;
            return Ok(internal(&e));
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    idempotency::complete(
        store.writer(),
        scope,
        key,
        i64::from(status.as_u16()),
        &text,
    )
    .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
