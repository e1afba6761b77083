//! Catalog answers rendered once per catalog version and served as the same bytes to every
//! caller, with a strong `ETag`: a client that sends it back in `If-None-Match` gets
//! `304 Not Modified` and no body. The tag is a digest of the bytes, so it changes exactly
//! when the answer does (a new catalog version that renders the same keeps its tag).

use std::collections::HashMap;
use std::sync::RwLock;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One rendered answer and its tag.
#[derive(Debug, Clone)]
pub struct Rendered {
    bytes: Bytes,
    etag: HeaderValue,
}

impl Rendered {
    pub fn new(bytes: Bytes) -> Self {
        let digest = Sha256::digest(&bytes);
        let tag = format!(
            "\"{}\"",
            hex::encode(digest.get(..16).unwrap_or(&digest[..]))
        );
        Rendered {
            bytes,
            etag: HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }

    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }

    /// The JSON answer, or `304` when the request already holds it.
    pub fn respond(&self, request: &HeaderMap) -> Response {
        // Callers authenticate, so no shared cache may keep it; a client revalidates.
        let cache = HeaderValue::from_static("private, no-cache");
        if matches_none_match(request, &self.etag) {
            return (
                StatusCode::NOT_MODIFIED,
                [
                    (header::ETAG, self.etag.clone()),
                    (header::CACHE_CONTROL, cache),
                ],
            )
                .into_response();
        }
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, self.etag.clone()),
                (header::CACHE_CONTROL, cache),
            ],
            Body::from(self.bytes.clone()),
        )
            .into_response()
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`), compared weakly as RFC 9110 asks for
/// `If-None-Match`.
pub fn matches_none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == ours)
}

/// Answers of one kind keyed by their request parameters, for one catalog version; a new
/// version empties it. Bounded: past `MAX` distinct keys it starts again.
#[derive(Debug)]
pub struct VersionedCache<K> {
    inner: RwLock<(i64, HashMap<K, Rendered>)>,
}

impl<K> Default for VersionedCache<K> {
    fn default() -> Self {
        VersionedCache {
            inner: RwLock::new((i64::MIN, HashMap::new())),
        }
    }
}

const MAX: usize = 256;

impl<K: std::hash::Hash + Eq + Clone> VersionedCache<K> {
    pub fn get(&self, version: i64, key: &K) -> Option<Rendered> {
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if guard.0 != version {
            return None;
        }
        guard.1.get(key).cloned()
    }

    pub fn put(&self, version: i64, key: K, value: Rendered) {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if guard.0 != version || guard.1.len() >= MAX {
            guard.1.clear();
            guard.0 = version;
        }
        guard.1.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn if_none_match_is_compared_weakly_and_in_lists() {
        let r = Rendered::new(Bytes::from_static(b"[1]"));
        let tag = r.etag().to_str().unwrap().to_owned();
        assert!(matches_none_match(&with(&tag), r.etag()));
        assert!(matches_none_match(&with(&format!("W/{tag}")), r.etag()));
        assert!(matches_none_match(
            &with(&format!("\"x\", {tag}")),
            r.etag()
        ));
        assert!(matches_none_match(&with("*"), r.etag()));
        assert!(!matches_none_match(&with("\"x\""), r.etag()));
        assert!(!matches_none_match(&HeaderMap::new(), r.etag()));
        assert_eq!(r.respond(&with(&tag)).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.respond(&HeaderMap::new()).status(), StatusCode::OK);
        // The tag follows the bytes.
        assert_ne!(Rendered::new(Bytes::from_static(b"[2]")).etag(), r.etag());
    }

    #[test]
    fn a_new_version_empties_the_cache() {
        let c = VersionedCache::<u8>::default();
        c.put(1, 0, Rendered::new(Bytes::from_static(b"a")));
        assert!(c.get(1, &0).is_some());
        assert!(c.get(2, &0).is_none());
        c.put(2, 1, Rendered::new(Bytes::from_static(b"b")));
        assert!(c.get(1, &0).is_none() && c.get(2, &0).is_none() && c.get(2, &1).is_some());
    }
}
