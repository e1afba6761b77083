//! How `/v1` (and the admin API) answers failures: Django REST Framework conventions.
//! `400` → `{"<field>": ["message"]}`; other statuses → `{"detail": "message"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lodge_services::{FieldErrors, ServiceError};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Service(ServiceError),
    /// A status with a `detail` message.
    Detail(StatusCode, String),
    /// Too many requests; retry after this many seconds.
    RateLimited(u64),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Service(e)
    }
}

impl ApiError {
    pub fn not_found() -> Self {
        ApiError::Service(ServiceError::NotFound)
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::Detail(StatusCode::BAD_REQUEST, detail.into())
    }
    pub fn fields(errors: FieldErrors) -> Self {
        ApiError::Service(ServiceError::Invalid(errors))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

fn detail(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "detail": msg }))).into_response()
}

/// The generic answer to an unexpected failure; the cause is logged, never sent.
pub fn internal(cause: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %cause, "request failed");
    detail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "A server error occurred.",
    )
}

/// Seconds a client is asked to wait when the database is unreachable.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

/// The answer while the database is unreachable: 503 with `Retry-After` (found by the
/// multi-node audit: a restarting PostgreSQL made every request a bare 500).
pub fn unavailable(cause: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %cause, "the database is unavailable");
    retry_later(detail(
        StatusCode::SERVICE_UNAVAILABLE,
        "The service is unavailable at the moment: try again shortly.",
    ))
}

/// `r` asking its client to come back in [`UNAVAILABLE_RETRY_SECS`] (`Retry-After`).
pub fn retry_later(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(UNAVAILABLE_RETRY_SECS),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Detail(status, msg) => detail(status, &msg),
            ApiError::RateLimited(secs) => {
                let mut r = detail(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Request was throttled. Expected available in {secs} {}.",
                        if secs == 1 { "second" } else { "seconds" }
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            ApiError::Service(e) if e.is_unavailable() => unavailable(&e),
            ApiError::Service(ServiceError::Unavailable(msg)) => {
                retry_later(detail(StatusCode::SERVICE_UNAVAILABLE, &msg))
            }
            ApiError::Service(e) => match e.for_caller() {
                ServiceError::Unauthorized(msg) => {
                    let mut r = detail(StatusCode::UNAUTHORIZED, &msg);
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    r
                }
                ServiceError::Forbidden(msg) => detail(StatusCode::FORBIDDEN, &msg),
                ServiceError::NotFound => detail(StatusCode::NOT_FOUND, "Not found."),
                ServiceError::Invalid(fields) => {
                    (StatusCode::BAD_REQUEST, axum::Json(fields)).into_response()
                }
                ServiceError::Conflict(msg) | ServiceError::InsufficientCredit(msg) => {
                    detail(StatusCode::CONFLICT, &msg)
                }
                ServiceError::KeyTaken => detail(
                    StatusCode::CONFLICT,
                    "This Idempotency-Key is already used by another request.",
                ),
                ServiceError::KeyReused => detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "This Idempotency-Key was already used with a different request.",
                ),
                other => internal(&other),
            },
        }
    }
}

/// An error answered before any handler (an unknown path, a refused method, an unreadable
/// body, a NUL in the path), in the dialect of the path: InterServer's `{"code",
/// "message"}` under `/apiv2/`, `{"detail"}` elsewhere.
pub fn in_dialect(path: &str, status: StatusCode, message: String) -> Response {
    if crate::pages::is_page_path(path) {
        // The payment pages are read in a browser: a page, not the API's JSON.
        return crate::pages::refused_page(status);
    }
    if path.starts_with("/apiv2/") {
        crate::apiv2::V2Error(status, message).into_response()
    } else {
        ApiError::Detail(status, message).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodge_store::StoreError;

    fn store(e: sqlx::Error) -> ServiceError {
        ServiceError::Store(StoreError::Db(e))
    }

    /// An unreachable database is 503 with `Retry-After` in both dialects (the client may
    /// retry, with its Idempotency-Key); any other store failure stays a 500.
    #[test]
    fn an_unreachable_database_is_503_with_retry_after() {
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            let r = ApiError::Service(store(e)).into_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        }
        let r = crate::apiv2::V2Error::from(store(sqlx::Error::PoolTimedOut)).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = ApiError::Service(store(sqlx::Error::RowNotFound)).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
