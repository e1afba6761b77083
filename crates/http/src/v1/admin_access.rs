//! Staff taking access away and looking it up (`/v1/admin/…`): every organization, a user
//! by email, every key of an organization or of staff; revoking any key, deactivating a
//! user, removing a member. The same as the CLI's `keys list|revoke`, `users
//! deactivate|activate`, `members remove` (found by the operator audit: a leaked staff key
//! or a departed employee could only be removed by editing the database).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use lodge_core::{ApiKeyId, OrganizationId, UserId};
use lodge_services::ServiceError;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::User;
use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Staff, V1Query};
use crate::wire::{ApiKey, Organization};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organizations))
        .routes(routes!(find_users))
        .routes(routes!(deactivate_user))
        .routes(routes!(activate_user))
        .routes(routes!(list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(remove_member))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrganizationQuery {
    /// Only organizations older than this `legacy_id` (the next page).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before: Option<String>,
    /// At most this many (default 100; a larger number is taken as 500).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
}

/// Every organization, newest first (a staff credential is no member of any, so
/// `GET /v1/organizations` lists none for it).
#[utoipa::path(get, path = "/v1/admin/organizations", tag = "admin", operation_id = "admin_list_organizations", security(("bearer" = [])),
    params(OrganizationQuery),
    responses((status = 200, body = Vec<Organization>), (status = 400), (status = 401), (status = 403)))]
async fn list_organizations(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<OrganizationQuery>,
) -> ApiResult<Json<Vec<Organization>>> {
    let before = super::admin_webhooks::positive("before", q.before.as_deref())?.unwrap_or(0);
    let limit = super::admin_webhooks::positive("limit", q.limit.as_deref())?
        .unwrap_or(100)
        .min(500);
    let rows = st.lodge.organizations_page(before, limit).await?;
    Ok(Json(rows.into_iter().map(Organization::from_row).collect()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Only the user with this email (any case).
    pub email: Option<String>,
    /// Without `email`: at most this many, newest first (default 100; a larger number is taken as 500).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
    /// Without `email`: only users made before this one (its UUID: the next page, after
    /// the last one's).
    pub before: Option<String>,
}

/// The user with this email (a list of one, or empty), or the newest users (the next page
/// `before` the last one's `id`).
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", operation_id = "admin_find_users", security(("bearer" = [])),
    params(UserQuery),
    responses((status = 200, body = Vec<User>), (status = 400), (status = 401), (status = 403)))]
async fn find_users(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<UserQuery>,
) -> ApiResult<Json<Vec<User>>> {
    let limit = super::admin_webhooks::positive("limit", q.limit.as_deref())?
        .unwrap_or(100)
        .min(500);
    let before = q
        .before
        .as_deref()
        .map(|b| {
            b.trim()
                .parse::<UserId>()
                .map_err(|_| ServiceError::field("before", "A user's UUID."))
        })
        .transpose()?;
    let Some(email) = q.email else {
        let users = st.lodge.users_newest(before, limit).await?;
        return Ok(Json(users.into_iter().map(User::from_row).collect()));
    };
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.len() > 254 {
        return Err(ServiceError::field("email", "An email address.").into());
    }
    let found = st.lodge.user_by_email(&email).await?;
    Ok(Json(found.into_iter().map(User::from_row).collect()))
}

async fn set_active(st: &AppState, id: &str, active: bool) -> ApiResult<Json<User>> {
    let id: UserId = path_id(id)?;
    st.lodge.set_user_active(id, active).await?;
    let u = st.lodge.user(id).await?;
    Ok(Json(User::from_row(u)))
}

/// Shuts a user out: its API keys, tokens and sessions are refused from then on (within
/// 2 s on other nodes); its sessions and refresh tokens end for good.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/deactivate", tag = "admin", operation_id = "admin_deactivate_user", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User UUID")),
    responses((status = 200, body = User), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The caller's own user: staff do not deactivate themselves")))]
async fn deactivate_user(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    // Staff do not shut themselves out by mistake (the last way in could be theirs).
    if path_id::<UserId>(&id)? == staff.user {
        return Err(ServiceError::Conflict(
            "A staff user does not deactivate itself: ask another staff user, or use the CLI."
                .into(),
        )
        .into());
    }
    set_active(&st, &id, false).await
}

/// Lets a deactivated user in again (its API keys work again; it logs in anew).
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/activate", tag = "admin", operation_id = "admin_activate_user", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User UUID")),
    responses((status = 200, body = User), (status = 401), (status = 403), (status = 404)))]
async fn activate_user(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    set_active(&st, &id, true).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// The organization whose keys to list; left out: the staff keys.
    #[param(value_type = Option<String>, format = Uuid)]
    pub organization_id: Option<String>,
}

/// The keys of an organization, or the staff keys, oldest first, revoked ones too (never
/// their secrets).
#[utoipa::path(get, path = "/v1/admin/api-keys", tag = "admin", operation_id = "admin_list_keys", security(("bearer" = [])),
    params(KeyQuery),
    responses((status = 200, body = Vec<ApiKey>), (status = 400), (status = 401), (status = 403)))]
async fn list_keys(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<KeyQuery>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let org: Option<OrganizationId> = q
        .organization_id
        .as_deref()
        .map(|o| {
            o.trim()
                .parse()
                .map_err(|_| ServiceError::field("organization_id", "Not a valid UUID."))
        })
        .transpose()?;
    let now = st.lodge.now_us();
    let rows = st.lodge.keys_of(org).await?;
    Ok(Json(
        rows.iter().map(|k| ApiKey::from_row(k, now)).collect(),
    ))
}

/// Revokes any key, a staff key too: refused from then on (within 2 s on other nodes).
/// Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/v1/admin/api-keys/{key_id}", tag = "admin", operation_id = "admin_revoke_key", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key UUID")),
    responses((status = 200, body = ApiKey), (status = 401), (status = 403), (status = 404)))]
async fn revoke_key(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKey>> {
    let id: ApiKeyId = path_id(&id)?;
    let k = st.lodge.revoke_any_key(id).await?;
    Ok(Json(ApiKey::from_row(&k, st.lodge.now_us())))
}

/// Removes a user from an organization: its membership, its projects there, and the keys
/// it held for the organization (revoked). The only owner is not removed (409).
#[utoipa::path(delete, path = "/v1/admin/organizations/{organization_id}/members/{user_id}", tag = "admin", operation_id = "admin_remove_member",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("user_id" = String, Path, description = "User UUID")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn remove_member(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let org: OrganizationId = path_id(&org)?;
    let user: UserId = path_id(&user)?;
    st.lodge.remove_member(org, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
