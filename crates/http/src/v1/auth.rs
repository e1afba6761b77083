//! Login and token refresh (JWT).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::V1Json;
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// Short-lived access token: `Authorization: Bearer <access>`.
    pub access: String,
    /// Longer-lived token for `POST /v1/auth/refresh`.
    pub refresh: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Refresh {
    pub refresh: String,
}

/// Exchanges an email and password for JWTs.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body = Login,
    responses((status = 200, body = Tokens), (status = 400), (status = 401, description = "Bad email or password"),
              (status = 429, description = "Too many attempts")))]
pub async fn login(
    State(st): State<AppState>,
    V1Json(body): V1Json<Login>,
) -> ApiResult<Json<Tokens>> {
    st.limiter
        .check(&format!("login:{}", body.email.trim().to_lowercase()))?;
    let pair = st.lodge.login(&body.email, &body.password).await?;
    Ok(Json(Tokens {
        access: pair.access,
        refresh: pair.refresh,
    }))
}

/// Exchanges a refresh token for a new pair.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    request_body = Refresh,
    responses((status = 200, body = Tokens), (status = 400), (status = 401)))]
pub async fn refresh(
    State(st): State<AppState>,
    V1Json(body): V1Json<Refresh>,
) -> ApiResult<Json<Tokens>> {
    let pair = st.lodge.refresh(&body.refresh).await?;
    Ok(Json(Tokens {
        access: pair.access,
        refresh: pair.refresh,
    }))
}
