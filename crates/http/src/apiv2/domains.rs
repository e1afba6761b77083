//! `GET /apiv2/domains/lookup/{name}`: whether a name can be registered here and its price
//! from the TLD table. Public; with credentials it also says whether the caller already has
//! the name.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_core::Currency;
use lodge_services::ServiceError;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{Customer, V2Error, V2Path};
use crate::extract::ClientIp;
use crate::wire::money_str;
use crate::AppState;

/// InterServer's `DomainLookupResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainLookupResponse {
    pub domain: String,
    pub available: bool,
    pub premium: bool,
    /// The caller's account hosts a website of this name.
    pub website: bool,
    /// The caller's account holds this domain.
    pub domain_service: bool,
    /// The extension's catalog entry (`{}` when it is not sold here).
    #[schema(value_type = Object)]
    pub service: Value,
    pub whois_privacy: bool,
    /// A year's registration, renewal and transfer (absent when the extension is not sold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
    #[schema(value_type = Object)]
    pub fields: Value,
    /// The same prices by currency code.
    #[schema(value_type = Object)]
    pub currencies: Value,
}

/// Availability and price of a name. `available` is false when the extension is not sold
/// or closed, when anyone already hosts or holds the name here, when domains cannot be
/// registered, or when the registrar says it is taken.
#[utoipa::path(get, path = "/apiv2/domains/lookup/{name}", tag = "apiv2", operation_id = "getDomainLookup",
    security((), ("api_key" = [])),
    params(("name" = String, Path, description = "A full domain name, e.g. example.com (an internationalized name in its own letters or in its `xn--` form; a trailing dot is ignored)", pattern = r"^[A-Za-z0-9.\u0080-\uFFFF-]{1,253}$", max_length = 253)),
    responses((status = 200, body = DomainLookupResponse), (status = 401, description = "Credentials sent but wrong", body = super::V2ErrorBody),
              (status = 503, description = "The registrar could not check the name at the moment; `Retry-After` says when to try again", body = super::V2ErrorBody),
              (status = 422, description = "Not a domain name", body = super::V2ErrorBody),
              (status = 429, body = super::V2ErrorBody)))]
pub async fn lookup(
    State(st): State<AppState>,
    c: Option<Customer>,
    ClientIp(ip): ClientIp,
    V2Path(name): V2Path<String>,
) -> Response {
    if c.is_none() {
        if let Some(r) = super::public_limit(&st, ip) {
            return r;
        }
    }
    let found = match st
        .lodge
        .domain_lookup(c.as_ref().map(|c| &c.access), &name)
        .await
    {
        Ok(f) => f,
        Err(ServiceError::Invalid(_)) => {
            return V2Error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid Domain".into())
                .into_response()
        }
        Err(e) => return V2Error::from(e).into_response(),
    };
    let cur = st.lodge.settings.currency;
    let price = found.tld.as_ref().and_then(|t| {
        let p = t.price_for_years(1)?;
        let c = Currency::parse(&p.currency).unwrap_or(cur);
        Some((
            t.row.tld.clone(),
            c,
            money_str(p.register_minor, c),
            money_str(p.renew_minor, c),
            money_str(p.transfer_minor, c),
        ))
    });
    let (service, currencies) = match &price {
        Some((tld, c, new, renew, transfer)) => (
            json!({
                "services_id": "",
                "services_name": format!(".{tld} Domain Name Registration"),
                "services_cost": new,
                "services_currency": c.code(),
                "services_field1": format!(".{tld}"),
                "services_module": "domains",
            }),
            json!({ c.code(): {
                "services_cost": new, "new": new, "renewal": renew, "transfer": transfer,
            }}),
        ),
        None => (json!({}), json!({})),
    };
    Json(DomainLookupResponse {
        domain: found.name.to_string(),
        available: found.available,
        premium: false,
        website: found.website,
        domain_service: found.domain_service,
        service,
        whois_privacy: false,
        new: price.as_ref().map(|p| p.2.clone()),
        renewal: price.as_ref().map(|p| p.3.clone()),
        transfer: price.as_ref().map(|p| p.4.clone()),
        fields: Value::Object(serde_json::Map::new()),
        currencies,
    })
    .into_response()
}
