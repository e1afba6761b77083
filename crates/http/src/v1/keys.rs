//! API keys of an organization (owners only).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use lodge_core::{ApiKeyId, OrganizationId};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Caller, PageQuery, Paginated, V1Later};
use crate::wire::{ApiKey, CreatedApiKey};
use crate::AppState;

/// Scopes as a list (`["read", "write"]`) or one space/comma separated string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Scopes {
    List(Vec<String>),
    Text(String),
}

impl Scopes {
    pub fn joined(&self) -> String {
        match self {
            Scopes::List(v) => v.join(" "),
            Scopes::Text(s) => s.clone(),
        }
    }
}

/// A field the body does not take is refused, never dropped: a misspelt `scopes` or
/// `expires` would otherwise give a read-write key that never expires.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// `read`, `write` (default: both); every key has `read` (a scope named twice is kept
    /// once); `admin` only for staff.
    #[serde(default)]
    pub scopes: Option<Scopes>,
    /// RFC 3339 instant after which the key stops working; `null` for never.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Parses an optional RFC 3339 expiry into stored microseconds.
pub fn parse_expiry(s: Option<&str>) -> Result<Option<i64>, lodge_services::ServiceError> {
    s.map(|s| {
        lodge_core::dates::parse_instant(s)
            .map_err(|why| lodge_services::ServiceError::field("expires", why))
    })
    .transpose()
}

/// The organization's API keys (secrets are never shown again).
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/api-keys", tag = "auth",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"), PageQuery),
    responses((status = 200, body = Paginated<ApiKey>), (status = 401), (status = 403), (status = 404)))]
pub async fn list_keys(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<ApiKey>>> {
    let org: OrganizationId = path_id(&org)?;
    let access = st.lodge.access(&p, org).await?;
    access.require_owner()?;
    let req = q.resolve()?;
    let page = st
        .lodge
        .org_api_keys(&access, req.limit(), req.offset())
        .await?;
    let now = st.lodge.now_us();
    let path = format!("/v1/organizations/{org}/api-keys");
    Ok(Json(Paginated::new(
        &st,
        &path,
        req,
        page.count,
        page.rows.iter().map(|k| ApiKey::from_row(k, now)).collect(),
    )?))
}

/// Creates a key held by the caller in this organization; the secret is in the response only.
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/api-keys", tag = "auth",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID")),
    request_body = CreateKey,
    responses((status = 201, body = CreatedApiKey), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn create_key(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path(org): Path<String>,
    body: V1Later<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let org: OrganizationId = path_id(&org)?;
    let access = st.lodge.access(&p, org).await?;
    access.require_owner()?;
    let body = body.get()?;
    let scopes = body.scopes.as_ref().map(Scopes::joined);
    if scopes.as_deref().is_some_and(|s| s.contains("admin")) && !p.is_staff {
        return Err(lodge_services::ServiceError::field(
            "scopes",
            "Only staff keys may have the admin scope.",
        )
        .into());
    }
    let expires = parse_expiry(body.expires.as_deref())?;
    let issued = st
        .lodge
        .create_org_key(org, Some(p.user), &body.name, scopes.as_deref(), expires)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: ApiKey::from_row(&issued.row, st.lodge.now_us()),
            key_secret: issued.secret,
        }),
    ))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/organizations/{organization_id}/api-keys/{key_id}", tag = "auth",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("key_id" = String, Path, description = "API key UUID")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
pub async fn revoke_key(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org: OrganizationId = path_id(&org)?;
    let key: ApiKeyId = path_id(&key)?;
    let access = st.lodge.access(&p, org).await?;
    st.lodge.revoke_key(&access, key).await?;
    Ok(StatusCode::NO_CONTENT)
}
