//! `GET|POST /apiv2/account` (the customer's account and billing address),
//! `GET /apiv2/account/countries` and `GET /apiv2/login` (the login page's public settings).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lodge_services::countries::COUNTRIES;
use lodge_services::storefront::AccountChange;
use lodge_services::ServiceError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Customer, V2Error, V2Query, V2Result};
use crate::extract::ClientIp;
use crate::AppState;

/// `AccountInfoData`: the profile and billing address, every value a string.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountData {
    pub account_id: String,
    pub account_lid: String,
    pub email: String,
    pub username: String,
    pub name: String,
    pub company: String,
    pub address: String,
    pub address2: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub country: String,
    pub phone: String,
    pub currency: String,
    pub status: String,
    pub ima: String,
    pub group: String,
    pub disable_cc: String,
    pub cc_auto: String,
    pub payment_method: String,
    pub locale: String,
}

/// InterServer's `AccountInfo`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountInfo {
    pub custid: String,
    pub ima: String,
    pub data: AccountData,
    pub ip: String,
    pub limits: Vec<BTreeMap<String, String>>,
    pub language: String,
    #[serde(rename = "countryCurrencies")]
    pub country_currencies: BTreeMap<String, Vec<String>>,
    #[serde(rename = "enableLocales")]
    pub enable_locales: bool,
    #[serde(rename = "enableCurrencies")]
    pub enable_currencies: bool,
    pub gravatar: String,
}

/// The customer's account and billing address.
#[utoipa::path(get, path = "/apiv2/account", tag = "apiv2", operation_id = "getAccountInfo",
    security(("api_key" = [])),
    responses((status = 200, body = AccountInfo), (status = 401, body = super::V2ErrorBody)))]
pub async fn get_account(
    State(st): State<AppState>,
    c: Customer,
    ClientIp(ip): ClientIp,
) -> V2Result<Json<AccountInfo>> {
    let a = st.lodge.customer_account(&c.access).await?;
    let (u, o) = (&a.user, &a.organization);
    let ima = if u.is_staff() { "admin" } else { "client" };
    Ok(Json(AccountInfo {
        custid: o.legacy_id.to_string(),
        ima: ima.into(),
        data: AccountData {
            account_id: o.legacy_id.to_string(),
            account_lid: u.email.clone(),
            email: u.email.clone(),
            username: u.email.clone(),
            name: u.name.clone(),
            company: o.company_name.clone(),
            address: o.address_1.clone(),
            address2: o.address_2.clone(),
            city: o.city.clone(),
            state: o.state.clone(),
            zip: o.postcode.clone(),
            country: o.country.clone(),
            phone: o.phone.clone(),
            currency: st.lodge.settings.currency.code().to_owned(),
            status: if o.is_active == 1 {
                "active"
            } else {
                "disabled"
            }
            .into(),
            ima: ima.into(),
            group: "0".into(),
            disable_cc: "0".into(),
            cc_auto: "0".into(),
            payment_method: String::new(),
            locale: "auto".into(),
        },
        ip: ip.map(|i| i.to_string()).unwrap_or_default(),
        limits: vec![],
        language: "en-US".into(),
        country_currencies: BTreeMap::new(),
        enable_locales: false,
        enable_currencies: false,
        gravatar: String::new(),
    }))
}

/// A postcode or a phone number: text, or a whole number taken as its digits (InterServer's
/// clients send numbers for these; found by the /apiv2 audit: `{"zip": 62701}` was a 422).
fn text_or_whole_number() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// `AccountInfoPost`: send only what changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub company: Option<String>,
    pub address: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    #[schema(schema_with = text_or_whole_number)]
    pub zip: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    #[schema(schema_with = text_or_whole_number)]
    pub phone: Option<String>,
    /// Only the installation's currency.
    pub currency: Option<String>,
    /// The account's e-mail address as it is (it is not changed here: another is refused).
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUpdated {
    pub success: bool,
    pub text: String,
}

/// `422` in the dialect's error shape.
fn unprocessable(message: impl Into<String>) -> Response {
    V2Error(StatusCode::UNPROCESSABLE_ENTITY, message.into()).into_response()
}

/// Changes the account's name and billing address (partial: only the fields sent). A field
/// that must not be empty (`name`, `address`, `city`, `state`, `zip`, `country`, `phone`)
/// sent empty, an unknown country, a phone that is not one, another currency, another
/// e-mail address (it is not changed here) or nothing to change: `422`, and nothing changes.
///
/// Accepts `Idempotency-Key` like every `/apiv2` mutation: a retry with the same key and
/// body is answered the first answer (`Idempotent-Replayed: true`) for 24 hours.
#[utoipa::path(post, path = "/apiv2/account", tag = "apiv2", operation_id = "updateAccountInfo",
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the first answer is replayed for 24 hours")),
    request_body(content((AccountUpdate = "application/json"), (AccountUpdate = "application/x-www-form-urlencoded"), (AccountUpdate = "multipart/form-data"))),
    responses((status = 200, description = "Updated (also a replayed retry, marked `Idempotent-Replayed: true`)", body = AccountUpdated),
              (status = 400, description = "An unusable Idempotency-Key header", body = super::V2ErrorBody),
              (status = 401, body = super::V2ErrorBody),
              (status = 403, description = "A read-only member", body = super::V2ErrorBody),
              (status = 409, description = "A request with this Idempotency-Key is still in progress", body = super::V2ErrorBody),
              (status = 422, description = "Invalid input, or Idempotency-Key reused with another request; nothing changed", body = super::V2ErrorBody)))]
pub async fn update_account(
    State(st): State<AppState>,
    c: Customer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match super::mutation_key(&st, &headers, &c, "POST", "/apiv2/account", &body).await {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let Some(obj) = super::declared_body_object(&headers, &body).await else {
        return unprocessable(super::unusable_body(&headers, &body).await);
    };
    let mut bad = vec![];
    let mut field = |k: &str| match obj.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if matches!(k, "zip" | "phone") && n.is_u64() => Some(n.to_string()),
        // A number too is refused, as the schema says (`address2: 5.6e16` was stored as
        // its text; schemathesis found it).
        Some(_) => {
            bad.push(format!("{k}: must be a string."));
            None
        }
    };
    let change = AccountChange {
        name: field("name"),
        company: field("company"),
        address: field("address"),
        address2: field("address2"),
        city: field("city"),
        state: field("state"),
        zip: field("zip"),
        country: field("country"),
        phone: field("phone"),
        currency: field("currency"),
        email: field("email"),
    };
    if !bad.is_empty() {
        return unprocessable(bad.join(" "));
    }
    match st
        .lodge
        .update_account(&c.access, &change, key.as_ref())
        .await
    {
        Ok(answer) => crate::idempotency::respond(answer, |()| {
            Json(AccountUpdated {
                success: true,
                text: "Account updated.".into(),
            })
            .into_response()
        }),
        Err(ServiceError::Invalid(fields)) => unprocessable(
            fields
                .into_iter()
                .flat_map(|(f, msgs)| msgs.into_iter().map(move |m| format!("{f}: {m}")))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Err(e) => V2Error::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountriesQuery {
    /// `iso2` (default), `iso3` or `numcode`; anything else is `iso2`.
    pub fetch_by: Option<String>,
}

/// Every ISO 3166-1 country by code, ordered by name. Public.
#[utoipa::path(get, path = "/apiv2/account/countries", tag = "apiv2", operation_id = "getCountries",
    security((), ("api_key" = [])),
    params(CountriesQuery),
    responses((status = 200, description = "Code → country name", body = BTreeMap<String, String>)))]
pub async fn countries(V2Query(q): V2Query<CountriesQuery>) -> Response {
    let pick = |c: &(&'static str, &'static str, &'static str, &'static str)| match q
        .fetch_by
        .as_deref()
    {
        Some("iso3") => c.1,
        Some("numcode") => c.2,
        _ => c.0,
    };
    // An object keeps its keys in the order written (serde_json's map would sort them).
    let mut out = String::from("{");
    for (n, c) in COUNTRIES.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let key = serde_json::to_string(pick(c)).unwrap_or_default();
        let name = serde_json::to_string(c.3).unwrap_or_default();
        out.push_str(&key);
        out.push(':');
        out.push_str(&name);
    }
    out.push('}');
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}

/// How many services of each kind Lodge runs (the login page's marketing numbers).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginServiceCounts {
    pub vps: i64,
    pub websites: i64,
    pub servers: i64,
}

/// The login page's public settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginInfo {
    pub logo: String,
    /// Lodge has no captcha: always empty.
    pub captcha: String,
    pub language: String,
    pub counts: LoginServiceCounts,
}

/// What the login page shows before anyone logs in. Public.
#[utoipa::path(get, path = "/apiv2/login", tag = "apiv2", operation_id = "getLoginInfo",
    responses((status = 200, body = LoginInfo), (status = 429, body = super::V2ErrorBody)))]
pub async fn login_info(State(st): State<AppState>, ClientIp(ip): ClientIp) -> Response {
    if let Some(r) = super::public_limit(&st, ip) {
        return r;
    }
    const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(60);
    let cached = *st
        .login_counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let websites = match cached {
        Some((at, n)) if at.elapsed() < FRESH_FOR => n,
        _ => match st.lodge.login_counts().await {
            Ok(c) => {
                *st.login_counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((std::time::Instant::now(), c.websites));
                c.websites
            }
            Err(e) => return V2Error::from(e).into_response(),
        },
    };
    Json(LoginInfo {
        logo: String::new(),
        captcha: String::new(),
        language: "en-US".into(),
        counts: LoginServiceCounts {
            vps: 0,
            websites,
            servers: 0,
        },
    })
    .into_response()
}
