//! Prometheus metrics of one node, served at `GET /metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use sha2::{Digest, Sha256};

use crate::AppState;

#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// The installation's job queue, read at each scrape (found by the operator audit: a
    /// dead provisioning job, a paid customer without hosting, showed only in a log line).
    jobs: IntGaugeVec,
    oldest_due: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("lodge".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )?;
        let jobs = IntGaugeVec::new(
            Opts::new(
                "jobs",
                "Jobs of the whole installation by status (queued: due or not; dead: out of attempts, see /v1/admin/jobs)",
            ),
            &["status"],
        )?;
        let oldest_due = IntGauge::new(
            "jobs_oldest_due_seconds",
            "How long the oldest due queued job has waited (0: none waits)",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(oldest_due.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            jobs,
            oldest_due,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Counts and times every request by its route template (not its concrete path).
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    st.metrics
        .requests
        .with_label_values(&[&method, &route, &status])
        .inc();
    st.metrics
        .latency
        .with_label_values(&[&method, &route])
        .observe(start.elapsed().as_secs_f64());
    resp.into_response()
}

/// Who may read `/metrics`, and where it is served.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccess {
    /// SHA-256 of the bearer token `/metrics` requires (`None`: open). The token itself is
    /// not kept.
    pub token_digest: Option<[u8; 32]>,
    /// `false` when `/metrics` has a listener of its own: the main one answers 404.
    pub on_main_listener: bool,
}

impl MetricsAccess {
    /// Open, on the main listener (no token, no address of its own).
    pub fn open() -> Self {
        MetricsAccess {
            token_digest: None,
            on_main_listener: true,
        }
    }

    /// Keeps only the digest of `token`.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token_digest = token.map(digest);
        self
    }

    /// Whether `authorization` (the header's value) carries the token, compared in
    /// constant time (of digests: the comparison does not depend on where they differ).
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(want) = &self.token_digest else {
            return true;
        };
        let Some(given) = authorization.and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        }) else {
            return false;
        };
        let got = digest(given.trim());
        want.iter()
            .zip(got.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `GET /metrics` on the main listener: 404 when it has its own listener, 401 without the
/// token when one is configured. Without a token it answers only clients on this machine
/// (loopback, the client as the trusted proxies name it): 404 to the others, so that an
/// installation's volumes (requests, jobs, mail) are not the world's by default. Other
/// paths pass through.
pub async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() != "/metrics" {
        return next.run(req).await;
    }
    if !st.metrics_access.on_main_listener {
        return crate::ops::not_found().await;
    }
    if st.metrics_access.token_digest.is_none() {
        let client = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| crate::extract::client_address(c.0.ip(), req.headers(), &st.trusted_proxies));
        if !client.is_some_and(|c| c.is_loopback()) {
            // Said once, so that a scraper elsewhere that gets 404 after an upgrade finds why.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    client = ?client,
                    "/metrics refused to a client not on loopback: without --metrics-token it \
                     answers loopback only (set a token, or --metrics-listen)"
                );
            }
            return crate::ops::not_found().await;
        }
    }
    check_token(&st, req, next).await
}

async fn check_token(st: &AppState, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if st.metrics_access.allows(auth) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
        "401 Unauthorized: /metrics requires its bearer token\n",
    )
        .into_response()
}

async fn metrics_only_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    check_token(&st, req, next).await
}

/// The metrics, the job queue's read now.
pub(crate) async fn render_metrics(State(st): State<AppState>) -> Response {
    // The queue is read at most 2 s: a database away leaves the last values (and says so).
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        st.lodge.job_queue_stats(),
    )
    .await
    {
        Ok(Ok(q)) => {
            for (status, n) in [
                ("queued", q.queued),
                ("running", q.running),
                ("dead", q.dead),
            ] {
                st.metrics.jobs.with_label_values(&[status]).set(n);
            }
            let now = st.lodge.now_us();
            st.metrics.oldest_due.set(
                q.oldest_due
                    .map_or(0, |due| now.saturating_sub(due).max(0) / 1_000_000),
            );
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: the job queue could not be read"),
        Err(_) => tracing::warn!("metrics: reading the job queue took over 2 s"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

/// The router of a `/metrics`-only listener (`--metrics-listen`): the same metrics and
/// token, nothing else.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(render_metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics_only_guard,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_checked_by_digest() {
        assert!(MetricsAccess::open().allows(None));
        let a = MetricsAccess::open().with_token(Some("s3cret"));
        assert!(a.allows(Some("Bearer s3cret")));
        assert!(!a.allows(Some("Bearer s3cre")));
        assert!(!a.allows(Some("s3cret")));
        assert!(!a.allows(None));
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
