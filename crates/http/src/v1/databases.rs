//! A hosting account's MariaDB database: its connection details, the password shown once,
//! and a new password (shown once too).

use axum::extract::State;
use axum::Json;
use lodge_core::{HostingId, OrganizationId, ProjectId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Caller};
use crate::AppState;

/// The account's database and how to connect to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostingDatabase {
    /// The database server's host.
    pub host: String,
    pub port: u16,
    /// The database's name.
    pub name: String,
    /// The database user.
    pub username: String,
    /// The user's password: only in the first answer after it was made or changed (a read-only
    /// key never receives it); `null` afterwards: set a new one to see one again.
    pub password: Option<String>,
    /// Whether the current password was shown already.
    pub password_shown: bool,
    /// Whether the database exists yet (the account is still provisioning when false).
    pub ready: bool,
}

impl From<lodge_services::databases::DatabaseView> for HostingDatabase {
    fn from(v: lodge_services::databases::DatabaseView) -> Self {
        HostingDatabase {
            host: v.host,
            port: v.port,
            name: v.name,
            username: v.username,
            password: v.password,
            password_shown: v.password_shown,
            ready: v.ready,
        }
    }
}

/// The account's database. Its password is in the first answer only (by a key that may
/// write); keep it, or set a new one.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}/database",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID")),
    responses((status = 200, body = HostingDatabase), (status = 401), (status = 404),
              (status = 409, description = "Databases are off, or the account has none")))]
pub async fn get_database(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<HostingDatabase>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: HostingId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let v = st.lodge.hosting_database(&access, project, id).await?;
    Ok(Json(v.into()))
}

/// Sets a new password on the account's database user and shows it, once. One change at a
/// time: another sent while one is under way is answered `409` (try again in a moment).
#[utoipa::path(post, path = "/v1/organizations/{organization_id}/projects/{project_id}/hosting/{hosting_id}/database/password",
    tag = "hosting", security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("project_id" = String, Path, description = "Project UUID"),
           ("hosting_id" = String, Path, description = "Hosting UUID")),
    responses((status = 200, body = HostingDatabase), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Databases are off, the account has none or is not live, another change is under way, or the server refused")))]
pub async fn reset_database_password(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, project, id)): Path<(String, String, String)>,
) -> ApiResult<Json<HostingDatabase>> {
    let org: OrganizationId = path_id(&org)?;
    let project: ProjectId = path_id(&project)?;
    let id: HostingId = path_id(&id)?;
    let (access, _) = st.lodge.project_access(&p, org, project).await?;
    let v = st
        .lodge
        .reset_database_password(&access, project, id)
        .await?;
    Ok(Json(v.into()))
}
