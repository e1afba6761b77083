//! Request extractors shared by the `/v1` and admin handlers: the authenticated caller (with
//! rate limiting), JSON bodies with DRF-style errors, path ids and pagination.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use lodge_services::auth::Principal;
use lodge_services::{FieldCode, FieldError, FieldErrors, ServiceError};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

/// The client's address: the TCP peer (the server is served with its connect info; `None`
/// when it is not, e.g. a router driven directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(peer.map(|p| {
            client_address(p, &parts.headers, &st.trusted_proxies)
        })))
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address of `X-Forwarded-For` (read from the right, as each proxy appends the address it
/// saw) that is not a trusted proxy (found by the security audit: behind the README's
/// nginx every client was 127.0.0.1, so 20 failed logins locked everyone out). An
/// unreadable entry ends the walk at the last address known to be a proxy's.
pub fn client_address(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    // An IPv4 peer of a dual-stack listener is `::ffff:a.b.c.d`: compared as IPv4.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop).map(|ip| ip.to_canonical()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<std::net::IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The authenticated caller of a `/v1` endpoint (`Authorization: Bearer <key or JWT>`).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        // Two credentials are ambiguous (a proxy appending its own, a client sending two):
        // refused, not settled by taking the first (found by the input audit).
        if parts.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
            return Err(ServiceError::Unauthorized(
                "Send one Authorization header, not several.".to_owned(),
            )
            .into());
        }
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let token = match header {
            None => {
                return Err(ServiceError::Unauthorized(
                    "Authentication credentials were not provided.".to_owned(),
                )
                .into())
            }
            Some(h) => match h.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => {
                    return Err(ServiceError::Unauthorized(
                        "Use the header Authorization: Bearer <token>.".to_owned(),
                    )
                    .into())
                }
            },
        };
        let principal = st.lodge.authenticate_bearer(token).await?;
        st.limiter.check(&principal.rate_key)?;
        Ok(Caller(principal))
    }
}

/// A staff caller (admin API): `403` for anyone else, and for a read-only staff key
/// (without the `write` scope: `lodge keys create-staff --read-only`) on anything but a
/// read (found by the staff audit: every staff key could refund and add credit).
#[derive(Debug, Clone)]
pub struct Staff(pub Principal);

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let Caller(p) = Caller::from_request_parts(parts, st).await?;
        st.lodge.require_staff(&p)?;
        let reads = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        if !reads && !p.has_scope("write") {
            return Err(ServiceError::Forbidden(
                "This staff key is read-only: it has no write scope.".to_owned(),
            )
            .into());
        }
        Ok(Staff(p))
    }
}

/// The `Idempotency-Key` header, if sent.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        IdempotencyKey::from_headers(&parts.headers).map_err(ApiError::bad_request)
    }
}

impl IdempotencyKey {
    /// The header, if sent; the reason it is unusable otherwise (each dialect words the
    /// refusal in its own shape).
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Result<Option<Self>, &'static str> {
        let mut sent = headers.get_all("idempotency-key").iter();
        let first = sent.next();
        if sent.next().is_some() {
            // Two keys: which one the caller meant cannot be known, and a retry that
            // sends them in another order must not be a new request.
            return Err("Send one Idempotency-Key header, not several.");
        }
        match first {
            None => Ok(None),
            Some(v) => {
                // Printable ASCII (spaces inside only), 1 to 255 characters: what the
                // OpenAPI document says of it.
                let b = v.as_bytes();
                if !b.iter().all(|c| (b' '..=b'~').contains(c))
                    || b.first() == Some(&b' ')
                    || b.last() == Some(&b' ')
                {
                    return Err("The Idempotency-Key header must be printable ASCII, with no space at either end.");
                }
                if b.is_empty() || b.len() > 255 {
                    return Err("The Idempotency-Key header must have 1 to 255 characters.");
                }
                if b.contains(&b',') {
                    // What two keys look like once a proxy has joined the headers
                    // (`a, b`): the same ambiguity as two headers.
                    return Err(
                        "Send one Idempotency-Key header, not several: a key has no comma.",
                    );
                }
                Ok(Some(IdempotencyKey(
                    String::from_utf8_lossy(b).into_owned(),
                )))
            }
        }
    }
}

/// A JSON body. Malformed JSON → `400 {"detail"}`; a field of the wrong type or a missing
/// required field → `400 {"field": ["…"]}`.
#[derive(Debug, Clone)]
pub struct V1Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for V1Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let V1Body(bytes) = V1Body::from_request(req, state).await?;
        // As Django REST framework reads it: no body is no data, `{}` (a required field is
        // then reported missing; the document marks such bodies optional).
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(bytes).map(V1Json)
    }
}

/// A JSON body read with the request and judged when the handler asks ([`V1Later::get`]),
/// after its access checks: as Django REST framework reads `request.data` lazily, a caller
/// with no access to the path is answered `404`/`403` whatever the body, never a `400`
/// that tells it the path's resource exists.
#[derive(Debug)]
pub struct V1Later<T>(Result<T, ApiError>);

impl<T> V1Later<T> {
    /// The body, or [`V1Json`]'s refusal of it.
    pub fn get(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for V1Later<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(V1Later(
            V1Json::<T>::from_request(req, state)
                .await
                .map(|V1Json(t)| t),
        ))
    }
}

/// Path parameters read into `T` (the `/v1` and staff handlers import it as `Path`). A path
/// that cannot be read (bytes that are no UTF-8 text) names nothing: `404 {"detail"}`, as
/// any other id that names nothing, not axum's plain-text 400 (found by the apiv2 audit,
/// which asked whether `/v1` had the gap too: it had).
#[derive(Debug, Clone)]
pub struct V1Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for V1Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        <axum::extract::Path<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| V1Path(t))
            .map_err(|_| ApiError::not_found())
    }
}

/// Query parameters read into `T`; an unreadable query string (a value of the wrong type, a
/// parameter given twice) is a 400 in `/v1`'s shape, not axum's plain text.
#[derive(Debug, Clone)]
pub struct V1Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for V1Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if query_has_nul(parts.uri.query()) {
            return Err(ApiError::bad_request(NUL_REFUSED));
        }
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map(V1Query)
            .map_err(|e| ApiError::bad_request(format!("Invalid query string: {e}.")))
    }
}

/// The query parameters a staff list takes, by name (see [`OnlyParams`]).
pub trait KnownParams {
    const NAMES: &'static [&'static str];
}

/// A list that takes no query parameter.
pub struct NoParams;
impl KnownParams for NoParams {
    const NAMES: &'static [&'static str] = &[];
}

/// A list that takes only the page parameters ([`PageQuery`]).
pub struct PageParams;
impl KnownParams for PageParams {
    const NAMES: &'static [&'static str] = &["page", "page_size"];
}

/// Refuses a query parameter not named by `P` with a 400 in `/v1`'s shape naming it, so
/// that a staff list's mistyped filter is never silently ignored (`?status=active` on a list
/// that has no such filter answered the whole list). For lists whose filters are read
/// beside [`PageQuery`], where `deny_unknown_fields` on the filters refused the page
/// parameters, the `next` link included (found by the README audit).
pub struct OnlyParams<P>(std::marker::PhantomData<P>);

impl<P: KnownParams, S: Send + Sync> FromRequestParts<S> for OnlyParams<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if query_has_nul(Some(query)) {
            return Err(ApiError::bad_request(NUL_REFUSED));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("Invalid query string: {e}.")))?;
        match pairs.iter().find(|(k, _)| !P::NAMES.contains(&k.as_str())) {
            None => Ok(OnlyParams(std::marker::PhantomData)),
            Some((k, _)) => Err(ApiError::bad_request(format!(
                "Invalid query string: unknown field `{k}`, {}.",
                expected_names(P::NAMES)
            ))),
        }
    }
}

/// The names a query takes, as serde words them in its own `unknown field` errors.
fn expected_names(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "this list takes no query parameters".to_owned(),
        [one] => format!("expected {one}"),
        [a, b] => format!("expected {a} or {b}"),
        many => format!("expected one of {}", many.join(", ")),
    }
}

/// The raw body of a `/v1` request that takes JSON (for handlers that digest it before
/// parsing it): `415` when it declares another media type, `400` when it cannot be read.
#[derive(Debug, Clone)]
pub struct V1Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for V1Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let json = essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"));
            if !json {
                return Err(ApiError::Detail(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("Unsupported media type \"{ct}\" in request."),
                ));
            }
        }
        Bytes::from_request(req, state)
            .await
            .map(V1Body)
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::Detail(StatusCode::PAYLOAD_TOO_LARGE, crate::doc::TOO_LARGE.into())
                }
                _ => ApiError::bad_request(format!("Could not read the body: {e}")),
            })
    }
}

/// Deserializes a body, reporting the offending field in DRF's shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so malformed JSON gets the `detail` shape.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("JSON parse error - {e}")))?;
    if has_nul(&value) {
        return Err(ApiError::bad_request(NUL_REFUSED));
    }
    if !value.is_object() {
        return Err(ApiError::fields(one(
            "non_field_errors",
            FieldCode::Invalid,
            "Invalid data. Expected a dictionary.",
        )));
    }
    let mut value = integral_numbers(value);
    // Every bad field at once, as Django REST framework reports them (found by the /v1
    // client audit: only the first was said, then the next on the retry): serde stops at
    // the first, so the body is read again without what was found wrong (an unknown or
    // ill-typed field taken out, a missing one filled with a value of a type it takes)
    // until it reads or nothing more is learnt.
    let mut errors = FieldErrors::new();
    // A large body (a catalog) is said its first error only: reading it again for each
    // would cost many times its parse, before any rate limit (found by review).
    let passes = if bytes.len() <= MAX_MULTI_ERROR_BODY {
        MAX_FIELD_PASSES
    } else {
        1
    };
    for _ in 0..passes {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) if errors.is_empty() => return Ok(t),
            Ok(_) => break,
            Err(e) => BodyError::of(e),
        };
        let Some(object) = value.as_object_mut() else {
            break;
        };
        let progressed = match &e {
            BodyError::Missing(field) => {
                // Missing because an ill-typed value was taken out: said already.
                let said = errors.keys().any(|k| {
                    k.strip_prefix(field.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                });
                if !said {
                    errors.insert(field.clone(), vec![e.message()]);
                }
                match stand_in::<T>(object, field) {
                    Some(v) => {
                        object.insert(field.clone(), v);
                        true
                    }
                    None => false,
                }
            }
            BodyError::Unknown(field, _) | BodyError::Invalid { top: field, .. } => {
                errors.entry(e.key()).or_insert_with(|| vec![e.message()]);
                object.remove(field).is_some()
            }
            BodyError::Whole(_) => {
                errors.entry(e.key()).or_insert_with(|| vec![e.message()]);
                false
            }
        };
        if !progressed {
            break;
        }
    }
    Err(ApiError::fields(errors))
}

/// The most times a body is read again to find its next bad field (a body has a handful).
const MAX_FIELD_PASSES: usize = 16;

/// The largest body whose every bad field is looked for ([`parse_json`]).
const MAX_MULTI_ERROR_BODY: usize = 16 * 1024;

/// What serde found wrong with a body, by the top-level field it concerns.
enum BodyError {
    /// A required field not sent.
    Missing(String),
    /// A field the endpoint does not take, and serde's words (which name those it takes).
    Unknown(String, String),
    /// A value serde refused: `path` is its place (`pricing[0].price`), `top` the body's
    /// field holding it.
    Invalid {
        path: String,
        top: String,
        message: String,
    },
    /// The body as a whole.
    Whole(String),
}

impl BodyError {
    fn of(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let named = |prefix: &str| {
            inner
                .strip_prefix(prefix)
                .and_then(|r| r.split('`').next())
                .map(str::to_owned)
        };
        if let Some(field) = named("missing field `") {
            return if path == "." {
                BodyError::Missing(field)
            } else {
                BodyError::Invalid {
                    top: top_field(&path),
                    path: format!("{path}.{field}"),
                    message: "This field is required.".into(),
                }
            };
        }
        // (serde's path names the unknown key itself, except at the top level.)
        if let Some(field) = named("unknown field `").filter(|_| path == ".") {
            return BodyError::Unknown(field, inner);
        }
        if path == "." {
            return BodyError::Whole(drf_words(&inner));
        }
        BodyError::Invalid {
            top: top_field(&path),
            path,
            message: drf_words(&inner),
        }
    }

    /// The key of its message in the answer.
    fn key(&self) -> String {
        match self {
            BodyError::Missing(f) | BodyError::Unknown(f, _) => f.clone(),
            BodyError::Invalid { path, .. } => path.clone(),
            BodyError::Whole(_) => "non_field_errors".into(),
        }
    }

    fn message(&self) -> FieldError {
        match self {
            BodyError::Missing(_) => {
                FieldError::new(FieldCode::Required, "This field is required.")
            }
            // A field the endpoint does not take is refused keyed by its name, never
            // ignored (a misspelt field would otherwise do nothing, silently).
            BodyError::Unknown(_, message)
            | BodyError::Invalid { message, .. }
            | BodyError::Whole(message) => FieldError::new(FieldCode::Invalid, message.clone()),
        }
    }
}

/// The body's field a serde path starts in (`pricing` of `pricing[0].price`).
fn top_field(path: &str) -> String {
    path.split(['.', '[']).next().unwrap_or(path).to_owned()
}

/// A value of a type `field` takes, to stand in for it while the rest of the body is read:
/// the first of a few plain values with which serde no longer stops at `field`.
fn stand_in<T: DeserializeOwned>(
    object: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Option<serde_json::Value> {
    use serde_json::json;
    [json!(""), json!(0), json!(false), json!([]), json!({})]
        .into_iter()
        .find(|candidate| {
            let mut trial = object.clone();
            trial.insert(field.to_owned(), candidate.clone());
            match serde_path_to_error::deserialize::<_, T>(serde_json::Value::Object(trial)) {
                Ok(_) => true,
                Err(e) => match BodyError::of(e) {
                    BodyError::Missing(f) | BodyError::Unknown(f, _) => f != field,
                    BodyError::Invalid { top, .. } => top != field,
                    BodyError::Whole(_) => false,
                },
            }
        })
}

/// A value of the wrong type in Django REST framework's words, as the order endpoint
/// answers it (`Not a valid string.`), instead of serde's (`invalid type: integer `123`,
/// expected a string`; found by the v1 audit). Other errors keep serde's text.
fn drf_words(serde: &str) -> String {
    // A field that takes a string or a number (an amount, a key's scopes) given neither:
    // serde names its internal type (found by the staff audit: `{"amount": null}` was
    // answered "data did not match any variant of untagged enum Amount").
    if let Some(ty) = serde.strip_prefix("data did not match any variant of untagged enum ") {
        return match ty {
            "Amount" => "An amount is required: a decimal string (\"10.00\") or a number.".into(),
            _ => "Not a valid value.".into(),
        };
    }
    let Some(rest) = serde.strip_prefix("invalid type: ") else {
        return serde.to_owned();
    };
    let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    if got == "null" {
        return "This field may not be null.".into();
    }
    let python_type = match got.split([' ', '`']).next().unwrap_or_default() {
        "string" => "str",
        "integer" => "int",
        "floating" => "float",
        "boolean" => "bool",
        "map" => "dict",
        "sequence" => "list",
        _ => "",
    };
    match expected {
        "a boolean" => "Must be a valid boolean.".into(),
        "a string" => "Not a valid string.".into(),
        "a sequence" if !python_type.is_empty() => {
            format!("Expected a list of items but got type \"{python_type}\".")
        }
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "an integer" => {
            "A valid integer is required.".into()
        }
        e if (e == "a map" || e.starts_with("struct ")) && !python_type.is_empty() => {
            format!("Invalid data. Expected a dictionary, but got {python_type}.")
        }
        _ => serde.to_owned(),
    }
}

/// Why a request carrying a NUL character is refused, in either dialect.
pub const NUL_REFUSED: &str = "Text may not contain a NUL character (\\u0000, %00).";

/// Whether any string (or key) of a JSON value holds a NUL character: no text Lodge keeps
/// may (PostgreSQL's text refuses it, which would otherwise surface as a server error, and
/// SQLite would keep it), so it is refused at the boundary, before anything is read or
/// written.
pub fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Whether a query string decodes to a NUL character somewhere (`%00`).
pub fn query_has_nul(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    })
}

/// JSON has one number type: `5.0` is the integer 5 to JSON Schema (and to the OpenAPI
/// document's `integer` fields), so a number with no fraction, within the range where a
/// float is exact (±2⁵³), is read as an integer wherever the body has one.
pub fn integral_numbers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

fn one(field: &str, code: FieldCode, msg: &str) -> FieldErrors {
    let mut m = FieldErrors::new();
    m.insert(field.to_owned(), vec![FieldError::new(code, msg)]);
    m
}

/// Parses a path id; anything that is not one is simply not found.
pub fn path_id<T: std::str::FromStr>(s: &str) -> Result<T, ApiError> {
    s.parse().map_err(|_| ApiError::not_found())
}

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// `?page=&page_size=` (pages from 1; `page_size` defaults to 20 and is capped at 100).
#[derive(Debug, Clone, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1.
    pub page: Option<String>,
    /// Results per page (default 20, at most 100).
    pub page_size: Option<String>,
}

/// Never fails, so `Query<PageQuery>` never answers axum's plain-text 400: a repeated
/// parameter takes its last value (as Django's `QueryDict` does) and other parameters are
/// ignored; [`PageQuery::resolve`] judges the values.
impl<'de> Deserialize<'de> for PageQuery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Params;
        impl<'de> serde::de::Visitor<'de> for Params {
            type Value = PageQuery;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("query parameters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PageQuery, A::Error> {
                let mut q = PageQuery::default();
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    match key.as_str() {
                        "page" => q.page = Some(value),
                        "page_size" => q.page_size = Some(value),
                        _ => {}
                    }
                }
                Ok(q)
            }
        }
        d.deserialize_map(Params)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: i64,
    pub size: i64,
}

impl PageQuery {
    pub fn resolve(&self) -> Result<PageRequest, ApiError> {
        let page = match self.page.as_deref() {
            None | Some("") => 1,
            Some(p) => match p.parse::<i64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ApiError::Detail(
                        StatusCode::NOT_FOUND,
                        "Invalid page.".into(),
                    ))
                }
            },
        };
        let size = self
            .page_size
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|n| *n >= 1)
            .map_or(DEFAULT_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE));
        Ok(PageRequest { page, size })
    }
}

impl PageRequest {
    pub fn limit(&self) -> i64 {
        self.size
    }
    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.size)
    }
}

/// DRF's page envelope with absolute `next`/`previous` links.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Paginated<T> {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<T>,
}

/// `path` with the filters given (`None`s left out) as its query, for [`Paginated::new`]'s
/// links: a filtered list's next page is of the same list (found by review: the mail log's
/// `?status=failed` was dropped from its `next` link, which paged every mail).
pub fn with_filters(path: &str, filters: &[(&str, Option<&str>)]) -> String {
    let given: Vec<(&str, &str)> = filters
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    match serde_urlencoded::to_string(&given) {
        Ok(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

impl<T> Paginated<T> {
    /// `path` is the request path (the base URL is prepended), with the list's filters as
    /// its query when it has some (see [`with_filters`]): the links carry them.
    pub fn new(
        st: &AppState,
        path: &str,
        req: PageRequest,
        count: i64,
        results: Vec<T>,
    ) -> Result<Self, ApiError> {
        let last = ((count + req.size - 1) / req.size).max(1);
        if req.page > last {
            return Err(ApiError::Detail(
                StatusCode::NOT_FOUND,
                "Invalid page.".into(),
            ));
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let link = |p: i64| {
            format!(
                "{}{}{sep}page={}&page_size={}",
                st.public_base_url, path, p, req.size
            )
        };
        Ok(Paginated {
            count,
            next: (req.page < last).then(|| link(req.page + 1)),
            previous: (req.page > 1).then(|| link(req.page - 1)),
            results,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Quotas {
        instance_quota: Option<i64>,
        ratio: Option<f64>,
    }

    #[test]
    fn integral_floats_are_integers_and_others_are_not() {
        let q: Quotas = parse_json(br#"{"instance_quota": 534340971.0, "ratio": 2.0}"#).unwrap();
        assert_eq!(
            q,
            Quotas {
                instance_quota: Some(534_340_971),
                ratio: Some(2.0)
            }
        );
        assert!(parse_json::<Quotas>(br#"{"instance_quota": 1.5}"#).is_err());
        assert!(parse_json::<Quotas>(br#"{"instance_quota": 1e300}"#).is_err());
        assert_eq!(
            integral_numbers(json!({"a": [1.0, {"b": -3.0}], "c": 0.25})),
            json!({"a": [1, {"b": -3}], "c": 0.25})
        );
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Typed {
        flag: Option<bool>,
        name: Option<String>,
        names: Option<Vec<String>>,
        count: Option<i64>,
        required: Option<std::collections::BTreeMap<String, String>>,
        nested: Option<Quotas>,
        plain: Option<String>,
    }

    /// Serde's own messages, read through [`parse_json`], come out in DRF's words.
    #[test]
    fn wrong_types_are_answered_in_drf_words() {
        let field = |body: &str, name: &str| -> String {
            match parse_json::<Typed>(body.as_bytes()) {
                Err(ApiError::Service(ServiceError::Invalid(errors))) => {
                    errors[name][0].message.clone()
                }
                other => panic!("{body}: {other:?}"),
            }
        };
        assert_eq!(
            field(r#"{"flag": "false"}"#, "flag"),
            "Must be a valid boolean."
        );
        assert_eq!(field(r#"{"name": 123}"#, "name"), "Not a valid string.");
        assert_eq!(
            field(r#"{"names": "ns1.example.net"}"#, "names"),
            "Expected a list of items but got type \"str\"."
        );
        assert_eq!(
            field(r#"{"count": "7"}"#, "count"),
            "A valid integer is required."
        );
        assert_eq!(
            field(r#"{"required": [1]}"#, "required"),
            "Invalid data. Expected a dictionary, but got list."
        );
        assert_eq!(
            field(r#"{"nested": "x"}"#, "nested"),
            "Invalid data. Expected a dictionary, but got str."
        );
        assert_eq!(
            drf_words("invalid value: integer `-1`, expected u32"),
            "invalid value: integer `-1`, expected u32"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
        #[serde(default)]
        remember: bool,
        pricing: Option<Vec<Price>>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Price {
        cycle: String,
        price: i64,
    }

    /// `(field, message)` of every error `body` is refused with.
    fn refusals(body: &str) -> Vec<(String, String)> {
        match parse_json::<Login>(body.as_bytes()) {
            Err(ApiError::Service(ServiceError::Invalid(errors))) => errors
                .into_iter()
                .flat_map(|(k, v)| v.into_iter().map(move |e| (k.clone(), e.message)))
                .collect(),
            other => panic!("{body}: {other:?}"),
        }
    }

    /// Every bad field of a body is said at once, as Django REST framework says them, each
    /// once: missing ones, ill-typed ones (also inside a list), unknown ones.
    #[test]
    fn every_bad_field_is_said_at_once() {
        let required = "This field is required.".to_owned();
        assert_eq!(
            refusals("{}"),
            [
                ("email".to_owned(), required.clone()),
                ("password".to_owned(), required.clone())
            ]
        );
        let all = refusals(
            r#"{"email": 5, "remember": "yes", "zzz": 1,
                "pricing": [{"cycle": "monthly", "price": "x"}]}"#,
        );
        let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["email", "password", "pricing[0].price", "remember", "zzz"],
            "{all:?}"
        );
        assert_eq!(all[0].1, "Not a valid string.");
        assert_eq!(all[1].1, required);
        assert_eq!(all[2].1, "A valid integer is required.");
        assert!(all[4].1.starts_with("unknown field `zzz`"), "{all:?}");
        // A good body still reads, and one bad field alone is said alone.
        assert!(parse_json::<Login>(br#"{"email": "a", "password": "b"}"#).is_ok());
        assert_eq!(
            refusals(r#"{"email": "a", "password": null}"#),
            [(
                "password".to_owned(),
                "This field may not be null.".to_owned()
            )]
        );
    }
}

#[cfg(test)]
mod client_address_tests {
    use super::client_address;
    use axum::http::HeaderMap;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().expect("a header value"));
        }
        h
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_nobody_else_does() {
        let trusted: Vec<ipnet::IpNet> = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
            .iter()
            .map(|n| n.parse().expect("a net"))
            .collect();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("an address");
        let at = |peer: &str, xff: &[&str]| client_address(ip(peer), &headers(xff), &trusted);
        // Not behind a trusted proxy: the header is the client's own words.
        assert_eq!(at("198.51.100.1", &["203.0.113.5"]), ip("198.51.100.1"));
        // Behind one: the nearest untrusted address, through a chain of proxies.
        assert_eq!(at("127.0.0.1", &["203.0.113.5"]), ip("203.0.113.5"));
        assert_eq!(
            at("127.0.0.1", &["1.1.1.1, 203.0.113.5, 10.0.0.7"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            at("127.0.0.1", &["1.1.1.1", "203.0.113.5"]),
            ip("203.0.113.5")
        );
        assert_eq!(at("::1", &["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(at("127.0.0.1", &["203.0.113.5:8080"]), ip("203.0.113.5"));
        assert_eq!(at("::ffff:127.0.0.1", &["203.0.113.5"]), ip("203.0.113.5"));
        assert_eq!(
            at("::ffff:198.51.100.1", &["203.0.113.5"]),
            ip("198.51.100.1")
        );
        // No header, or garbage nearest: the last proxy known.
        assert_eq!(at("127.0.0.1", &[]), ip("127.0.0.1"));
        assert_eq!(at("127.0.0.1", &["203.0.113.5, unknown"]), ip("127.0.0.1"));
        assert_eq!(at("127.0.0.1", &["unknown, 10.0.0.7"]), ip("10.0.0.7"));
        // Only proxies: the farthest.
        assert_eq!(at("127.0.0.1", &["10.0.0.1, 10.0.0.2"]), ip("10.0.0.1"));
        // No proxy trusted: the peer, always.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&["203.0.113.5"]), &[]),
            ip("127.0.0.1")
        );
    }
}
