//! `Idempotency-Key` on the wire: the header parsed into the services' key (its scope, and
//! a digest of the request so the same key with another request is refused), and the
//! replay marked. The protocol itself (claim, work and stored outcome in one transaction)
//! is the services' ([`lodge_services::idempotency`]): a handler renders the outcome the
//! same way on its first answer and on every replay.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use hmac::digest::Update;
use hmac::{Hmac, Mac};
use lodge_services::idempotency::{Answer, IdempotencyKey as Key};
use sha2::Sha256;

use crate::extract::IdempotencyKey;
use crate::AppState;

/// A digest of a request, kept a day with its key: keyed (HMAC-SHA256 under a key derived
/// from the installation's secret key), so that a copy of the database cannot be used to
/// test guesses of what a body held (a transfer's EPP code, a new panel password: found
/// by the secrets audit, when it was a plain SHA-256).
pub fn request_hash(st: &AppState, method: &str, path: &str, body: &[u8]) -> String {
    let Ok(mut h) = Hmac::<Sha256>::new_from_slice(&st.request_digest_key) else {
        // HMAC takes a key of any length: not reached.
        return String::new();
    };
    feed(&mut h, method, path, body);
    hex::encode(h.finalize().into_bytes())
}

/// The digest builds before [`request_hash`] kept (a plain SHA-256), recognised for keys
/// stored by them (see [`Key::legacy_request_hashes`]).
fn legacy_request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::default();
    feed(&mut h, method, path, body);
    hex::encode(sha2::Digest::finalize(h))
}

/// What a request digest covers: method, path and body, separated by NULs.
fn feed(h: &mut impl Update, method: &str, path: &str, body: &[u8]) {
    h.update(method.as_bytes());
    h.update(&[0]);
    h.update(path.as_bytes());
    h.update(&[0]);
    h.update(body);
}

/// A JSON body in one spelling (keys sorted, no insignificant whitespace), so that a client
/// re-serialising its request for a retry (its keys in another order, other spacing) sends
/// the same request; `None` when the body is not JSON (it is digested as sent).
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    // `serde_json::Map` is ordered by key (the `preserve_order` feature is off), so
    // writing the value back sorts every object's keys.
    serde_json::to_vec(&value).ok()
}

/// The services' key for a request carrying the header (`None` without it): keys are per
/// `scope` (the caller), and bound to the request's method, path and body (a JSON body in
/// its canonical form: a retry with its keys reordered is the same request).
pub fn key(
    st: &AppState,
    header: Option<IdempotencyKey>,
    scope: String,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<Key> {
    header.map(|IdempotencyKey(key)| Key {
        scope,
        key,
        request_hash: request_hash(
            st,
            method,
            path,
            canonical_json(body).as_deref().unwrap_or(body),
        ),
        legacy_request_hashes: vec![
            request_hash(st, method, path, body),
            legacy_request_hash(method, path, body),
        ],
        earlier_places: Vec::new(),
        fresh_for_us: None,
    })
}

/// The key of a request sent without `Idempotency-Key` that is still safe to retry: the
/// same `request` (a canonical form of what was asked) from the same `scope` within
/// `window_us` is the same request, answered with the first one's outcome.
pub fn same_request(
    st: &AppState,
    scope: String,
    method: &str,
    path: &str,
    request: &[u8],
    window_us: i64,
) -> Key {
    let hash = request_hash(st, method, path, request);
    // Builds before keyed digests derived the key from a plain SHA-256 of the request.
    let legacy = legacy_request_hash(method, path, request);
    Key {
        earlier_places: vec![(scope.clone(), legacy.clone())],
        scope,
        key: hash.clone(),
        request_hash: hash,
        legacy_request_hashes: vec![legacy],
        fresh_for_us: Some(window_us),
    }
}

/// The rendered answer, with `Idempotent-Replayed: true` when it replays an earlier
/// request's outcome.
pub fn respond<T>(answer: Answer<T>, render: impl FnOnce(T) -> Response) -> Response {
    let replayed = answer.is_replay();
    let mut r = render(answer.into_outcome()).into_response();
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::canonical_json;

    #[test]
    fn json_bodies_have_one_spelling() {
        let a = canonical_json(br#"{"b": [1, {"d": 2, "c": 3}], "a": "x"}"#).unwrap();
        let b = canonical_json(b"{\n\"a\":\"x\",\"b\":[1,{\"c\":3,\"d\":2}]}").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, br#"{"a":"x","b":[1,{"c":3,"d":2}]}"#);
        assert_ne!(
            canonical_json(br#"{"a":1}"#),
            canonical_json(br#"{"a":"1"}"#)
        );
        assert_eq!(canonical_json(b"plan=1&b=2"), None);
    }
}
