//! The answers every route can give besides its own, written into the OpenAPI document in
//! one place, so that the document lists every status a route answers (a client generated
//! from it, or a fuzzer checking conformance, meets no undocumented status) with the body
//! of each dialect's errors:
//!
//! - `/v1`: `{"detail": "…"}`, or field errors `{"field": ["…"]}` for a 400;
//! - `/apiv2`: InterServer's `{"code": "…", "message": "…"}`.
//!
//! What is added: 401 on a route that needs credentials, 429 (with `Retry-After`) where the
//! per-credential rate limit applies, 503 (with `Retry-After`) on every route of the two
//! dialects (the database, or a registrar, out for a moment), 404 for a bad page number on a paginated list, 400 on
//! a route with query or header parameters, 400 and 413 (the 1 MiB body limit) on a route
//! that takes a body, and 415 on a `/v1` route that
//! takes JSON; `Idempotency-Key` headers get the limits the server enforces, and the
//! success answers of their routes the `Idempotent-Replayed` header. A route's own
//! description of a status is kept; a bodiless error answer of a
//! dialect gets its dialect's error body.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr};

/// The header marking a replayed answer ([`crate::idempotency::respond`]), declared on the
/// success answers of every route taking an `Idempotency-Key`.
const REPLAYED: &str = "Idempotent-Replayed";

/// The largest request body any route reads ([`read_body_first`]).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a body over [`MAX_BODY_BYTES`] is refused.
pub const TOO_LARGE: &str = "The request body is larger than 1 MiB.";

/// The error of a request body that did not arrive in time (the server's body timeout):
/// [`read_body_first`] answers it `408` in the path's dialect, inside the access log's
/// layer, so the log says 408 as the client is told (found by the README audit: it said 400).
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Whether `e` or an error it wraps is [`BodyTimedOut`].
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads every request's body before it is answered, at most [`MAX_BODY_BYTES`] (a larger
/// one is a 413 in the path's dialect: the one place the limit is kept). An
/// answer given without reading it (a 401 or 403 before the handler's body extractor, a
/// 404 of an unknown path) otherwise left it unread on the connection, which was then
/// closed without `Connection: close`, and a client's next request on it failed (found by
/// the generated-client audit: 16 of 40 calls after a 401).
pub async fn read_body_first(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    if axum::body::HttpBody::size_hint(&body).exact() == Some(0) {
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let refuse = |status: StatusCode, msg: &str| {
        crate::error::in_dialect(parts.uri.path(), status, msg.into())
    };
    match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => {
            let body = axum::body::Body::from(collected.to_bytes());
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            refuse(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
        }
        Err(e) if timed_out(e.as_ref()) => {
            let mut r = refuse(
                StatusCode::REQUEST_TIMEOUT,
                "The request body did not arrive in time.",
            );
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            r
        }
        Err(_) => refuse(
            StatusCode::BAD_REQUEST,
            "The request body could not be read to its end.",
        ),
    }
}

/// A path with a NUL character (`%00`) is refused before routing, in the dialect's shape
/// (under `/pay`, an escape of any kind is the page of an unknown address):
/// no name Lodge keeps holds one, and PostgreSQL refuses it in a text parameter (found by
/// the input audit: a staff TLD path answered 500 there, 404 on SQLite).
pub async fn refuse_nul_in_path(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let path = req.uri().path();
    if crate::pages::is_page_path(path) && path.contains('%') {
        // No payment page's address has an escape (a token is letters and digits): a
        // mangled link (`%00`, or `%FF`, which is no UTF-8) is an unknown page.
        return crate::pages::unknown_page();
    }
    if !crate::extract::query_has_nul(Some(path)) {
        return next.run(req).await;
    }
    crate::error::in_dialect(
        path,
        StatusCode::BAD_REQUEST,
        crate::extract::NUL_REFUSED.to_owned(),
    )
}

/// `Cache-Control: no-store` on the API's answers that set none: an answer is the caller's
/// own (invoices, payment links with their token), whatever header carried the credentials
/// (`/apiv2`'s `X-API-KEY` is not one a shared cache knows to spare; found by the payments
/// audit). The catalog's answers set their own (revalidated with their ETag).
pub async fn api_not_stored(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let path = req.uri().path();
    let api = path.starts_with("/v1/") || path.starts_with("/apiv2/");
    let mut resp = next.run(req).await;
    if api && !resp.headers().contains_key(header::CACHE_CONTROL) {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

const V1_DETAIL: &str = "ErrorDetail";
const V1_FIELDS: &str = "FieldErrors";
const V1_BAD_REQUEST: &str = "BadRequest";
const V2_ERROR: &str = "V2ErrorBody";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V1,
    Apiv2,
    Other,
}

/// Completes `doc` as described in the module's documentation.
pub fn complete(doc: &mut OpenApi) {
    add_error_schemas(doc);
    refused_is_continue_false(doc);
    let optional_bodies = all_optional(doc);
    for (path, item) in doc.paths.paths.iter_mut() {
        let dialect = if path.starts_with("/v1/") {
            Dialect::V1
        } else if path.starts_with("/apiv2/") {
            Dialect::Apiv2
        } else {
            Dialect::Other
        };
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            if dialect == Dialect::V1 {
                body_optional_when_empty_is_valid(op, &optional_bodies);
            }
            if dialect == Dialect::Apiv2 {
                session_as_well_as_key(op);
            }
            complete_operation(op, dialect);
        }
    }
}

fn complete_operation(op: &mut Operation, dialect: Dialect) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let paginated = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name == "page" && matches!(p.parameter_in, ParameterIn::Query));
    // A query or header parameter that cannot be read is a 400 (an unusable
    // `Idempotency-Key`, a status filter that is not one, …).
    let read_params = op.parameters.iter().flatten().any(|p| {
        matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Header)
            && p.name != "page"
            && p.name != "page_size"
    });
    let keyed = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.name.eq_ignore_ascii_case("Idempotency-Key"));
    for p in op.parameters.iter_mut().flatten() {
        if p.name.eq_ignore_ascii_case("Idempotency-Key") {
            p.schema = Some(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255))
                    // Printable ASCII, no space at either end (it would be trimmed),
                    // no comma (two keys joined by a proxy).
                    .pattern(Some(r"^[!-+\x2D-~]([ -+\x2D-~]*[!-+\x2D-~])?$"))
                    .build(),
            )));
        }
    }
    let body = op.request_body.is_some();
    let json_body = op.request_body.as_ref().is_some_and(takes_json);
    let answers = &mut op.responses.responses;
    let mut add = |status: &str, description: &str| {
        answers
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    };
    if dialect != Dialect::Other && secured {
        add("401", "Missing or invalid credentials");
        add(
            "429",
            "Too many requests for this credential; `Retry-After` says when to try again",
        );
    }
    if paginated {
        add(
            "404",
            "Invalid page (past the last one, or not a positive number)",
        );
    }
    if read_params && !body {
        add("400", "An invalid query or header parameter");
    }
    if body {
        add("400", "A malformed or invalid body");
        add("413", "The body is larger than 1 MiB");
    }
    if dialect == Dialect::V1 && json_body {
        add("415", "The body is declared as something other than JSON");
    }
    if dialect != Dialect::Other {
        add(
            "503",
            "The database, or the registrar a domain check needs, cannot answer at the moment; nothing was done, and `Retry-After` says when to try again",
        );
    }
    for (status, answer) in answers.iter_mut() {
        let RefOr::T(answer) = answer else { continue };
        if keyed && status.starts_with('2') && !answer.headers.contains_key(REPLAYED) {
            answer.headers.insert(
                REPLAYED.into(),
                HeaderBuilder::new()
                    .schema(Schema::Object(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["true"]))
                            .build(),
                    ))
                    .description(Some(
                        "`true` when this is the answer first given to an earlier request with \
                         the same Idempotency-Key, replayed (nothing was done again); absent \
                         otherwise",
                    ))
                    .build(),
            );
        }
        if (status == "429" || status == "503") && !answer.headers.contains_key("Retry-After") {
            answer.headers.insert(
                "Retry-After".into(),
                HeaderBuilder::new()
                    .schema(Schema::Object(
                        ObjectBuilder::new().schema_type(Type::Integer).build(),
                    ))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            );
        }
        if !(status.starts_with('4') || status == "503") || !answer.content.is_empty() {
            continue;
        }
        let schema = match dialect {
            Dialect::V1 if status == "400" => V1_BAD_REQUEST,
            Dialect::V1 => V1_DETAIL,
            Dialect::Apiv2 => V2_ERROR,
            Dialect::Other => continue,
        };
        with_json_body(answer, schema);
    }
}

/// The component schemas that are objects with no required property (`{}` is one).
fn all_optional(doc: &OpenApi) -> Vec<String> {
    doc.components
        .iter()
        .flat_map(|c| c.schemas.iter())
        .filter(|(_, s)| match s {
            RefOr::T(Schema::Object(o)) => o.required.is_empty(),
            _ => false,
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// `/v1` reads a missing body as `{}` (as Django REST framework does), so a body whose
/// every field is optional may be left out: the document says so.
fn body_optional_when_empty_is_valid(op: &mut Operation, optional: &[String]) {
    let Some(body) = op.request_body.as_mut() else {
        return;
    };
    let every_type_optional = !body.content.is_empty()
        && body.content.values().all(|c| match &c.schema {
            Some(RefOr::Ref(r)) => r
                .ref_location
                .strip_prefix("#/components/schemas/")
                .is_some_and(|name| optional.iter().any(|o| o == name)),
            _ => false,
        });
    if every_type_optional {
        body.required = Some(utoipa::openapi::Required::False);
    }
}

fn takes_json(body: &RequestBody) -> bool {
    body.content.keys().any(|c| c.contains("json"))
}

fn with_json_body(answer: &mut Response, schema: &str) {
    answer.content.insert(
        "application/json".into(),
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build(),
    );
}

fn add_error_schemas(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let text = || ObjectBuilder::new().schema_type(Type::String);
    components.schemas.insert(
        V1_DETAIL.into(),
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .description(Some("An error of `/v1`"))
                .property("detail", text())
                .required("detail")
                .build(),
        )),
    );
    components.schemas.insert(
        V1_FIELDS.into(),
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .description(Some(
                    "Field errors of `/v1`: each bad field with its messages (`non_field_errors` for the body as a whole)",
                ))
                .additional_properties(Some(Schema::Array(
                    ArrayBuilder::new().items(text()).build(),
                )))
                .build(),
        )),
    );
    components.schemas.insert(
        V1_BAD_REQUEST.into(),
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(Ref::from_schema_name(V1_DETAIL))
                .item(Ref::from_schema_name(V1_FIELDS))
                .build(),
        )),
    );
}

/// `Refused` (an `/apiv2` order refused) says `continue: false` in its schema: an accepted
/// quote or order also has `continue` and `errors`, so it matched both branches of the
/// answers' `oneOf`, which strict validators and generators refuse (found by the
/// generated-client audit).
fn refused_is_continue_false(doc: &mut OpenApi) {
    use utoipa::openapi::{RefOr, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(refused))) = components.schemas.get_mut("Refused") {
        if let Some(RefOr::T(Schema::Object(proceed))) = refused.properties.get_mut("continue") {
            proceed.enum_values = Some(vec![serde_json::Value::Bool(false)]);
        }
    }
}

/// An `/apiv2` operation that takes an API key takes a login's session instead (each is a
/// security requirement of its own: either one).
fn session_as_well_as_key(op: &mut Operation) {
    use utoipa::openapi::security::SecurityRequirement;
    let Some(security) = op.security.as_mut() else {
        return;
    };
    // (A requirement's scheme names are private: read from its JSON.)
    let named = serde_json::to_string(&*security).unwrap_or_default();
    if named.contains("\"api_key\"") && !named.contains("\"session\"") {
        security.push(SecurityRequirement::new("session", Vec::<String>::new()));
    }
}
