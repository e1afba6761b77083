//! The `/apiv2` dialect (InterServer-compatible): the website order form, quote and place,
//! websites, invoices and payment — over the same services as `/v1`.
//! Failures are `{"code": "<status>", "message": …}`; order validation failures are `200`
//! with `{"continue": false, "errors": […]}` in InterServer's wording.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::{CancelKind, HostingStatus};
use lodge_services::auth::{Access, Principal};
use lodge_services::ServiceError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::AppState;

mod account;
pub(crate) mod billing;
mod domains;
pub(crate) mod form;
mod login;
mod websites;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            form::order_form,
            form::validate_order,
            form::place_order
        ))
        .routes(routes!(websites::list_websites))
        .routes(routes!(websites::get_website, websites::cancel_website))
        .routes(routes!(websites::website_invoices))
        .routes(routes!(billing::cart))
        .routes(routes!(billing::list_invoices))
        .routes(routes!(billing::get_invoice, billing::delete_invoice))
        .routes(routes!(billing::pay))
        .routes(routes!(billing::pay_short))
        .routes(routes!(account::get_account, account::update_account))
        .routes(routes!(account::countries))
        .routes(routes!(domains::lookup))
        .routes(routes!(login::login, account::login_info))
        .routes(routes!(login::logout))
}

/// The rate limit of a public `/apiv2` request, by the caller's address: the refusal, if
/// any.
pub(crate) fn public_limit(st: &AppState, ip: Option<std::net::IpAddr>) -> Option<Response> {
    let key = format!("ip:{}", ip.map(|i| i.to_string()).unwrap_or_default());
    st.limiter.check(&key).err().map(|e| match e {
        ApiError::RateLimited(secs) => throttled(secs),
        other => V2Error::from(other).into_response(),
    })
}

/// `{"code": "401", "message": "…"}` (the code is a string, as InterServer's seed types it).
#[derive(Debug, Serialize, ToSchema)]
pub struct V2ErrorBody {
    pub code: String,
    pub message: String,
    /// The message again, on a `402` only: InterServer's pay endpoint documents its `402`
    /// as `{error: "<text>"}` (found by the /apiv2 audit: a script reading `.error` got
    /// nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct V2Error(pub StatusCode, pub String);

/// Query parameters read into `T`; an unreadable query string (a value of the wrong type, a
/// parameter given twice) is a 400 in InterServer's shape, not axum's plain text.
#[derive(Debug, Clone)]
pub struct V2Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for V2Query<T> {
    type Rejection = V2Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, V2Error> {
        if crate::extract::query_has_nul(parts.uri.query()) {
            return Err(V2Error(
                StatusCode::BAD_REQUEST,
                crate::extract::NUL_REFUSED.into(),
            ));
        }
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map(V2Query)
            .map_err(|e| {
                V2Error(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid query string: {e}."),
                )
            })
    }
}

/// Path parameters read into `T`; one that cannot be read (bytes that are no UTF-8 text) is a
/// 400 in InterServer's shape, not axum's plain text (found by the apiv2 audit).
#[derive(Debug, Clone)]
pub struct V2Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for V2Path<T> {
    type Rejection = V2Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, V2Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| V2Path(t))
            .map_err(|e| V2Error(StatusCode::BAD_REQUEST, format!("{}.", e.body_text())))
    }
}

impl V2Error {
    pub fn not_found() -> Self {
        V2Error(StatusCode::NOT_FOUND, "Not found.".into())
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        // A 503's message is one for the caller (the database's or the registrar's
        // outage, said in words of Lodge's own); other 5xx hide their cause, logged.
        let message = if self.0.is_server_error() && self.0 != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self.1, "apiv2 request failed");
            "A server error occurred.".to_owned()
        } else {
            self.1
        };
        let mut r = (
            self.0,
            Json(V2ErrorBody {
                code: self.0.as_u16().to_string(),
                error: (self.0 == StatusCode::PAYMENT_REQUIRED).then(|| message.clone()),
                message,
            }),
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::error::UNAVAILABLE_RETRY_SECS),
            );
        }
        r
    }
}

impl From<ServiceError> for V2Error {
    fn from(e: ServiceError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the database is unavailable");
            return V2Error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is unavailable at the moment: try again shortly.".into(),
            );
        }
        match e.for_caller() {
            ServiceError::Unauthorized(m) => V2Error(StatusCode::UNAUTHORIZED, m),
            ServiceError::Forbidden(m) => V2Error(StatusCode::FORBIDDEN, m),
            ServiceError::NotFound => V2Error::not_found(),
            ServiceError::Conflict(m) => V2Error(StatusCode::CONFLICT, m),
            // InterServer: "402 / gateway-specific text — card declined, balance
            // insufficient".
            ServiceError::InsufficientCredit(m) => V2Error(StatusCode::PAYMENT_REQUIRED, m),
            ServiceError::Unavailable(m) => V2Error(StatusCode::SERVICE_UNAVAILABLE, m),
            ServiceError::KeyTaken => V2Error(
                StatusCode::CONFLICT,
                "This Idempotency-Key is already used by another request.".into(),
            ),
            ServiceError::KeyReused => V2Error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This Idempotency-Key was already used with a different request.".into(),
            ),
            ServiceError::Invalid(fields) => V2Error(
                StatusCode::BAD_REQUEST,
                fields
                    .into_iter()
                    .flat_map(|(f, msgs)| msgs.into_iter().map(move |m| format!("{f}: {m}")))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            other => V2Error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Service(s) => s.into(),
            ApiError::Detail(status, m) => V2Error(status, m),
            ApiError::RateLimited(_) => {
                V2Error(StatusCode::TOO_MANY_REQUESTS, "Too many requests.".into())
            }
        }
    }
}

pub type V2Result<T> = Result<T, V2Error>;

/// `429` in `/apiv2`'s error shape, with `Retry-After` (seconds).
pub(crate) fn throttled(secs: u64) -> Response {
    let mut r = V2Error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "Too many requests. Try again in {secs} {}.",
            if secs == 1 { "second" } else { "seconds" }
        ),
    )
    .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

/// The calling customer: `X-API-KEY` (a Lodge API key) or `sessionid` (from
/// `POST /apiv2/login`), with its organization.
#[derive(Debug, Clone)]
pub struct Customer {
    pub principal: Principal,
    pub access: Access,
}

/// How many lanes [`WholeLists`] has.
const WHOLE_LIST_LANES: usize = 64;

/// InterServer's lists (`/apiv2/websites`, `…/billing/invoices`, `…/billing/cart`) have no
/// pages: each answer holds the account's whole history, tens of megabytes for an account
/// of tens of thousands of invoices. An organization's such answers are made one at a time
/// (its requests wait their turn), in one of 64 lanes chosen by the organization, so that
/// one account's parallel calls cannot take the node's memory (found by the scale audit:
/// ten at once of a 50,000-invoice account took 1.2 GB, kept afterwards), while other
/// accounts' lists go on beside it.
#[derive(Debug)]
pub struct WholeLists(Vec<tokio::sync::Semaphore>);

impl Default for WholeLists {
    fn default() -> Self {
        WholeLists(
            (0..WHOLE_LIST_LANES)
                .map(|_| tokio::sync::Semaphore::new(1))
                .collect(),
        )
    }
}

impl WholeLists {
    /// Makes `answer` in `org`'s lane, its JSON too (what holds the memory), and returns it.
    pub async fn one_at_a_time<T: Serialize>(
        &self,
        org: lodge_core::OrganizationId,
        answer: impl std::future::Future<Output = V2Result<T>>,
    ) -> V2Result<Response> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        org.hash(&mut h);
        let lane = usize::try_from(h.finish() % WHOLE_LIST_LANES as u64).unwrap_or(0);
        let _turn =
            match self.0.get(lane) {
                Some(s) => Some(s.acquire().await.map_err(|_| {
                    V2Error(StatusCode::SERVICE_UNAVAILABLE, "Shutting down.".into())
                })?),
                None => None,
            };
        Ok(Json(answer.await?).into_response())
    }
}

/// A caller with valid credentials, whatever its organization (the order form is the same
/// for every customer, so it needs no membership lookup).
#[derive(Debug, Clone)]
pub struct Authenticated;

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        authenticate(parts, st).await.map(|_| Authenticated)
    }
}

async fn authenticate(parts: &Parts, st: &AppState) -> Result<Principal, Response> {
    // Two credentials (two keys, or a key and a session) are ambiguous: refused, not
    // settled by taking one (found by the input audit).
    // (An empty header is no credential, as below.)
    let sent = |name: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
            .count()
    };
    if sent("x-api-key") + sent("sessionid") > 1 {
        return Err(V2Error(
            StatusCode::UNAUTHORIZED,
            "Send one credential: one X-API-KEY or one sessionid header.".into(),
        )
        .into_response());
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let principal = if let Some(key) = header("x-api-key") {
        st.lodge.authenticate_key(key).await
    } else if let Some(session) = header("sessionid") {
        st.lodge.authenticate_session(session).await
    } else {
        Err(ServiceError::Unauthorized(
            "Authentication required: send X-API-KEY or sessionid.".into(),
        ))
    };
    let principal = principal.map_err(|e| match e {
        ServiceError::Unauthorized(_) => V2Error(
            StatusCode::UNAUTHORIZED,
            "Invalid API key or session.".into(),
        )
        .into_response(),
        other => V2Error::from(other).into_response(),
    })?;
    st.limiter.check(&principal.rate_key).map_err(|e| match e {
        ApiError::RateLimited(secs) => throttled(secs),
        other => V2Error::from(other).into_response(),
    })?;
    Ok(principal)
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        let principal = authenticate(parts, st).await?;
        let access = st
            .lodge
            .customer_access(&principal)
            .await
            .map_err(|e| V2Error::from(e).into_response())?;
        Ok(Customer { principal, access })
    }
}

/// A caller that may send no credentials (public endpoints that say more to a customer);
/// credentials that are sent must be valid. A guest's, which see no account, are answered
/// as none would be (found by the authorization audit: the public domain lookup was 403
/// to a guest, 200 to anyone without credentials).
impl axum::extract::OptionalFromRequestParts<AppState> for Customer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &AppState,
    ) -> Result<Option<Self>, Response> {
        let sent = ["x-api-key", "sessionid"].iter().any(|h| {
            parts
                .headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| !v.trim().is_empty())
        });
        if !sent {
            return Ok(None);
        }
        let principal = authenticate(parts, st).await?;
        match st.lodge.customer_access(&principal).await {
            Ok(access) => Ok(Some(Customer { principal, access })),
            Err(ServiceError::Forbidden(_)) => Ok(None),
            Err(e) => Err(V2Error::from(e).into_response()),
        }
    }
}

/// The `Idempotency-Key` of an `/apiv2` mutation, the caller's (scope `apiv2:user:{user}:org:{org}`,
/// shared by every `/apiv2` mutation) and bound to what it asks: `method`, `path` with its
/// ids, and `body`, so the same key on another target or with another body is `422`.
/// `None` without the header; `400` when the header is unusable.
pub(crate) async fn mutation_key(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    c: &Customer,
    method: &str,
    path: &str,
    body: &[u8],
) -> V2Result<Option<lodge_services::idempotency::IdempotencyKey>> {
    let header = crate::extract::IdempotencyKey::from_headers(headers)
        .map_err(|why| V2Error(StatusCode::BAD_REQUEST, why.into()))?;
    Ok(with_earlier_scope(
        st,
        crate::idempotency::key(st, header, user_scope(c), method, path, body),
        c,
    )
    .await)
}

/// A caller's `/apiv2` key, also found where builds before the organization was in its
/// scope stored it (`apiv2:user:{user}`): a retry across the upgrade is answered the
/// outcome stored before it (found by the upgrade audit: it was refused as a new request).
/// Only for a user of one organization: that scope does not say which organization a
/// user of several acted for, and another's outcome must never be replayed (found by the
/// re-check: it was, for a day after the upgrade).
pub(crate) async fn with_earlier_scope(
    st: &AppState,
    key: Option<lodge_services::idempotency::IdempotencyKey>,
    c: &Customer,
) -> Option<lodge_services::idempotency::IdempotencyKey> {
    let mut k = key?;
    let one_organization = st
        .lodge
        .user_organizations(c.principal.user)
        .await
        .is_ok_and(|orgs| orgs.len() == 1 && orgs.iter().all(|o| o.id == c.access.organization));
    if one_organization {
        k.earlier_places
            .push((format!("apiv2:user:{}", c.principal.user), k.key.clone()));
    }
    Some(k)
}

/// Whose `/apiv2` keys these are: the user's in the organization it acts for (a user of
/// two organizations, through a key scoped to each, must not be answered one's outcome
/// in the other: found by the /v1 audit).
pub(crate) fn user_scope(c: &Customer) -> String {
    format!(
        "apiv2:user:{}:org:{}",
        c.principal.user, c.access.organization
    )
}

/// `"1"`/`"0"` flags as InterServer sends them.
pub fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

/// `website_status` from a hosting account (the spec's table). A paid service with a
/// cancellation requested is `pending-cancel` whether or not its setup has finished: that is
/// what `DELETE /apiv2/websites/{id}` answers for any paid service, and a client that sees
/// `pending-setup` after cancelling would think the cancellation was lost.
pub fn website_status(status: HostingStatus, cancel: Option<CancelKind>) -> &'static str {
    use HostingStatus as S;
    match status {
        S::Pending => "pending",
        S::Provisioning | S::Failed | S::Active if cancel.is_some() => "pending-cancel",
        S::Provisioning | S::Failed => "pending-setup",
        S::Active => "active",
        S::Suspended => "suspended",
        S::Terminated | S::Cancelled => "canceled",
    }
}

/// [`body_object_as`] with the media type the request's `Content-Type` declares; also a
/// `multipart/form-data` body of text fields, as InterServer's API document declares for
/// the login, the account and the order (found by the apiv2 and customer audits: such a
/// body read as empty).
pub(crate) async fn declared_body_object(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let essence = declared
        .and_then(|c| c.split(';').next())
        .map(|e| e.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("multipart/form-data") {
        let boundary = multer::parse_boundary(declared.unwrap_or_default()).ok()?;
        return multipart_object(body, boundary)
            .await
            .filter(|m| !crate::extract::has_nul(&serde_json::Value::Object(m.clone())));
    }
    body_object_as(declared, body)
}

/// Why [`declared_body_object`] found no object in a body, said for what it is (found by the
/// apiv2 audit for the order, and by the engines' parity audit for the account: valid JSON
/// with a NUL character, or a list, was called "not the application/json it is declared
/// as").
pub(crate) async fn unusable_body(headers: &axum::http::HeaderMap, body: &[u8]) -> String {
    use crate::extract::{has_nul, NUL_REFUSED};
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let multipart = declared
        .and_then(|c| c.split(';').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("multipart/form-data"));
    let unfiltered = if multipart {
        match multer::parse_boundary(declared.unwrap_or_default()) {
            Ok(boundary) => multipart_object(body, boundary).await,
            Err(_) => None,
        }
    } else {
        body_object_any(declared, body)
    };
    if unfiltered.is_some_and(|m| has_nul(&serde_json::Value::Object(m))) {
        return NUL_REFUSED.into();
    }
    match (
        serde_json::from_slice::<serde_json::Value>(body).ok(),
        declared,
    ) {
        (Some(v), _) if has_nul(&v) => NUL_REFUSED.into(),
        (Some(v), _) if !v.is_object() => {
            "The request body must be a JSON object or a form.".into()
        }
        (_, Some(ct)) => format!("The request body is not the {ct} it is declared as."),
        (_, None) => "The request body must be a JSON object or a form.".into(),
    }
}

/// A `multipart/form-data` body as an object of strings: text fields only (a file part,
/// a field without a name or one that is not UTF-8 makes it unusable: `None`).
async fn multipart_object(
    body: &[u8],
    boundary: String,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let whole = axum::body::Bytes::copy_from_slice(body);
    let stream =
        futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(whole)));
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut out = serde_json::Map::new();
    while let Some(field) = parts.next_field().await.ok()? {
        if field.file_name().is_some() {
            return None;
        }
        let name = field.name()?.to_owned();
        let value = String::from_utf8(field.bytes().await.ok()?.to_vec()).ok()?;
        out.insert(name, serde_json::Value::String(value));
    }
    Some(out)
}

/// An `/apiv2` request body as an object, held to the media type the request declares: a
/// body declared as JSON must be a JSON object, one declared as a form
/// (`application/x-www-form-urlencoded`, as InterServer's web client posts) a form; without
/// a declaration (or with another one) either is taken, as InterServer does. An empty body
/// is an empty object; `None` when it is neither.
pub(crate) fn body_object_as(
    content_type: Option<&str>,
    body: &[u8],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    // A NUL character in any value makes the body unusable (crate::extract::has_nul).
    body_object_any(content_type, body)
        .filter(|m| !crate::extract::has_nul(&serde_json::Value::Object(m.clone())))
}

fn body_object_any(
    content_type: Option<&str>,
    body: &[u8],
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let blank = body.iter().all(u8::is_ascii_whitespace);
    if essence == "application/json" || essence.ends_with("+json") {
        return match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ if blank => Some(serde_json::Map::new()),
            _ => None,
        };
    }
    if essence == "application/x-www-form-urlencoded" && !blank {
        return form_object(body);
    }
    body_object_lenient(body)
}

fn body_object_lenient(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(serde_json::Map::new());
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        };
    }
    form_object(body).filter(|m| !m.is_empty())
}

/// A form body as an object of strings; `None` when it is not one, or when a name or value
/// decodes to bytes that are not UTF-8 (found by the security audit: `name=%FF%FE` was
/// stored as replacement characters where the same bytes in JSON were refused).
fn form_object(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let strict = body.split(|&b| b == b'&').all(|pair| {
        let plus_as_space: Vec<u8> = pair
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
        std::str::from_utf8(&decoded).is_ok()
    });
    if !strict {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_must_decode_to_utf8() {
        let ok = form_object(b"name=J%C3%BCrgen+M&city=Naperville").expect("a form");
        assert_eq!(ok["name"], "Jürgen M");
        assert_eq!(ok["city"], "Naperville");
        for bad in [&b"name=%FF%FEabc"[..], b"%C3=x", b"a=1&b=%E2%82"] {
            assert!(form_object(bad).is_none(), "{bad:?}");
        }
        // A replacement character sent as such is a character like any other.
        assert_eq!(
            form_object(b"n=%EF%BF%BD").expect("a form")["n"],
            "\u{fffd}"
        );
    }
}
