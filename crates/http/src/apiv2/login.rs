//! `POST /apiv2/login` and `GET /apiv2/logout`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Customer, V2Error};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginRequest {
    pub login: String,
    pub passwd: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSuccess {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    pub account_id: i64,
    pub account_lid: String,
    pub ima: String,
    pub gravatar: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginRefused {
    pub code: String,
    pub message: String,
    pub field: String,
}

/// Logs in with email and password; send the `sessionId` back in the `sessionid` header.
#[utoipa::path(post, path = "/apiv2/login", tag = "apiv2", operation_id = "submitLogin",
    request_body(content((LoginRequest = "application/json"), (LoginRequest = "application/x-www-form-urlencoded"), (LoginRequest = "multipart/form-data"))),
    responses((status = 200, body = LoginSuccess), (status = 401, body = LoginRefused),
              (status = 400, description = "A body that is not what its Content-Type says", body = super::V2ErrorBody),
              (status = 422, description = "`login` or `passwd` missing: `field` names it", body = LoginRefused),
              (status = 429, body = super::V2ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    crate::extract::ClientIp(ip): crate::extract::ClientIp,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(obj) = super::declared_body_object(&headers, &body).await else {
        return V2Error(
            StatusCode::BAD_REQUEST,
            super::unusable_body(&headers, &body).await,
        )
        .into_response();
    };
    let value = Value::Object(obj);
    let field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (login, passwd) = (field("login"), field("passwd"));
    // A missing input is named (`422`, InterServer's `field`), not counted as a failure.
    for (name, given) in [("login", &login), ("passwd", &passwd)] {
        if given.trim().is_empty() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(LoginRefused {
                    code: "422".into(),
                    message: format!("missing {name}"),
                    field: name.into(),
                }),
            )
                .into_response();
        }
    }
    let now = st.lodge.now_us();
    let attempt = match st.login_guard.begin(&login, ip, now).await {
        Ok(Ok(a)) => a,
        Ok(Err(secs)) => return super::throttled(secs),
        Err(e) => return V2Error::from(e).into_response(),
    };
    match st.lodge.open_session(&login, &passwd).await {
        Ok((user, opened)) => {
            st.login_guard.succeeded(&attempt).await;
            // No session is made for a login with no account to show (none, or only as a
            // guest, which sees none): every call with it would be refused (found by the
            // authorization audit: a removed member's or a staff login got a session
            // refused everywhere).
            let Some((session, account)) = opened else {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(LoginRefused {
                        code: "401".into(),
                        message: "This login has no customer account.".into(),
                        field: "login".into(),
                    }),
                )
                    .into_response();
            };
            Json(LoginSuccess {
                session_id: session,
                account_id: account.legacy_id,
                account_lid: user.email.clone(),
                ima: if user.is_staff() { "admin" } else { "client" }.into(),
                gravatar: String::new(),
            })
            .into_response()
        }
        Err(lodge_services::ServiceError::Unauthorized(_)) => {
            st.login_guard.failed(&attempt).await;
            (
                StatusCode::UNAUTHORIZED,
                Json(LoginRefused {
                    code: "401".into(),
                    message: "Invalid login or password.".into(),
                    field: "passwd".into(),
                }),
            )
                .into_response()
        }
        Err(e) => {
            st.login_guard.abandoned(&attempt).await;
            V2Error::from(e).into_response()
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    pub success: bool,
    pub text: String,
}

/// Ends the session sent in the `sessionid` header. Idempotent, as InterServer's: a session
/// already ended (or expired) is answered `200` too; without a session, an API key must be
/// valid (it is not ended: only sessions are).
#[utoipa::path(get, path = "/apiv2/logout", tag = "apiv2", operation_id = "Logout",
    security(("api_key" = [])),
    responses((status = 200, body = LoggedOut), (status = 401, description = "No session and no valid API key", body = super::V2ErrorBody)))]
pub async fn logout(State(st): State<AppState>, req: axum::extract::Request) -> Response {
    let session = req
        .headers()
        .get("sessionid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    match session {
        Some(session) => {
            if let Err(e) = st.lodge.close_session(&session).await {
                return V2Error::from(e).into_response();
            }
        }
        None => {
            let (mut parts, _) = req.into_parts();
            if let Err(refused) =
                <Customer as axum::extract::FromRequestParts<AppState>>::from_request_parts(
                    &mut parts, &st,
                )
                .await
            {
                return refused;
            }
        }
    }
    Json(LoggedOut {
        success: true,
        text: "Logged Out".into(),
    })
    .into_response()
}
