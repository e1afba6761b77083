//! Operations: health, readiness, metrics, the OpenAPI document and its docs page.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The docs page itself: Swagger UI's own `index.html` (the same assets, vendored in the
/// binary), with a title naming Lodge's API rather than "Swagger UI" (a browser tab or a
/// bookmark among others) and a viewport, so that a phone shows it at its width rather than
/// as a shrunken desktop page (found by the accessibility audit).
const DOCS_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Lodge API documentation</title>
    <link rel="stylesheet" type="text/css" href="./swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="index.css" />
    <link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32" />
    <link rel="icon" type="image/png" href="./favicon-16x16.png" sizes="16x16" />
  </head>

  <body>
    <div id="swagger-ui"></div>
    <script src="./swagger-ui-bundle.js" charset="UTF-8"> </script>
    <script src="./swagger-ui-standalone-preset.js" charset="UTF-8"> </script>
    <script src="./swagger-initializer.js" charset="UTF-8"> </script>
  </body>
</html>
"#;

/// [`DOCS_PAGE`], answered.
fn docs_page() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DOCS_PAGE,
    )
        .into_response()
}

/// `/openapi.json` and the Swagger UI at `/docs` (assets vendored in the binary).
pub fn docs_router(doc: Arc<utoipa::openapi::OpenApi>) -> Router<AppState> {
    use axum::extract::Path;
    use axum::routing::get;
    let config = Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"));
    // Swagger UI's other files, as its own router serves them.
    let asset = move |Path(file): Path<String>| {
        let config = config.clone();
        async move {
            // The index by any spelling (`/docs/index.html`, `/docs//`,
            // `/docs/index%2ehtml`): Lodge's own page, never Swagger UI's (found by the
            // re-check).
            let name = file.trim_start_matches('/');
            if name.is_empty() || name == "index.html" {
                return docs_page();
            }
            // Its error made a string at once: a boxed error is not `Send`.
            let served = utoipa_swagger_ui::serve(&file, config).map_err(|e| e.to_string());
            match served {
                Ok(Some(file)) => (
                    [(axum::http::header::CONTENT_TYPE, file.content_type)],
                    file.bytes.into_owned(),
                )
                    .into_response(),
                Ok(None) => not_found().await,
                Err(e) => {
                    tracing::error!(error = %e, "serving a docs asset failed");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
    };
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route(
            "/docs",
            get(|| async { axum::response::Redirect::to("/docs/") }),
        )
        .route("/docs/", get(|| async { docs_page() }))
        .route("/docs/{*file}", get(asset))
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers (and on SQLite its file is still the one opened).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Health),
              (status = 503, description = "The database does not answer, or its SQLite file is no longer the one opened", body = Health)))]
async fn readyz(State(st): State<AppState>) -> Response {
    // Answered within two seconds either way: a load balancer's probe (2–5 s) must see 503,
    // not a timeout, while the database does not answer (found by the multi-node audit:
    // it waited out the pool's acquire timeout).
    let ready = tokio::time::timeout(std::time::Duration::from_secs(2), st.lodge.ready())
        .await
        .unwrap_or_else(|_| {
            Err(lodge_services::ServiceError::Internal(
                "the database did not answer within 2 s".into(),
            ))
        });
    match ready {
        Ok(()) => Json(Health { status: "ok" }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String),
              (status = 401, description = "`--metrics-token` is set and the request does not carry it as `Authorization: Bearer …` (with `WWW-Authenticate`)", content_type = "text/plain", body = String),
              (status = 404, description = "Not served here: `--metrics-listen` gives `/metrics` a listener of its own, or, without a token, the client is not on loopback")))]
async fn metrics(state: State<AppState>) -> Response {
    crate::metrics::render_metrics(state).await
}

/// This OpenAPI document. (Documented here; served by the docs router.)
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
#[allow(dead_code)]
pub(crate) async fn openapi_json() {}

/// Interactive API documentation (Swagger UI, served without internet access, at
/// `/docs/`; `/docs` redirects there).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML page (at `/docs/`)", content_type = "text/html"),
              (status = 303, description = "To `/docs/`, the page itself")))]
#[allow(dead_code)]
pub(crate) async fn docs() {}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "detail": "Not found." })),
    )
        .into_response()
}

/// The router's answer to an unknown path: `404` in the dialect of its prefix (InterServer's
/// `{"code", "message"}` under `/apiv2/`, `{"detail"}` elsewhere), and a page under `/pay`,
/// where the customer came in a browser (found by the accessibility audit: a mistyped or
/// cut payment link showed JSON).
pub async fn unknown_path(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/apiv2/") {
        return crate::apiv2::V2Error::not_found().into_response();
    }
    if crate::pages::is_page_path(uri.path()) {
        // A payment link with a slash added (by a mail client, or by hand): its page.
        if let Some(page) = uri
            .path()
            .strip_suffix('/')
            .filter(|p| p.len() > "/pay/".len() && !p.ends_with('/'))
        {
            return axum::response::Redirect::permanent(page).into_response();
        }
        return crate::pages::unknown_page();
    }
    not_found().await
}

/// A known path with another method: `405` in the path's dialect (axum keeps the `Allow`
/// header), a page under `/pay`.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    if crate::pages::is_page_path(uri.path()) {
        return crate::pages::method_page();
    }
    crate::error::in_dialect(
        uri.path(),
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method \"{method}\" not allowed."),
    )
}
