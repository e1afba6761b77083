//! `GET|PUT|POST /apiv2/websites/order`: the order form (precomputed per catalog version),
//! the quote, and placing the order through the same service as `/v1`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::Currency;
use lodge_services::catalog::{Catalog, Plan};
use lodge_services::orders::{DbChecks, ValidOrder};
use lodge_services::websites::WebsiteOrder;
use lodge_services::{FieldCode, FieldError, FieldErrors, ServiceError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{flag, Authenticated, Customer, V2Error};
use crate::cached::Rendered;
use crate::extract::IdempotencyKey;
use crate::idempotency;
use crate::wire::{money_number_compact, money_str, ts};
use crate::AppState;

// ---- the order form ----

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceRow {
    pub services_id: String,
    pub services_name: String,
    pub services_cost: String,
    pub services_category: String,
    pub services_buyable: String,
    pub services_type: String,
    pub services_field1: String,
    pub services_field2: String,
    pub services_module: String,
    pub services_html: String,
    pub services_description: String,
    pub services_moreinfo_url: String,
    pub services_hidden: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JsonServiceOffer {
    pub service_offer_id: String,
    pub service_id: String,
    #[schema(value_type = f64)]
    pub intro_cost: Box<serde_json::value::RawValue>,
    #[schema(value_type = f64)]
    pub renewal_cost: Box<serde_json::value::RawValue>,
    pub intro_frequency: String,
    pub renewal_frequency: String,
    pub allow_coupon: String,
    pub service_module: String,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: String,
    #[serde(rename = "currencySymbol")]
    pub currency_symbol: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceOffer {
    pub service_offer_id: String,
    pub service_id: String,
    pub intro_cost: String,
    pub renewal_cost: String,
    pub intro_frequency: String,
    pub renewal_frequency: String,
    pub allow_coupon: String,
    pub service_module: String,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: String,
}

/// InterServer's `WebsitesOrder`: every buyable plan in every map, keyed by `services_id`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsitesOrder {
    pub step: String,
    pub website: String,
    pub period: i64,
    pub service_offer_id: i64,
    pub packages: BTreeMap<String, String>,
    pub enable_domain_registering: bool,
    pub json_services: BTreeMap<String, String>,
    pub json_service_offers: BTreeMap<String, Vec<JsonServiceOffer>>,
    pub service_types: BTreeMap<String, ServiceRow>,
    pub service_offers: BTreeMap<String, Vec<ServiceOffer>>,
    /// Sic: InterServer's clients read this spelling.
    #[serde(rename = "packges")]
    pub packges: BTreeMap<String, ServiceRow>,
    pub currency_symbol: String,
}

fn monthly_cost(p: &Plan) -> i64 {
    p.monthly()
        .or_else(|| p.prices.iter().find(|x| x.is_default))
        .or_else(|| p.prices.first())
        .map_or(0, |x| x.price.minor())
}

fn service_row(p: &Plan, cur: Currency) -> ServiceRow {
    let r = &p.row;
    ServiceRow {
        services_id: r.legacy_id.to_string(),
        services_name: r.name.clone(),
        services_cost: money_str(monthly_cost(p), cur),
        services_category: r.category.clone(),
        services_buyable: flag(r.buyable == 1),
        services_type: r.type_id.clone(),
        services_field1: r.field1.clone(),
        services_field2: r.field2.clone(),
        services_module: "webhosting".into(),
        services_html: r.html.clone(),
        services_description: r.description.clone(),
        services_moreinfo_url: r.moreinfo_url.clone(),
        services_hidden: flag(r.hidden == 1),
    }
}

/// Builds the order form from a catalog.
pub fn build_order_form(c: &Catalog, domain_registering: bool) -> WebsitesOrder {
    let cur = c.currency;
    let mut f = WebsitesOrder {
        step: "order_form".into(),
        website: String::new(),
        period: 1,
        service_offer_id: 0,
        packages: BTreeMap::new(),
        enable_domain_registering: domain_registering,
        json_services: BTreeMap::new(),
        json_service_offers: BTreeMap::new(),
        service_types: BTreeMap::new(),
        service_offers: BTreeMap::new(),
        packges: BTreeMap::new(),
        currency_symbol: cur.symbol().to_owned(),
    };
    for p in c.plans.iter().filter(|p| p.orderable()) {
        let id = p.row.legacy_id.to_string();
        f.packages.insert(id.clone(), p.row.name.clone());
        f.json_services
            .insert(id.clone(), money_str(monthly_cost(p), cur));
        f.service_types.insert(id.clone(), service_row(p, cur));
        f.packges.insert(id.clone(), service_row(p, cur));
        let offers: Vec<_> = c.offers_for(p.row.id).collect();
        f.json_service_offers.insert(
            id.clone(),
            offers
                .iter()
                .map(|o| JsonServiceOffer {
                    service_offer_id: o.legacy_id.to_string(),
                    service_id: id.clone(),
                    intro_cost: money_number_compact(o.intro_total_minor, cur),
                    renewal_cost: money_number_compact(o.renewal_minor, cur),
                    intro_frequency: o.intro_months.to_string(),
                    renewal_frequency: o.renewal_months.to_string(),
                    allow_coupon: flag(o.allow_coupon == 1),
                    service_module: "webhosting".into(),
                    created_at: ts(o.created_at),
                    updated_at: ts(o.modified_at),
                    deleted_at: o.deleted_at.map(ts).unwrap_or_default(),
                    currency_symbol: cur.symbol().to_owned(),
                })
                .collect(),
        );
        f.service_offers.insert(
            id.clone(),
            offers
                .iter()
                .map(|o| ServiceOffer {
                    service_offer_id: o.legacy_id.to_string(),
                    service_id: id.clone(),
                    intro_cost: money_str(o.intro_total_minor, cur),
                    renewal_cost: money_str(o.renewal_minor, cur),
                    intro_frequency: o.intro_months.to_string(),
                    renewal_frequency: o.renewal_months.to_string(),
                    allow_coupon: flag(o.allow_coupon == 1),
                    service_module: "webhosting".into(),
                    created_at: ts(o.created_at),
                    updated_at: ts(o.modified_at),
                    deleted_at: o.deleted_at.map(ts).unwrap_or_default(),
                })
                .collect(),
        );
    }
    f
}

/// The order form, rendered once per catalog version and shared by every request.
#[derive(Debug, Default)]
pub struct FormCache {
    current: std::sync::RwLock<Option<(i64, Rendered)>>,
}

impl FormCache {
    async fn get(&self, st: &AppState) -> Result<Rendered, V2Error> {
        let catalog: Arc<Catalog> = st.lodge.catalog().await?;
        {
            let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
            if let Some((v, rendered)) = guard.as_ref() {
                if *v == catalog.version {
                    return Ok(rendered.clone());
                }
            }
        }
        let form = build_order_form(&catalog, st.lodge.registrar.is_some());
        let bytes = Bytes::from(
            serde_json::to_vec(&form)
                .map_err(|e| V2Error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        );
        let rendered = Rendered::new(bytes);
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = Some((catalog.version, rendered.clone()));
        Ok(rendered)
    }
}

/// The website order form: plans, prices, offers. Rendered once per catalog version and
/// answered with an `ETag`; `If-None-Match` with it gets `304` and no body.
#[utoipa::path(get, path = "/apiv2/websites/order", tag = "apiv2", operation_id = "getNewWebsite",
    security(("api_key" = [])),
    params(("If-None-Match" = Option<String>, Header, description = "An `ETag` this endpoint gave: `304` when the form is unchanged")),
    responses((status = 200, description = "Website Ordering details", body = WebsitesOrder,
                headers(("ETag" = String, description = "The form's version tag"))),
              (status = 304, description = "Unchanged since the `ETag` sent in `If-None-Match`"),
              (status = 401, body = super::V2ErrorBody)))]
pub async fn order_form(
    State(st): State<AppState>,
    _caller: Authenticated,
    headers: HeaderMap,
) -> Response {
    match st.order_form.get(&st).await {
        Ok(rendered) => rendered.respond(&headers),
        Err(e) => e.into_response(),
    }
}

// ---- quote and place ----

/// The order request (`WebsiteOrderPutRequest` / `WebsiteOrderPostRequest`), as JSON or as a
/// form. Numbers and flags may come as strings (a form's are); a missing or unusable value
/// is answered with `continue: false` and InterServer's message, a value of a type not
/// listed here with a 400.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct WebsiteOrderRequest {
    #[schema(schema_with = text_or_number)]
    pub hostname: Option<Value>,
    #[schema(schema_with = int_or_text)]
    pub package_id: Option<Value>,
    #[schema(schema_with = text_or_number)]
    pub rootpass: Option<Value>,
    /// Months: 1, 3, 6, 12, 24, 36.
    #[schema(schema_with = int_or_text)]
    pub period: Option<Value>,
    #[schema(schema_with = text_or_number)]
    pub coupon: Option<Value>,
    #[schema(schema_with = int_or_text)]
    pub service_offer_id: Option<Value>,
    #[schema(schema_with = int_or_text)]
    pub script: Option<Value>,
    #[schema(schema_with = text_or_number)]
    pub comment: Option<Value>,
    #[schema(schema_with = flag_like)]
    pub register_domain: Option<Value>,
    #[schema(schema_with = flag_like)]
    pub tos: Option<Value>,
}

const TEXT_FIELDS: [&str; 4] = ["hostname", "rootpass", "coupon", "comment"];
const INT_FIELDS: [&str; 4] = ["packageId", "period", "serviceOfferId", "script"];
const FLAG_FIELDS: [&str; 2] = ["registerDomain", "tos"];

// The order's fields take any JSON value: one of a type the field never takes is an order
// validation failure, answered `200` with `continue: false` like every other (InterServer's
// contract), not a malformed request. Each says what it is read as.

fn int_or_text() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "A whole number, or one as a string (anything else: `continue: false`)",
        ))
        .build()
}

fn text_or_number() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "Text; a number is taken as its text (anything else: `continue: false`)",
        ))
        .build()
}

fn flag_like() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "`true`, `1`, `\"1\"`, `\"on\"` or `\"yes\"` for yes; other booleans, numbers and \
             strings for no (anything else: `continue: false`)",
        ))
        .build()
}

/// InterServer's words for each field of a type the order never takes (an object or a
/// list, a fraction or a flag for a whole number; a number is text's text): as every other
/// unusable value, `continue: false` with these, not an HTTP error (the contract: "order
/// validation failures are not HTTP errors"; found by the InterServer audit: a 400).
fn wrong_types(obj: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for (k, v) in obj {
        let v = crate::extract::integral_numbers(v.clone());
        let k = k.as_str();
        let wrong = if TEXT_FIELDS.contains(&k) {
            !matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
        } else if INT_FIELDS.contains(&k) {
            !(v.is_i64() || v.is_string() || v.is_null())
        } else if FLAG_FIELDS.contains(&k) {
            !(v.is_boolean() || v.is_i64() || v.is_string() || v.is_null())
        } else {
            false
        };
        if !wrong {
            continue;
        }
        let words = match k {
            "packageId" => "Invalid Package Specified.".to_owned(),
            "period" => "Invalid Billing Interval".to_owned(),
            "serviceOfferId" => "Invalid Service Offer Specified.".to_owned(),
            "coupon" => "Invalid Coupon Specified".to_owned(),
            "hostname" => "Hostname \"\" Contains Invalid Characters Or Is Blank".to_owned(),
            "rootpass" => "Invalid rootpass: it must be text.".to_owned(),
            other => format!("Invalid {other}: not a value it takes."),
        };
        if !out.contains(&words) {
            out.push(words);
        }
    }
    out
}

fn as_int(v: Option<&Value>) -> Result<Option<i64>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(n @ Value::Number(_)) => crate::extract::integral_numbers(n.clone())
            .as_i64()
            .map(Some)
            .ok_or(()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

fn as_bool(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => matches!(s.trim(), "1" | "true" | "on" | "yes"),
        _ => false,
    }
}

fn as_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Reads the order's fields leniently (numbers as numbers or text), collecting
/// InterServer-style errors.
fn read_body(obj: &serde_json::Map<String, Value>) -> Result<WebsiteOrder, Vec<String>> {
    let mut errors = vec![];
    let package_id = as_int(obj.get("packageId")).unwrap_or_else(|()| {
        errors.push("Invalid Package Specified.".to_owned());
        None
    });
    let period = as_int(obj.get("period")).unwrap_or_else(|()| {
        errors.push("Invalid Billing Interval".to_owned());
        None
    });
    let service_offer_id = as_int(obj.get("serviceOfferId")).unwrap_or_else(|()| {
        errors.push("Invalid Service Offer Specified.".to_owned());
        None
    });
    // An auto-installer (`script`, 0 = none) is not something Lodge runs: one asked for is
    // refused rather than taken with the money and never installed (found by the /apiv2
    // audit: `script: 5` was accepted and ignored).
    match as_int(obj.get("script")) {
        Ok(None | Some(0)) => {}
        _ => errors.push("Invalid Script Specified: no auto-installer is offered.".to_owned()),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(WebsiteOrder {
        hostname: as_text(obj.get("hostname")).trim().to_owned(),
        package_id,
        rootpass: as_text(obj.get("rootpass")),
        period_months: period,
        coupon: as_text(obj.get("coupon")).trim().to_owned(),
        service_offer_id,
        comment: as_text(obj.get("comment")),
        register_domain: as_bool(obj.get("registerDomain")),
        tos: as_bool(obj.get("tos")),
    })
}

/// InterServer's own words for an order that cannot be placed for want of a server.
const SERVERS_FULL: &str = "All webhosting servers are currently full.";

/// Fields whose errors InterServer lists first, in this order.
const FIRST_FIELDS: [&str; 3] = ["billing_cycle", "plan_id", "tos"];

/// InterServer's wording for each of Lodge's field errors, chosen by field and code (never
/// by Lodge's message, which is passed on only where InterServer has no words of its own).
fn interserver_errors(fields: FieldErrors, hostname: &str) -> Vec<String> {
    let mut ordered: Vec<(String, Vec<FieldError>)> = fields.into_iter().collect();
    ordered.sort_by_key(|(f, _)| {
        FIRST_FIELDS
            .iter()
            .position(|x| x == f)
            .unwrap_or(FIRST_FIELDS.len())
    });
    let mut out: Vec<String> = vec![];
    for (field, errors) in ordered {
        for e in errors {
            let words = match (field.as_str(), e.code) {
                ("plan_id", FieldCode::ServersFull) => SERVERS_FULL.to_owned(),
                // Lodge's own reason: the package is valid, this customer has had it.
                ("plan_id", FieldCode::OncePerOrganization) => e.message,
                ("plan_id", _) => "Invalid Package Specified.".to_owned(),
                ("billing_cycle", _) => "Invalid Billing Interval".to_owned(),
                ("coupon", _) => "Invalid Coupon Specified".to_owned(),
                ("offer", _) => "Invalid Service Offer Specified.".to_owned(),
                ("password", _) => format!("Invalid rootpass: {}", e.message),
                ("comment", _) => format!("Invalid comment: {}", e.message),
                ("tos", _) => {
                    "You must agree to the terms of service and click the checkbox saying so."
                        .to_owned()
                }
                (
                    "domain_name" | "domain_source",
                    FieldCode::Required | FieldCode::InvalidDomain,
                ) => {
                    format!("Hostname \"{hostname}\" Contains Invalid Characters Or Is Blank")
                }
                _ => e.message,
            };
            if !out.contains(&words) {
                out.push(words);
            }
        }
    }
    out
}

/// Validation as InterServer answers it: `Ok` or the list of messages.
async fn validate(
    st: &AppState,
    customer: &Customer,
    order: &serde_json::Map<String, Value>,
) -> Result<Result<(ValidOrder, WebsiteOrder), Vec<String>>, V2Error> {
    let b = match read_body(order) {
        Ok(b) => b,
        Err(errors) => return Ok(Err(errors)),
    };
    match st
        .lodge
        .validate_website_order(&customer.access, &b, DbChecks::Now)
        .await
    {
        Ok(v) => Ok(Ok((v, b))),
        Err(ServiceError::Invalid(fields)) => Ok(Err(interserver_errors(fields, &b.hostname))),
        Err(e) => Err(e.into()),
    }
}

/// An order refused: `continue: false` with InterServer's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Refused {
    #[serde(rename = "continue")]
    pub proceed: bool,
    pub errors: Vec<String>,
}

/// What `PUT /apiv2/websites/order` answers with 200 (for the document).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(
    dead_code,
    reason = "describes the answer in the OpenAPI document only"
)]
pub enum QuoteAnswer {
    Quote(WebsiteQuote),
    Refused(Refused),
}

/// What `POST /apiv2/websites/order` answers with 200 (for the document).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(
    dead_code,
    reason = "describes the answer in the OpenAPI document only"
)]
pub enum PlaceAnswer {
    Placed(WebsiteOrderPlaced),
    Refused(Refused),
}

/// The order's fields. A request with no body at all, or one that is not what it declares,
/// is refused with a 400 before anything is read (a form or JSON object with missing,
/// unusable or [wrongly typed](wrong_types) values is answered with `continue: false` and
/// the messages). A `multipart/form-data` body gives its text fields (InterServer's
/// document: "form or JSON"; found by the customer audit: a multipart order was read as an
/// empty one). Any other body is read leniently, JSON or a form whatever it declares: `curl
/// -d '{…}'` and PHP's curl send JSON declared as a form, and the README's own examples do.
async fn order_fields(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, Response> {
    let refuse = |why: String| V2Error(StatusCode::BAD_REQUEST, why).into_response();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(refuse(
            "The order is sent in the request body (JSON or a form).".to_owned(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(declared) = super::declared_body_object(headers, body).await else {
        return Err(refuse(super::unusable_body(headers, body).await));
    };
    let wrong = wrong_types(&declared);
    if !wrong.is_empty() {
        return Err(refused(wrong));
    }
    let multipart = content_type.is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    });
    if multipart {
        return Ok(declared);
    }
    match super::body_object_as(None, body) {
        Some(lenient) => Ok(lenient),
        // Declared a form, and a form only by the declaration (a JSON list, `&&`): refused
        // as before, for what it is.
        None => Err(refused(vec![
            "The request body must be a JSON object or a form.".into(),
        ])),
    }
}

fn refused(errors: Vec<String>) -> Response {
    Json(Refused {
        proceed: false,
        errors,
    })
    .into_response()
}

/// The quote (`PUT`): nothing is written.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsiteQuote {
    #[serde(rename = "continue")]
    pub proceed: bool,
    pub errors: Vec<String>,
    /// Months of the billing cycle.
    pub frequency: i64,
    /// The coupon applied: its code as stored (`""`: none).
    pub coupon: String,
    /// The matched coupon's numeric id, `0` when none (InterServer's "matched coupon row
    /// id").
    pub coupon_code: i64,
    pub service_type: i64,
    /// The first invoice: first period after offer and coupon, plus setup fee and domain.
    pub service_cost: String,
    /// The same at the monthly price × months, without offer or coupon.
    pub original_cost: String,
    /// Each renewal's charge.
    pub repeat_service_cost: String,
    pub hostname: String,
    pub password: String,
    /// Months the first (intro) period covers.
    pub intro_frequency: i64,
}

/// Validates an order and quotes it without writing anything.
#[utoipa::path(put, path = "/apiv2/websites/order", tag = "apiv2", operation_id = "putWebsites",
    security(("api_key" = [])),
    request_body(content((WebsiteOrderRequest = "application/json"), (WebsiteOrderRequest = "application/x-www-form-urlencoded"), (WebsiteOrderRequest = "multipart/form-data"))),
    responses((status = 200, description = "The quote, or `continue: false` with errors", body = QuoteAnswer),
              (status = 400, description = "No request body, or not a JSON object or form", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A role that may not order (viewer, guest)", body = super::V2ErrorBody)))]
pub async fn validate_order(
    State(st): State<AppState>,
    customer: Customer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let order = match order_fields(&headers, &body).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (v, _) = match validate(&st, &customer, &order).await {
        Ok(Ok(x)) => x,
        Ok(Err(errors)) => return refused(errors),
        Err(e) => return e.into_response(),
    };
    let cur = st.lodge.settings.currency;
    let (code, coupon_id) = v
        .coupon
        .as_ref()
        .map(|c| (c.code.clone(), c.legacy_id))
        .unwrap_or_default();
    Json(WebsiteQuote {
        proceed: true,
        errors: vec![],
        frequency: v.hosting_cycle().months().map_or(0, i64::from),
        coupon: code,
        coupon_code: coupon_id,
        service_type: v.plan.row.legacy_id,
        service_cost: money_str(v.quote.total_minor, cur),
        original_cost: money_str(v.quote.list_total_minor, cur),
        repeat_service_cost: money_str(v.quote.renewal_minor.unwrap_or(0), cur),
        // The name as it will be placed (lowercase, no trailing dot, an IDN in its ASCII
        // form): the "final sanitized values" InterServer's quote returns.
        hostname: v.domain.name().to_owned(),
        password: v.password.clone().unwrap_or_default(),
        intro_frequency: v.quote.first_period_months.map_or(0, i64::from),
    })
    .into_response()
}

/// `ServiceOrderPostResponse`, plus `success` and `serviceid` that InterServer's own web
/// client reads.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsiteOrderPlaced {
    #[serde(rename = "continue")]
    pub proceed: bool,
    pub errors: Vec<String>,
    #[serde(rename = "total_cost")]
    pub total_cost: String,
    pub iid: String,
    pub iids: Vec<String>,
    #[serde(rename = "real_iids")]
    pub real_iids: Vec<String>,
    pub service_id: i64,
    #[serde(rename = "invoice_description")]
    pub invoice_description: String,
    pub success: bool,
    #[serde(rename = "serviceid")]
    pub serviceid: i64,
    /// `1` when account credit paid the whole first invoice already (nothing to pay), else
    /// `0`.
    #[serde(rename = "invoices_paid")]
    pub invoices_paid: i64,
    /// Account credit ("prepay") applied to the first invoice.
    #[serde(rename = "prepay_used")]
    pub prepay_used: String,
    /// What is still to pay on the first invoice (`"0.00"` when credit paid it).
    #[serde(rename = "amount_due")]
    pub amount_due: String,
}

/// How long an identical order sent again without `Idempotency-Key` is answered with the
/// first one's outcome (a retry after a lost answer) rather than refused.
pub const SAME_ORDER_WINDOW_SECS: i64 = 600;

/// Places the order: the same order, invoice, hosting and domain as `/v1` makes.
///
/// Safe to retry: with an `Idempotency-Key` header the first outcome is replayed for a day
/// (the key is the caller's); without one, the same order from the same account within ten
/// minutes is answered with the first order's outcome instead of "not available", while
/// that order stands (cancelled, or its invoice deleted, the same order is placed anew).
#[utoipa::path(post, path = "/apiv2/websites/order", tag = "apiv2", operation_id = "addWebsite",
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body(content((WebsiteOrderRequest = "application/json"), (WebsiteOrderRequest = "application/x-www-form-urlencoded"), (WebsiteOrderRequest = "multipart/form-data"))),
    responses((status = 200, description = "Placed (also a replayed retry, marked `Idempotent-Replayed: true`), or `continue: false` with errors", body = PlaceAnswer),
              (status = 400, description = "No request body, not a JSON object or form, or an unusable Idempotency-Key header", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A read-only member", body = super::V2ErrorBody),
              (status = 409, description = "A request with this Idempotency-Key is still in progress", body = super::V2ErrorBody),
              (status = 422, description = "Idempotency-Key reused with another request", body = super::V2ErrorBody)))]
pub async fn place_order(
    State(st): State<AppState>,
    customer: Customer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = match IdempotencyKey::from_headers(&headers) {
        Ok(h) => h,
        Err(why) => return V2Error(StatusCode::BAD_REQUEST, why.into()).into_response(),
    };
    if let Err(e) = customer.access.require_write() {
        return V2Error::from(e).into_response();
    }
    let order = match order_fields(&headers, &body).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let b = match read_body(&order) {
        Ok(b) => b,
        Err(errors) => return refused(errors),
    };
    const PATH: &str = "/apiv2/websites/order";
    // What was asked, read off the wire: the same order sent as JSON or as a form, its
    // fields in any order, is the same request. The password is left out: digests of
    // requests are kept for a day, and a password must never be (a retry keeps the first
    // order's password).
    let asked = format!(
        "{:?}",
        WebsiteOrder {
            rootpass: String::new(),
            ..b.clone()
        }
    );
    let same_order = idempotency::same_request(
        &st,
        format!("apiv2:same-order:{}", customer.access.organization),
        "POST",
        PATH,
        asked.as_bytes(),
        SAME_ORDER_WINDOW_SECS * 1_000_000,
    );
    let keyed_by_caller = header.is_some();
    let key = match header {
        Some(h) => {
            super::with_earlier_scope(
                &st,
                idempotency::key(
                    &st,
                    Some(h),
                    super::user_scope(&customer),
                    "POST",
                    PATH,
                    asked.as_bytes(),
                ),
                &customer,
            )
            .await
        }
        None => Some(same_order.clone()),
    };
    let actor = customer.access.actor();
    let place = || async {
        let mut v = st
            .lodge
            .validate_website_order(&customer.access, &b, DbChecks::AtWrite)
            .await?;
        v.idempotency = key.clone().map(Arc::new);
        st.lodge.place_order(&v, &actor).await
    };
    let mut answer = st.lodge.keyed(key.as_ref(), place).await;
    // The same order again after the first was cancelled (or its invoice deleted): placed
    // anew, not answered with the dead one (only for the key derived here, not a caller's).
    if let (Ok(a), Some(k)) = (&answer, key.as_ref()) {
        if a.is_replay() {
            match st.lodge.forget_gone_order(k).await {
                Ok(true) => answer = st.lodge.keyed(key.as_ref(), place).await,
                Ok(false) => {}
                Err(e) => return V2Error::from(e).into_response(),
            }
        }
    }
    let answer = match answer {
        Ok(a) => a,
        Err(ServiceError::Invalid(fields)) => {
            return refused(interserver_errors(fields, &b.hostname))
        }
        Err(e) => return V2Error::from(e).into_response(),
    };
    // A keyed order is also the same order a retry without the header asks for (found by
    // the apiv2 and docs audits: that retry was told the name was not available). Best
    // effort: when this fails, such a retry is refused as before, and nothing is placed.
    if keyed_by_caller && !answer.is_replay() {
        if let lodge_services::idempotency::Answer::Done(outcome) = &answer {
            let mut remembered = st.lodge.remember_order_as(&same_order, outcome).await;
            // The key may still hold an identical order since cancelled: forgotten, then
            // this one remembered in its place.
            if matches!(remembered, Err(ServiceError::KeyTaken))
                && matches!(st.lodge.forget_gone_order(&same_order).await, Ok(true))
            {
                remembered = st.lodge.remember_order_as(&same_order, outcome).await;
            }
            if let Err(e) = remembered {
                tracing::debug!(error = %e, "a keyed order was not remembered for keyless retries");
            }
        }
    }
    let cur = st.lodge.settings.currency;
    idempotency::respond(answer, |outcome| {
        let invoice = outcome
            .invoice_id
            .map(|i| i.to_string())
            .unwrap_or_default();
        Json(WebsiteOrderPlaced {
            proceed: true,
            errors: vec![],
            total_cost: money_str(outcome.total_minor, cur),
            iid: invoice.clone(),
            iids: vec![format!("SERVICEwebhosting{}", outcome.hosting_legacy_id)],
            real_iids: if invoice.is_empty() {
                vec![]
            } else {
                vec![invoice]
            },
            service_id: outcome.hosting_legacy_id,
            invoice_description: format!("New Website Order: {}", outcome.domain_name),
            success: true,
            serviceid: outcome.hosting_legacy_id,
            invoices_paid: i64::from(outcome.amount_due_minor == 0), // a free order too: nothing left to pay
            prepay_used: money_str(outcome.credit_applied_minor, cur),
            amount_due: money_str(outcome.amount_due_minor, cur),
        })
        .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, FieldCode, &str)]) -> FieldErrors {
        let mut f = FieldErrors::new();
        for &(field, code, msg) in list {
            f.entry(field.to_owned())
                .or_default()
                .push(FieldError::new(code, msg));
        }
        f
    }

    #[test]
    fn errors_are_worded_by_field_and_code_not_by_message() {
        let bad_host = "Hostname \"x y\" Contains Invalid Characters Or Is Blank";
        let cases: Vec<(FieldErrors, Vec<&str>)> = vec![
            (
                fields(&[("domain_name", FieldCode::InvalidDomain, "Whatever it says.")]),
                vec![bad_host],
            ),
            (
                fields(&[("domain_source", FieldCode::Required, "Missing.")]),
                vec![bad_host],
            ),
            // A message that merely reads like one is passed on as it is.
            (
                fields(&[(
                    "domain_name",
                    FieldCode::Invalid,
                    "Not a valid domain, and required.",
                )]),
                vec!["Not a valid domain, and required."],
            ),
            (
                fields(&[("plan_id", FieldCode::ServersFull, "No room.")]),
                vec![SERVERS_FULL],
            ),
            (
                fields(&[("plan_id", FieldCode::Invalid, SERVERS_FULL)]),
                vec!["Invalid Package Specified."],
            ),
            // A trial had already: the package is valid, the reason is Lodge's.
            (
                fields(&[("plan_id", FieldCode::OncePerOrganization, "Had once.")]),
                vec!["Had once."],
            ),
            (
                fields(&[
                    ("coupon", FieldCode::Invalid, "a"),
                    ("tos", FieldCode::Required, "b"),
                    ("plan_id", FieldCode::Required, "c"),
                    ("billing_cycle", FieldCode::Invalid, "d"),
                    ("billing_cycle", FieldCode::Invalid, "e"),
                ]),
                vec![
                    "Invalid Billing Interval",
                    "Invalid Package Specified.",
                    "You must agree to the terms of service and click the checkbox saying so.",
                    "Invalid Coupon Specified",
                ],
            ),
        ];
        for (f, expected) in cases {
            let what = format!("{f:?}");
            assert_eq!(interserver_errors(f, "x y"), expected, "{what}");
        }
    }
}
