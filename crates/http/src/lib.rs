//! Lodge's HTTP layer. Each dialect translates its wire shapes and error style and calls the
//! same services: `/v1` (OnetSolutions-compatible, plus the staff API under `/v1/admin`),
//! `/apiv2` (InterServer-compatible), the hosted pages, and operations endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use lodge_services::Lodge;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

mod apiv2;
pub mod cached;
pub mod doc;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod limit;
pub mod login_guard;
pub mod metrics;
mod ops;
mod pages;
mod v1;
pub use v1::{staff_job, Job};
mod webhooks;
pub mod wire;

pub use limit::Limiter;
pub use metrics::Metrics;

/// What the HTTP layer needs besides the services.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Absolute base of links Lodge sends (`http://127.0.0.1:8080`), without a trailing slash.
    pub public_base_url: String,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Login throttling (independent of the rate limit).
    pub login: login_guard::LoginLimits,
    /// Who may read `/metrics` and whether the main listener serves it.
    pub metrics_access: metrics::MetricsAccess,
    /// The origins of web clients allowed to call `/apiv2` from a browser (CORS, with
    /// credentials) and to be sent back to after paying (`redirectUrl`), each
    /// `scheme://host[:port]`. Empty: none.
    pub cors_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client ([`extract::ClientIp`]).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub lodge: Lodge,
    pub public_base_url: Arc<str>,
    pub limiter: Limiter,
    /// The payment page's card steps (`/pay/{token}/card`, `…/return`), per payment token:
    /// each asks Stripe, and one link's holder must not spend the operator's Stripe rate
    /// limit (found by the payments audit: nothing limited them).
    pub card_limiter: Limiter,
    pub login_guard: login_guard::LoginGuard,
    pub metrics: Metrics,
    pub metrics_access: metrics::MetricsAccess,
    /// The `/apiv2` order form, rendered once per catalog version.
    pub order_form: Arc<apiv2::form::FormCache>,
    /// `/v1/hosting/plans` pages, rendered once per catalog version (by page and size).
    pub plan_pages: Arc<cached::VersionedCache<(i64, i64)>>,
    /// [`HttpConfig::cors_origins`], lowercased.
    pub client_origins: Arc<[String]>,
    /// [`HttpConfig::trusted_proxies`].
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// The key of the requests' digests kept with their `Idempotency-Key`
    /// ([`idempotency::request_hash`]), derived from the installation's secret key.
    pub request_digest_key: [u8; 32],
    /// The public login page's count of websites and when it was read (kept a minute: a
    /// public page does not count the whole hosting table on every hit; found by the
    /// big-database audit: 29 ms at 250,000 accounts on PostgreSQL).
    pub login_counts: Arc<std::sync::Mutex<Option<(std::time::Instant, i64)>>>,
    /// `/apiv2`'s unpaged lists, one at a time per organization.
    pub whole_lists: Arc<apiv2::WholeLists>,
}

impl AppState {
    pub fn new(lodge: Lodge, cfg: &HttpConfig) -> Result<Self, prometheus::Error> {
        let login_guard = login_guard::LoginGuard::new(cfg.login, lodge.store.clone());
        let request_digest_key = lodge.sealer.derive_key("lodge request digests");
        Ok(AppState {
            request_digest_key,
            lodge,
            public_base_url: cfg.public_base_url.trim_end_matches('/').into(),
            limiter: Limiter::new(cfg.rate_limit_per_minute, cfg.rate_limit_burst),
            card_limiter: Limiter::new(pages::CARD_STEPS_PER_MINUTE, pages::CARD_STEPS_BURST),
            login_guard,
            metrics: Metrics::new()?,
            metrics_access: cfg.metrics_access.clone(),
            order_form: Arc::default(),
            login_counts: Arc::default(),
            whole_lists: Arc::default(),
            plan_pages: Arc::default(),
            client_origins: cfg
                .cors_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
            trusted_proxies: cfg.trusted_proxies.clone().into(),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lodge",
        description = "An open-source server for companies that sell web hosting. `/v1` is compatible with OnetSolutions' API, `/apiv2` with InterServer's; `/v1/admin` is the staff API.",
        license(name = "AGPL-3.0-or-later")
    ),
    paths(ops::openapi_json, ops::docs),
    modifiers(&SecurityAddon),
    tags(
        (name = "organizations", description = "Organizations and projects (/v1)"),
        (name = "hosting", description = "The hosting catalog, orders, hosting accounts and domains (/v1)"),
        (name = "billing", description = "Invoices and account credit (/v1)"),
        (name = "apiv2", description = "InterServer-compatible website ordering (/apiv2)"),
        (name = "pages", description = "The hosted payment page (HTML, no login)"),
        (name = "gateways", description = "Webhooks from the payment gateway (Stripe)"),
        (name = "auth", description = "Login and API keys (/v1)"),
        (name = "admin", description = "Staff API (/v1/admin)"),
        (name = "operations", description = "Health, readiness, metrics, documentation"),
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (sk-lodge-…) or a JWT access token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-KEY"))),
        );
        // A login's `sessionId` (`POST /apiv2/login`), in the `sessionid` header: every
        // operation that takes an API key takes it instead (found by the generated-client
        // audit: a generated client could log in but not use the session). Not a cookie:
        // a browser sends cookies by itself, which would open the API to cross-site requests.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "sessionid",
                "The sessionId of POST /apiv2/login",
            ))),
        );
    }
}

/// Every route with its OpenAPI description, before state is attached.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::routes())
        .merge(v1::routes())
        .merge(apiv2::routes())
        .merge(pages::routes())
        .merge(webhooks::routes())
}

/// CORS for `/apiv2` from the configured client origins (`None` when there are none): a
/// preflight is answered, the dialect's methods and headers (`sessionid`, `X-API-KEY`,
/// `Content-Type`, `Idempotency-Key`) are allowed, and credentials too, for those origins
/// only. A request from any other origin, or to any other path, gets no CORS headers (the
/// browser refuses it).
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if list.is_empty() {
        return None;
    }
    let apiv2 = |path: &str| path == "/apiv2" || path.starts_with("/apiv2/");
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, parts| {
                apiv2(parts.uri.path()) && list.contains(origin)
            }))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                HeaderName::from_static("sessionid"),
                HeaderName::from_static("x-api-key"),
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .allow_credentials(true)
            .max_age(Duration::from_secs(600)),
    )
}

/// The OpenAPI document of every route (what `GET /openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().split_for_parts().1;
    doc::complete(&mut doc);
    doc
}

/// The span of a request, the access log's line (at `info`: the default filter's
/// `tower_http=info` shows it): its method and path, never its query string (search terms,
/// emails) nor a payment link's token, which is a bearer credential (found by the operator
/// audit: at `debug` every `/pay/<token>` was logged).
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %redacted_path(req.uri().path()),
    )
}

/// `path` with the token of a payment page (`/pay/<token>/…`) replaced by `…`: the segment
/// after any `pay` segment outside the APIs, however it is spelt (`/PAY/…`, `//pay/…`,
/// `/%70ay/…`: answered 404, but a token a proxy rewrote so is still a live one once
/// lower-cased; found by the attacker's audit).
fn redacted_path(path: &str) -> std::borrow::Cow<'_, str> {
    // An API path is not a page's, unless dot segments, an empty one or an escape could
    // make it resolve to one (`/v1/../pay/…`: found by review).
    let plain = !path.contains("/.") && !path.contains("//") && !path.contains('%');
    if plain && (path.starts_with("/v1/") || path.starts_with("/apiv2/")) {
        return std::borrow::Cow::Borrowed(path);
    }
    let is_pay = |segment: &str| {
        percent_encoding::percent_decode_str(segment)
            .decode_utf8_lossy()
            .eq_ignore_ascii_case("pay")
    };
    let segments: Vec<&str> = path.split('/').collect();
    if !segments.iter().any(|s| is_pay(s)) {
        return std::borrow::Cow::Borrowed(path);
    }
    // After a `pay` segment: the first is the token (but for the script's `assets`), and
    // of the others only the routes' own words are kept (`card`, `return`, `card.js`): a
    // token is never a short lowercase word. Empty and dot segments stay as they are.
    let word = |s: &str| {
        s.len() <= 16
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'-')
    };
    let mut out = Vec::with_capacity(segments.len());
    let mut after_pay = false;
    let mut token_seen = false;
    for s in segments {
        if after_pay && !s.is_empty() && s != "." && s != ".." {
            let keep = if token_seen { word(s) } else { s == "assets" };
            token_seen = true;
            out.push(if keep { s } else { "…" });
            continue;
        }
        if is_pay(s) {
            after_pay = true;
            token_seen = false;
        }
        out.push(s);
    }
    std::borrow::Cow::Owned(out.join("/"))
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.client_origins);
    let (routes, mut doc) = api().split_for_parts();
    doc::complete(&mut doc);
    let doc = Arc::new(doc);
    let app = routes
        .merge(ops::docs_router(doc))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::guard,
        ))
        .layer(axum::middleware::from_fn(doc::refuse_nul_in_path))
        .layer(CatchPanicLayer::custom(|_| {
            error::internal(&"a handler panicked")
        }))
        .fallback(ops::unknown_path)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // After the fallbacks, so that unknown paths and refused methods are read whole
        // and logged too (found by the re-audit: they never reached the access log).
        .layer(axum::middleware::from_fn(doc::read_body_first))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        // After the fallbacks, so that an unknown API path's answer is not stored either.
        .layer(axum::middleware::from_fn(doc::api_not_stored))
        // After the fallbacks, so that unknown paths under /pay get the pages' headers too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::security_headers,
        ))
        .with_state(state);
    // Around the whole application, so that a preflight is answered before routing (a
    // route's own layers do not see a method it has no handler for).
    match cors {
        Some(cors) => Router::new().fallback_service(app).layer(cors),
        None => app,
    }
}

/// Periodic housekeeping of the HTTP layer (rate limiter state).
pub fn spawn_housekeeping(state: &AppState) -> tokio::task::JoinHandle<()> {
    let (limiter, card_limiter) = (state.limiter.clone(), state.card_limiter.clone());
    let (guard, lodge) = (state.login_guard.clone(), state.lodge.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.shrink();
            card_limiter.shrink();
            if let Err(e) = guard.shrink(lodge.now_us()).await {
                tracing::warn!(error = %e, "quiet login counts could not be forgotten");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::redacted_path;

    #[test]
    fn a_payment_pages_token_never_reaches_the_access_log() {
        assert_eq!(redacted_path("/pay/abcDEF123"), "/pay/…");
        assert_eq!(redacted_path("/pay/abcDEF123/card"), "/pay/…/card");
        assert_eq!(redacted_path("/pay/abc/return"), "/pay/…/return");
        assert_eq!(redacted_path("/v1/hosting/plans"), "/v1/hosting/plans");
        // Spelt otherwise (each answered 404), the token is kept out all the same.
        assert_eq!(redacted_path("/PAY/ABC123"), "/PAY/…");
        assert_eq!(redacted_path("//pay/abc"), "//pay/…");
        assert_eq!(redacted_path("/./pay/abc/card"), "/./pay/…/card");
        assert_eq!(redacted_path("/%70ay/abc"), "/%70ay/…");
        assert_eq!(redacted_path("/pay//abc"), "/pay//…");
        assert_eq!(redacted_path("/x/pay/abc"), "/x/pay/…");
        assert_eq!(redacted_path("/pay"), "/pay");
        assert_eq!(redacted_path("/pay/assets/card.js"), "/pay/assets/card.js");
        // Dot segments and escapes: every segment that could be the token.
        assert_eq!(redacted_path("/v1/../pay/ABC123"), "/v1/../pay/…");
        assert_eq!(redacted_path("/pay/%2e/ABC123"), "/pay/…/…");
        assert_eq!(redacted_path("/pay/./ABC123/../x"), "/pay/./…/../x");
        assert_eq!(
            redacted_path("/apiv2/pay/prepay/12"),
            "/apiv2/pay/prepay/12"
        );
    }
}
