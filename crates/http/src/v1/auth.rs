//! Login and token refresh (JWT).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, V1Json};
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
              (status = 429, description = "Too many failed attempts for this e-mail or client address: wait `Retry-After` seconds")))]
pub async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    V1Json(body): V1Json<Login>,
) -> ApiResult<Json<Tokens>> {
    let now = st.lodge.now_us();
    let attempt = st
        .login_guard
        .begin(&body.email, ip, now)
        .await?
        .map_err(ApiError::RateLimited)?;
    let pair = match st.lodge.login(&body.email, &body.password).await {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, lodge_services::ServiceError::Unauthorized(_)) {
                st.login_guard.failed(&attempt).await;
            } else {
                st.login_guard.abandoned(&attempt).await;
            }
            return Err(e.into());
        }
    };
    st.login_guard.succeeded(&attempt).await;
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
