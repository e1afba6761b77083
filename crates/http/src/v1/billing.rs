//! Invoices and account credit of an organization.

use axum::extract::{Query, State};
use axum::Json;
use lodge_core::{Currency, OrganizationId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::V1Path as Path;
use crate::extract::{path_id, Caller, PageQuery, Paginated};
use crate::wire::{money_str, Invoice, LedgerEntry};
use crate::AppState;

/// The organization's invoices, newest first.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/invoices", tag = "billing",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"), PageQuery),
    responses((status = 200, body = Paginated<Invoice>), (status = 401),
              (status = 403, description = "A guest: the organization's billing is not its"), (status = 404)))]
pub async fn list_invoices(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paginated<Invoice>>> {
    let org: OrganizationId = path_id(&org)?;
    let access = st.lodge.access(&p, org).await?;
    let req = q.resolve()?;
    let page = st
        .lodge
        .org_invoices(&access, req.limit(), req.offset())
        .await?;
    let path = format!("/v1/organizations/{org}/invoices");
    Ok(Json(Paginated::new(
        &st,
        &path,
        req,
        page.count,
        page.rows
            .iter()
            .map(|i| {
                Invoice::new(
                    i,
                    &st.public_base_url,
                    st.lodge.sealer.payment_tokens(),
                    None,
                )
            })
            .collect(),
    )?))
}

/// One invoice with its lines, payments and payment link.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/invoices/{invoice_id}", tag = "billing",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"),
           ("invoice_id" = i64, Path, description = "Invoice id")),
    responses((status = 200, body = Invoice), (status = 401),
              (status = 403, description = "A guest: the organization's billing is not its"), (status = 404)))]
pub async fn get_invoice(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<Invoice>> {
    let org: OrganizationId = path_id(&org)?;
    let id: i64 = path_id(&id)?;
    let access = st.lodge.access(&p, org).await?;
    let d = st.lodge.org_invoice(&access, id).await?;
    Ok(Json(Invoice::detailed(
        d,
        &st.public_base_url,
        st.lodge.sealer.payment_tokens(),
    )))
}

/// Account credit: the balance and the ledger (newest first, paginated).
#[derive(Debug, Serialize, ToSchema)]
pub struct Credit {
    pub balance: String,
    pub currency: String,
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<LedgerEntry>,
}

/// The organization's account credit and its ledger.
#[utoipa::path(get, path = "/v1/organizations/{organization_id}/credit", tag = "billing",
    security(("bearer" = [])),
    params(("organization_id" = String, Path, description = "Organization UUID"), PageQuery),
    responses((status = 200, body = Credit), (status = 401),
              (status = 403, description = "A guest: the organization's billing is not its"), (status = 404)))]
pub async fn get_credit(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path(org): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Credit>> {
    let org: OrganizationId = path_id(&org)?;
    let access = st.lodge.access(&p, org).await?;
    let req = q.resolve()?;
    let (balance, rows, count) = st.lodge.credit(&access, req.limit(), req.offset()).await?;
    let cur: Currency = st.lodge.settings.currency;
    let path = format!("/v1/organizations/{org}/credit");
    let page = Paginated::new(
        &st,
        &path,
        req,
        count,
        rows.iter().map(LedgerEntry::new).collect(),
    )
    .map_err(|e: ApiError| e)?;
    Ok(Json(Credit {
        balance: money_str(balance, cur),
        currency: cur.code().to_owned(),
        count: page.count,
        next: page.next,
        previous: page.previous,
        results: page.results,
    }))
}
