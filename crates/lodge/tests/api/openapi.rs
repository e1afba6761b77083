//! The OpenAPI document, pinned: `tests/snapshots/openapi.json` is the document the handlers
//! generate (keys sorted, pretty-printed), so that a change to the API's description shows in
//! review. When it changes on purpose, accept it with
//!
//! ```sh
//! LODGE_UPDATE_SNAPSHOTS=1 cargo test -p lodge --test api openapi
//! ```
//!
//! Router and document cannot drift apart either: every route in [`ROUTES`] (which
//! `ops::openapi_documents_exactly_the_served_routes` probes on a running server) is in the
//! document and the document has no other, every route the HTTP crate adds outside the
//! documented router is in the table, and the server serves exactly the snapshot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::TestApp;
use crate::on_both_engines;
use crate::ops::ROUTES;

on_both_engines!(
    the_served_document_is_the_snapshot,
    a_body_over_the_limit_is_refused_in_each_dialects_shape,
);

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");
const UPDATE: &str = "LODGE_UPDATE_SNAPSHOTS";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `v` with every object's keys in sorted order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The document as the HTTP crate generates it, keys sorted.
fn generated() -> Value {
    sorted(serde_json::to_value(lodge_http::openapi()).expect("the document serializes"))
}

/// The snapshot file's text for a document.
fn render(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("pretty JSON");
    text.push('\n');
    text
}

/// The snapshot as stored, or a panic saying how to make it.
fn stored() -> (String, Value) {
    let text = std::fs::read_to_string(SNAPSHOT).unwrap_or_else(|e| {
        panic!("cannot read {SNAPSHOT} ({e}); create it with {UPDATE}=1 cargo test -p lodge --test api openapi")
    });
    let doc = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{SNAPSHOT} is not JSON ({e}); rewrite it with {UPDATE}=1"));
    (text, doc)
}

/// `a/b` as a JSON pointer segment.
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 100 {
        format!("{}…", s.chars().take(100).collect::<String>())
    } else {
        s
    }
}

/// Where `new` differs from `old`, as JSON pointers (`+` added, `-` removed, `~` changed).
fn differences(at: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let here = format!("{at}/{}", pointer_segment(k));
                match b.get(k) {
                    Some(vb) => differences(&here, va, vb, out),
                    None => out.push(format!("- {here}: {}", short(va))),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(format!("+ {at}/{}: {}", pointer_segment(k), short(vb)));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                differences(&format!("{at}/{i}"), va, vb, out);
            }
        }
        _ if old != new => out.push(format!("~ {at}: {} → {}", short(old), short(new))),
        _ => {}
    }
}

/// A readable account of how `actual` differs from the snapshot.
fn drift_report(what: &str, snapshot: &Value, actual: &Value) -> String {
    let mut diffs = vec![];
    differences("", snapshot, actual, &mut diffs);
    let total = diffs.len();
    diffs.truncate(40);
    let more = if total > diffs.len() {
        format!("\n  … and {} more", total - diffs.len())
    } else {
        String::new()
    };
    format!(
        "{what} differs from {SNAPSHOT} in {total} place(s) (- only in the snapshot, + only in the document, ~ changed):\n  {}{more}\n\
         If the change is intended, accept it with `{UPDATE}=1 cargo test -p lodge --test api openapi` and commit the snapshot.",
        diffs.join("\n  ")
    )
}

/// `(METHOD, path)` of every operation in a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths in the document"))
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The document the handlers generate is the snapshot (rewritten instead under
/// `LODGE_UPDATE_SNAPSHOTS=1`).
#[test]
fn openapi_document_matches_its_snapshot() {
    let doc = generated();
    let text = render(&doc);
    if std::env::var_os(UPDATE).is_some_and(|v| v == "1") {
        let path = Path::new(SNAPSHOT);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("snapshot dir");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &text).expect("write the snapshot");
        std::fs::rename(&tmp, path).expect("replace the snapshot");
        eprintln!("{UPDATE}=1: wrote {SNAPSHOT}");
        return;
    }
    let (stored_text, snapshot) = stored();
    if snapshot != doc {
        panic!(
            "{}",
            drift_report("The generated OpenAPI document", &snapshot, &doc)
        );
    }
    assert_eq!(
        stored_text, text,
        "{SNAPSHOT} holds the same document but is not in its canonical form (sorted keys, \
         pretty-printed); rewrite it with {UPDATE}=1"
    );
}

/// The routes table and the document list the same operations.
#[test]
fn every_route_in_the_table_is_documented_and_no_other() {
    let documented = operations(&generated());
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "no duplicates in ops::ROUTES");
    let undocumented: Vec<_> = table.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed (ops::ROUTES) but missing from the OpenAPI document: {undocumented:?}"
    );
    let untabled: Vec<_> = documented.difference(&table).collect();
    assert!(
        untabled.is_empty(),
        "documented but not in ops::ROUTES (add them there): {untabled:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Routes the HTTP crate adds with plain axum (`.route("…", …)`, `.nest("…", …)`,
/// `.route_service("…", …)`) bypass the documented router (`routes!` registers a handler
/// with its `#[utoipa::path]`): each must still be a documented route, or the Swagger UI.
#[test]
fn routes_added_outside_the_documented_router_are_in_the_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../http/src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    let tabled: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    let mut found = vec![];
    let mut missing = vec![];
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source");
        for call in [".route(", ".nest(", ".route_service(", ".nest_service("] {
            for (at, _) in text.match_indices(call) {
                let rest = text[at + call.len()..].trim_start();
                let Some(lit) = rest.strip_prefix('"') else {
                    continue;
                };
                let path = &lit[..lit.find('"').expect("a closed string")];
                found.push(path.to_owned());
                if !tabled.contains(path) && !path.starts_with("/docs") {
                    missing.push(format!("{}: {path}", file.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes added outside the documented router but not in ops::ROUTES \
         (document them with #[utoipa::path] and routes!, then add them to ROUTES): {missing:?}"
    );
    assert!(
        found.iter().any(|p| p == "/openapi.json"),
        "the scan finds the one plain route there is (/openapi.json): {found:?}"
    );
}

/// What `GET /openapi.json` serves is the snapshot.
async fn the_served_document_is_the_snapshot(app: TestApp) {
    let (status, served) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "{served}");
    let served = sorted(served);
    let (_, snapshot) = stored();
    if served != snapshot {
        panic!("{}", drift_report("GET /openapi.json", &snapshot, &served));
    }
    app.stop().await;
}

/// The differences are named by JSON pointer, each kind of change with its sign.
#[test]
fn drift_is_reported_by_json_pointer() {
    let old: Value = serde_json::json!({ "paths": { "/a/{id}": { "get": { "x": 1 } } },
                                         "keep": [1, 2], "gone": true });
    let new: Value = serde_json::json!({ "paths": { "/a/{id}": { "get": { "x": 2 } } },
                                         "keep": [1, 2], "new": "yes" });
    let mut out = vec![];
    differences("", &old, &new, &mut out);
    out.sort();
    assert_eq!(
        out,
        [
            "+ /new: \"yes\"",
            "- /gone: true",
            "~ /paths/~1a~1{id}/get/x: 1 → 2",
        ]
    );
}

/// Issue 18: the document lists the answers every route can give besides its own, each
/// error with its dialect's body.
#[test]
fn every_route_documents_its_common_answers_with_the_dialects_error_bodies() {
    let doc = generated();
    let mut missing = vec![];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let at = format!("{} {path}", method.to_uppercase());
            let answers = op["responses"].as_object().expect("responses");
            let has = |s: &str| answers.contains_key(s);
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let dialect = path.starts_with("/v1/") || path.starts_with("/apiv2/");
            let mut want: Vec<&str> = vec![];
            if secured && dialect {
                want.extend(["401", "429"]);
            }
            if op.get("requestBody").is_some() {
                want.extend(["400", "413"]);
                if path.starts_with("/v1/") {
                    want.push("415");
                }
            }
            let paginated = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "page" && p["in"] == "query"));
            if paginated {
                want.push("404");
            }
            for s in want {
                if !has(s) {
                    missing.push(format!("{at}: {s}"));
                }
            }
            for (status, answer) in answers {
                if !status.starts_with('4') || !dialect {
                    continue;
                }
                let schema = answer["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap_or("");
                let expected: &[&str] = if path.starts_with("/apiv2/") {
                    &[
                        "#/components/schemas/V2ErrorBody",
                        "#/components/schemas/LoginRefused",
                    ]
                } else if status == "400" {
                    &["#/components/schemas/BadRequest"]
                } else {
                    &["#/components/schemas/ErrorDetail"]
                };
                if !expected.contains(&schema) {
                    missing.push(format!("{at}: {status} body {schema:?}"));
                }
            }
            if let Some(tmr) = answers.get("429") {
                if tmr["headers"].get("Retry-After").is_none() {
                    missing.push(format!("{at}: 429 without Retry-After"));
                }
            }
            // A route that replays under an Idempotency-Key says how a replay is marked.
            let keyed = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["in"] == "header"
                        && p["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case("Idempotency-Key"))
                })
            });
            for (status, answer) in answers {
                if keyed
                    && status.starts_with('2')
                    && answer["headers"].get("Idempotent-Replayed").is_none()
                {
                    missing.push(format!("{at}: {status} without Idempotent-Replayed"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

/// Sends a request whose body the server refuses by its declared length. The server
/// answers without reading the body and closes the connection; a client still sending may
/// see the close before the answer (hyper: IncompleteMessage). That race is the
/// transport's, not the refusal's: it tries again a few times, as a client would.
async fn send_refused(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    let mut last = None;
    for _ in 0..5 {
        match request().send().await {
            Ok(r) => return r,
            Err(e) => last = Some(e),
        }
    }
    panic!("never answered: {last:?}");
}

async fn a_body_over_the_limit_is_refused_in_each_dialects_shape(app: TestApp) {
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let path = format!("/v1/organizations/{}/projects", app.org_id());
    let before = app.count("projects").await;
    let resp = send_refused(|| {
        app.client
            .post(app.url(&path))
            .bearer_auth(app.key())
            .header("Content-Type", "application/json")
            .body(big.clone())
    })
    .await;
    assert_eq!(resp.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.expect("a JSON body");
    assert!(body["detail"].as_str().is_some(), "{body}");
    assert_eq!(app.count("projects").await, before);
    let resp = send_refused(|| {
        app.client
            .post(app.url("/apiv2/websites/order"))
            .header("X-API-KEY", app.key())
            .header("Content-Type", "application/json")
            .body(big.clone())
    })
    .await;
    assert_eq!(resp.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.expect("a JSON body");
    assert_eq!(body["code"], "413", "{body}");
    app.stop().await;
}

/// What generated clients need of the document (found by the generated-client audit):
/// every `operationId` once (generators name methods by it), an `/apiv2` order's refusal
/// told apart from its success (`Refused` says `continue: false`, so an answer matches
/// one branch of the `oneOf`), a login's session, and a webhook's required fields.
#[test]
fn generated_clients_can_tell_operations_and_answers_apart() {
    let doc = generated();
    let mut seen = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                assert!(
                    seen.insert(id.to_owned()),
                    "{method} {path}: operationId {id} twice"
                );
            }
        }
    }
    let refused = &doc["components"]["schemas"]["Refused"];
    assert_eq!(
        refused["properties"]["continue"]["enum"],
        serde_json::json!([false]),
        "{refused}"
    );
    // A login's session works wherever an API key does, and the document says so.
    let security = doc["paths"]["/apiv2/websites"]["get"]["security"].to_string();
    assert!(
        security.contains("api_key") && security.contains("session"),
        "{security}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        "sessionid"
    );
    let required = doc["components"]["schemas"]["WebhookSpec"]["required"].to_string();
    assert!(
        required.contains("url") && required.contains("events"),
        "{required}"
    );
}
