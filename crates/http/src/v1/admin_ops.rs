//! Staff operations on servers, hosting accounts and the job queue.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use lodge_core::JobStatus;
use lodge_core::{HostingId, ServerId};
use lodge_services::model::{JobRow, ServerRow};
use lodge_services::servers::{ServerSpec, ServerUpdate};
use lodge_services::ServiceError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::V1Path as Path;
use crate::extract::{parse_json, path_id, Staff, V1Body, V1Json, V1Query};
use crate::wire::{ts, ts_opt, Hosting};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_servers, create_server))
        .routes(routes!(update_server))
        .routes(routes!(deactivate_server))
        .routes(routes!(test_server))
        .routes(routes!(get_hosting))
        .routes(routes!(find_hosting))
        .routes(routes!(suspend))
        .routes(routes!(unsuspend))
        .routes(routes!(terminate))
        .routes(routes!(retry))
        .routes(routes!(list_jobs))
        .routes(routes!(billing_preview))
        .routes(routes!(retry_job))
        .routes(routes!(list_mail))
        .routes(routes!(resend_mail))
}

/// A server (credentials are never returned).
#[derive(Debug, Serialize, ToSchema)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub driver: String,
    pub ns1: String,
    pub ns2: String,
    /// `0` for unlimited.
    pub capacity: i64,
    /// Live accounts on it.
    pub accounts: i64,
    pub plan_ids: Vec<String>,
    pub has_credentials: bool,
    pub is_active: bool,
    /// The node whose worker acts on it (`null`: any).
    pub node: Option<String>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub modified: String,
}

fn server(s: ServerRow, plan_ids: Vec<String>) -> Server {
    Server {
        id: s.id.to_string(),
        name: s.name,
        hostname: s.hostname,
        driver: s.driver,
        ns1: s.ns1,
        ns2: s.ns2,
        capacity: s.capacity,
        accounts: s.accounts,
        plan_ids,
        has_credentials: s.credentials.is_some(),
        is_active: s.is_active == 1,
        node: s.node,
        created: ts(s.created_at),
        modified: ts(s.modified_at),
    }
}

/// Every server.
#[utoipa::path(get, path = "/v1/admin/servers", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<Server>), (status = 400, description = "A query parameter it does not take"), (status = 401), (status = 403)))]
async fn list_servers(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<crate::extract::NoParams>,
) -> ApiResult<Json<Vec<Server>>> {
    Ok(Json(
        st.lodge
            .servers()
            .await?
            .into_iter()
            .map(|(s, p)| server(s, p))
            .collect(),
    ))
}

/// Adds a server.
#[utoipa::path(post, path = "/v1/admin/servers", tag = "admin", security(("bearer" = [])),
    request_body = ServerSpec,
    responses((status = 201, body = Server), (status = 400), (status = 401), (status = 403),
              (status = 409, description = "Another server has this name")))]
async fn create_server(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Json(spec): V1Json<ServerSpec>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    let s = st.lodge.create_server(&spec).await?;
    Ok((StatusCode::CREATED, Json(server(s, spec.plan_ids))))
}

/// Updates a server: the fields sent replace the stored ones; those left out (credentials
/// included) are kept.
// Before, a field left out took its default (found by the operator audit: setting `node`
// cleared the nameservers, made the capacity unlimited and reopened a deactivated server).
#[utoipa::path(put, path = "/v1/admin/servers/{server_id}", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "Server UUID")),
    request_body = ServerUpdate,
    responses((status = 200, body = Server), (status = 400), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Another server has this name")))]
async fn update_server(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
    V1Json(u): V1Json<ServerUpdate>,
) -> ApiResult<Json<Server>> {
    let id: ServerId = path_id(&id)?;
    let (s, plan_ids) = st.lodge.patch_server(id, u).await?;
    Ok(Json(server(s, plan_ids)))
}

/// Deactivates a server: nothing new is placed on it.
#[utoipa::path(post, path = "/v1/admin/servers/{server_id}/deactivate", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "Server UUID")),
    responses((status = 200, body = Server), (status = 401), (status = 403), (status = 404)))]
async fn deactivate_server(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Server>> {
    let id: ServerId = path_id(&id)?;
    let s = st.lodge.deactivate_server(id).await?;
    let plans = st.lodge.server_plan_ids(id).await?;
    Ok(Json(server(s, plans)))
}

/// Checks a server: connects, logs in with its credentials, checks its pinned certificate.
/// `ok: false` with the reason (wrong token, certificate mismatch, timeout, …).
#[utoipa::path(post, path = "/v1/admin/servers/{server_id}/test", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "Server UUID")),
    responses((status = 200, body = lodge_services::servers::ServerCheck), (status = 401), (status = 403), (status = 404)))]
async fn test_server(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<lodge_services::servers::ServerCheck>> {
    let id: ServerId = path_id(&id)?;
    Ok(Json(st.lodge.test_server(id).await?))
}

async fn hosting_view(st: &AppState, id: HostingId) -> ApiResult<Hosting> {
    let view = st.lodge.staff_hosting(id).await?;
    Ok(Hosting::from_view(view, &*st.lodge.catalog().await?))
}

/// Any hosting account, with its history.
#[utoipa::path(get, path = "/v1/admin/hosting/{hosting_id}", tag = "admin", operation_id = "admin_get_hosting", security(("bearer" = [])),
    params(("hosting_id" = String, Path, description = "Hosting UUID")),
    responses((status = 200, body = Hosting), (status = 401), (status = 403), (status = 404)))]
async fn get_hosting(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Hosting>> {
    let id: HostingId = path_id(&id)?;
    Ok(Json(hosting_view(&st, id).await?))
}

/// The optional body of a staff action on an account.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffAction {
    /// Why (at most 500 characters): the note of the account's history entry, which its
    /// customer sees too.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HostingSearch {
    /// The account's domain name, exactly (any case).
    pub domain: Option<String>,
    /// The organization's UUID.
    pub organization_id: Option<String>,
    /// `pending`, `provisioning`, `active`, `suspended`, `failed`, `cancelled` or
    /// `terminated`.
    pub status: Option<String>,
    /// Only accounts older than this `legacy_id` (the next page: the last one's).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before: Option<String>,
    /// At most this many (default 100; a larger number is taken as 500).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
}

/// Staff's search of every organization's accounts (by domain, organization, status),
/// newest first, without their history (`GET /v1/admin/hosting/{id}` has it); the next page
/// is `before` the last one's `legacy_id`.
#[utoipa::path(get, path = "/v1/admin/hosting", tag = "admin", operation_id = "admin_find_hosting", security(("bearer" = [])),
    params(HostingSearch),
    responses((status = 200, body = Vec<Hosting>), (status = 400), (status = 401), (status = 403)))]
async fn find_hosting(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<HostingSearch>,
) -> ApiResult<Json<Vec<Hosting>>> {
    let organization = q
        .organization_id
        .as_deref()
        .map(|o| {
            o.trim()
                .parse::<lodge_core::OrganizationId>()
                .map_err(|_| ServiceError::field("organization_id", "An organization's UUID."))
        })
        .transpose()?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            lodge_core::HostingStatus::parse(s.trim()).ok_or_else(|| {
                ServiceError::field(
                    "status",
                    "One of pending, provisioning, active, suspended, failed, cancelled or terminated.",
                )
            })
        })
        .transpose()?;
    let limit = super::admin_webhooks::positive("limit", q.limit.as_deref())?
        .unwrap_or(100)
        .min(500);
    let before = super::admin_webhooks::positive("before", q.before.as_deref())?;
    let rows = st
        .lodge
        .staff_find_hosting(q.domain.as_deref(), organization, status, before, limit)
        .await?;
    let catalog = st.lodge.catalog().await?;
    Ok(Json(
        rows.into_iter()
            .map(|h| Hosting::new(h, &catalog, None))
            .collect(),
    ))
}

async fn act(
    st: &AppState,
    staff: &lodge_services::auth::Principal,
    id: &str,
    action: &str,
    body: &[u8],
) -> ApiResult<(StatusCode, Json<Hosting>)> {
    let id: HostingId = path_id(id)?;
    // No body is `{}`; a field the action does not take is refused (found by the operator
    // audit: a reason sent was dropped without a word).
    let asked: StaffAction =
        if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
            StaffAction::default()
        } else {
            parse_json(body)?
        };
    let reason = asked
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    // The customer sees it in the account's history: no control characters but line
    // breaks, no bidi overrides (found by the staff audit: BEL and U+202E were kept).
    let mut v = lodge_services::Validator::new();
    if let Some(r) = reason {
        v.text("reason", r, 500);
    }
    v.finish()?;
    st.lodge
        .admin_hosting(id, action, &format!("staff:{}", staff.user), reason)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(hosting_view(st, id).await?)))
}

/// Suspends an active account (the worker does it on the server).
#[utoipa::path(post, path = "/v1/admin/hosting/{hosting_id}/suspend", tag = "admin", security(("bearer" = [])),
    params(("hosting_id" = String, Path, description = "Hosting UUID")),
    request_body(content = Option<StaffAction>, description = "Optional: why (recorded in the account's history)"),
    responses((status = 202, body = Hosting), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn suspend(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Body(body): V1Body,
) -> ApiResult<(StatusCode, Json<Hosting>)> {
    act(&st, &staff, &id, "suspend", &body).await
}

/// Unsuspends a suspended account.
#[utoipa::path(post, path = "/v1/admin/hosting/{hosting_id}/unsuspend", tag = "admin", security(("bearer" = [])),
    params(("hosting_id" = String, Path, description = "Hosting UUID")),
    request_body(content = Option<StaffAction>, description = "Optional: why (recorded in the account's history)"),
    responses((status = 202, body = Hosting), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn unsuspend(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Body(body): V1Body,
) -> ApiResult<(StatusCode, Json<Hosting>)> {
    act(&st, &staff, &id, "unsuspend", &body).await
}

/// Terminates an account (its files are archived by the driver).
#[utoipa::path(post, path = "/v1/admin/hosting/{hosting_id}/terminate", tag = "admin", security(("bearer" = [])),
    params(("hosting_id" = String, Path, description = "Hosting UUID")),
    request_body(content = Option<StaffAction>, description = "Optional: why (recorded in the account's history)"),
    responses((status = 202, body = Hosting), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn terminate(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Body(body): V1Body,
) -> ApiResult<(StatusCode, Json<Hosting>)> {
    act(&st, &staff, &id, "terminate", &body).await
}

/// Retries provisioning of a failed account.
#[utoipa::path(post, path = "/v1/admin/hosting/{hosting_id}/retry", tag = "admin", security(("bearer" = [])),
    params(("hosting_id" = String, Path, description = "Hosting UUID")),
    request_body(content = Option<StaffAction>, description = "Optional: why (recorded in the account's history)"),
    responses((status = 202, body = Hosting), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn retry(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    V1Body(body): V1Body,
) -> ApiResult<(StatusCode, Json<Hosting>)> {
    act(&st, &staff, &id, "retry", &body).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    /// `queued`, `running`, `done`, `dead`.
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    #[schema(format = DateTime)]
    pub run_at: String,
    pub locked_by: Option<String>,
    pub locked_until: Option<String>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub modified: String,
}

/// A job as the staff API shows it (`lodge jobs` prints the same).
pub fn job(j: JobRow) -> Job {
    Job {
        id: j.id,
        kind: j.kind,
        payload: serde_json::from_str(&j.payload).unwrap_or_default(),
        status: j.status.as_str().to_owned(),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        run_at: ts(j.run_at),
        locked_by: j.locked_by,
        locked_until: ts_opt(j.locked_until),
        last_error: j.last_error,
        created: ts(j.created_at),
        modified: ts(j.modified_at),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// `dead` (default), `queued`, `running` or `done`.
    #[param(pattern = "^(queued|running|done|dead)$")]
    pub status: Option<String>,
    /// Only jobs older than this job id (the next page: the last one's `id`).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before: Option<String>,
    /// At most this many (default and most: 500).
    #[param(value_type = Option<i64>, minimum = 1)]
    pub limit: Option<String>,
}

/// Jobs by status (dead ones by default), newest first, 500 at most a page: the next page is
/// `before` the last one's `id`.
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobQuery),
    responses((status = 200, body = Vec<Job>), (status = 401), (status = 403)))]
async fn list_jobs(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<JobQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    let status = match q.status.as_deref() {
        None => JobStatus::Dead,
        Some(s) => JobStatus::parse(s).ok_or_else(|| {
            ServiceError::field("status", "One of queued, running, done or dead.")
        })?,
    };
    let before = super::admin_webhooks::positive("before", q.before.as_deref())?;
    let limit = super::admin_webhooks::positive("limit", q.limit.as_deref())?
        .unwrap_or(500)
        .min(500);
    Ok(Json(
        st.lodge
            .jobs_with_status(status, before, limit)
            .await?
            .into_iter()
            .map(job)
            .collect(),
    ))
}

/// Puts a dead job back in the queue with fresh attempts (a failed account goes back to
/// provisioning), or has a job waiting to be tried again after a failure (its backoff grows
/// to an hour) tried now, its attempts kept. Any other job (running, done, or queued for a
/// time of its own) is `409`.
#[utoipa::path(post, path = "/v1/admin/jobs/{job_id}/retry", tag = "admin", security(("bearer" = [])),
    params(("job_id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn retry_job(
    State(st): State<AppState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let id: i64 = path_id(&id)?;
    let j = st
        .lodge
        .retry_job(id, &format!("staff:{}", staff.user))
        .await?;
    Ok(Json(job(j)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// Days from today to look ahead (default 30, at most 366).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 366)]
    pub days: Option<String>,
}

/// What the scheduler will do in the next days if nothing is paid meanwhile: renewal
/// invoices to issue, suspensions and terminations; with today's overdue renewal invoices
/// and suspended accounts. Writes nothing (`lodge billing preview` prints the same).
#[utoipa::path(get, path = "/v1/admin/billing/preview", tag = "admin", security(("bearer" = [])),
    params(PreviewQuery),
    responses((status = 200, body = lodge_services::renewals::Preview), (status = 400),
              (status = 401), (status = 403)))]
async fn billing_preview(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    V1Query(q): V1Query<PreviewQuery>,
) -> ApiResult<Json<lodge_services::renewals::Preview>> {
    let days = match q.days.as_deref() {
        None => 30,
        Some(d) => d.trim().parse::<i64>().map_err(|_| {
            ServiceError::field("days", "The number of days is a whole number (0 to 366).")
        })?,
    };
    Ok(Json(st.lodge.billing_preview(days).await?))
}

/// Sends a notice of the mail log again (the customer did not get it): a new mail job for
/// its event, to the organization's owner as it is now, with a Message-ID and a log row of
/// its own. One copy waits at a time. A notice asking for the payment of an invoice that
/// is no longer unpaid is refused (its receipt can be sent again).
#[utoipa::path(post, path = "/v1/admin/mail/{mail_id}/resend", tag = "admin", security(("bearer" = [])),
    params(("mail_id" = i64, Path, description = "The message's id in the mail log")),
    responses((status = 202, description = "The mail job of the copy", body = Job), (status = 401), (status = 403), (status = 404),
              (status = 409, description = "Mail is off, a copy of the message is already waiting, the message itself is still queued or retrying, or it asks for the payment of an invoice no longer unpaid")))]
async fn resend_mail(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let id: i64 = path_id(&id)?;
    let j = st.lodge.resend_mail(id).await?;
    Ok((StatusCode::ACCEPTED, Json(job(j))))
}

/// One message of the mail log.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailMessage {
    pub id: i64,
    pub message_id: String,
    /// The event it tells of (`evt_…`), and the job that sent it.
    pub event_id: Option<String>,
    pub job_id: Option<i64>,
    /// The notice (`invoice_created`, `hosting_suspended`, …, `test`).
    pub notice: String,
    pub to: String,
    pub subject: String,
    /// `sending`, `sent`, `failed` (retried by its job), `unknown` (the connection broke
    /// mid-send) or `skipped` (nothing to send it to).
    pub status: String,
    pub attempts: i64,
    /// Sent again after an attempt whose outcome was unknown: the recipient may have it
    /// twice (with one Message-ID).
    pub possible_duplicate: bool,
    pub last_error: Option<String>,
    /// The SMTP server's answer to the message.
    pub smtp_response: Option<String>,
    pub sent: Option<String>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub modified: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MailQuery {
    /// Only messages of this status.
    #[param(pattern = "^(sending|sent|failed|unknown|skipped)$")]
    pub status: Option<String>,
}

/// What [`list_mail`] takes: its filter and the page.
pub struct MailParams;
impl crate::extract::KnownParams for MailParams {
    const NAMES: &'static [&'static str] = &["status", "page", "page_size"];
}

/// The mail Lodge sent or tried to send, newest first: to whom, what, and how it went.
#[utoipa::path(get, path = "/v1/admin/mail", tag = "admin", security(("bearer" = [])),
    params(MailQuery, crate::extract::PageQuery),
    responses((status = 200, body = crate::extract::Paginated<MailMessage>), (status = 400), (status = 401), (status = 403)))]
async fn list_mail(
    State(st): State<AppState>,
    Staff(_staff): Staff,
    _: crate::extract::OnlyParams<MailParams>,
    V1Query(f): V1Query<MailQuery>,
    axum::extract::Query(q): axum::extract::Query<crate::extract::PageQuery>,
) -> ApiResult<Json<crate::extract::Paginated<MailMessage>>> {
    let req = q.resolve()?;
    let (rows, count) = st
        .lodge
        .mail_log(f.status.as_deref(), req.limit(), req.offset())
        .await?;
    let results = rows
        .into_iter()
        .map(|m| MailMessage {
            id: m.id,
            message_id: m.message_id,
            event_id: m.event_id,
            job_id: m.job_id,
            notice: m.notice,
            to: m.to_address,
            subject: m.subject,
            status: m.status,
            attempts: m.attempts,
            possible_duplicate: m.possible_duplicate,
            last_error: m.last_error,
            smtp_response: m.smtp_response,
            sent: ts_opt(m.sent_at),
            created: ts(m.created_at),
            modified: ts(m.modified_at),
        })
        .collect();
    Ok(Json(crate::extract::Paginated::new(
        &st,
        &crate::extract::with_filters("/v1/admin/mail", &[("status", f.status.as_deref())]),
        req,
        count,
        results,
    )?))
}
