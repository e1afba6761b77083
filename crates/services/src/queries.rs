//! Read models for the dialects: pages of an organization's hosting accounts, domains,
//! invoices and API keys, a hosting account with its server and history, the payment page,
//! readiness. Each read is scoped by the caller's [`Access`] (or is staff-only, or reached by
//! an unguessable token): one organization never sees another's rows, it gets `NotFound`.

use std::collections::BTreeMap;

use lodge_core::{HostingId, OrganizationId, ProjectId, ServerId, UserId};
use lodge_store::{billing, hosting, keys, orgs, servers};

use crate::auth::Access;
use crate::billing::InvoiceDetail;
use crate::model::{
    ApiKeyRow, DomainRow, HistoryRow, HostingRow, InvoiceRow, OrgRow, ProjectRow, ServerRow,
};
use crate::{Lodge, Result, ServiceError};

/// One page of rows and how many rows there are in all.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub count: i64,
}

/// A hosting account with what its views show: the server it is on and, on the detail, its
/// status history (oldest first).
#[derive(Debug, Clone)]
pub struct HostingView {
    pub hosting: HostingRow,
    pub server: Option<ServerRow>,
    pub history: Option<Vec<HistoryRow>>,
}

/// What the hosted payment page shows: the invoice and its organization's credit.
#[derive(Debug, Clone)]
pub struct PayPage {
    pub detail: InvoiceDetail,
    /// The organization's account credit.
    pub credit_balance_minor: i64,
    /// What is due now (nothing on an invoice that is no longer unpaid).
    pub due_minor: i64,
    /// Whether the credit covers what is due.
    pub can_pay_from_credit: bool,
}

/// How paying an invoice from account credit on its payment page went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePayment {
    Paid,
    /// The credit does not cover what is due; nothing was paid.
    InsufficientCredit,
    /// The invoice can no longer be paid (it is paid, cancelled, …).
    Closed,
}

/// What is due on an invoice now: its amount due while it is unpaid, else nothing.
pub fn due_now(i: &InvoiceRow) -> i64 {
    if i.status == lodge_core::InvoiceStatus::Unpaid {
        i.amount_due()
    } else {
        0
    }
}

/// `NotFound` unless `project` belongs to the organization `access` is for.
fn own_project(access: &Access, project: &ProjectRow) -> Result<()> {
    if project.organization_id == access.organization {
        Ok(())
    } else {
        Err(ServiceError::NotFound)
    }
}

impl Lodge {
    /// Readiness: the database answers.
    pub async fn ready(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// The server a hosting account is on, if it has one.
    async fn server_of(&self, h: &HostingRow) -> Result<Option<ServerRow>> {
        let Some(id) = h
            .server_id
            .as_deref()
            .and_then(|s| s.parse::<ServerId>().ok())
        else {
            return Ok(None);
        };
        Ok(servers::by_id(self.store.reader(), id).await?)
    }

    /// A page of a project's hosting accounts with their servers. `project` is the one the
    /// caller's project access check returned.
    pub async fn project_hosting(
        &self,
        access: &Access,
        project: &ProjectRow,
        limit: i64,
        offset: i64,
    ) -> Result<Page<HostingView>> {
        own_project(access, project)?;
        let (rows, count) = hosting::hosting_page(
            self.store.reader(),
            access.organization,
            Some(project.id),
            limit,
            offset,
        )
        .await?;
        // Accounts share servers: each is read once per page.
        let mut seen: BTreeMap<Option<String>, Option<ServerRow>> = BTreeMap::new();
        let mut views = Vec::with_capacity(rows.len());
        for h in rows {
            let server = match seen.get(&h.server_id) {
                Some(s) => s.clone(),
                None => {
                    let s = self.server_of(&h).await?;
                    seen.insert(h.server_id.clone(), s.clone());
                    s
                }
            };
            views.push(HostingView {
                hosting: h,
                server,
                history: None,
            });
        }
        Ok(Page { rows: views, count })
    }

    /// A hosting account of the caller's organization and project, with its server and
    /// history.
    pub async fn hosting_detail(
        &self,
        access: &Access,
        project: ProjectId,
        id: HostingId,
    ) -> Result<HostingView> {
        let h = self.org_hosting(access, Some(project), id).await?;
        self.hosting_view(h).await
    }

    /// Any hosting account, with its server and history (staff).
    /// Staff: accounts of every organization by domain name (exact, any case), organization
    /// and status, newest first, at most `limit`.
    pub async fn staff_find_hosting(
        &self,
        domain: Option<&str>,
        organization: Option<lodge_core::OrganizationId>,
        status: Option<lodge_core::HostingStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<HostingRow>> {
        // In the form orders store (ASCII, IDNA), so a name typed in Unicode is found too;
        // text that is no domain name is compared as typed, and finds nothing.
        let domain = domain
            .map(|d| {
                let d = d.trim().trim_end_matches('.');
                lodge_core::DomainName::parse(d)
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_else(|_| d.to_lowercase())
            })
            .unwrap_or_default();
        Ok(hosting::search(
            self.store.reader(),
            &domain,
            &organization.map(|o| o.to_string()).unwrap_or_default(),
            status.map_or("", |s| s.as_str()),
            before,
            limit,
        )
        .await?)
    }

    pub async fn staff_hosting(&self, id: HostingId) -> Result<HostingView> {
        let h = hosting::hosting(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.hosting_view(h).await
    }

    async fn hosting_view(&self, h: HostingRow) -> Result<HostingView> {
        let history = self.hosting_history(h.id).await?;
        let server = self.server_of(&h).await?;
        Ok(HostingView {
            hosting: h,
            server,
            history: Some(history),
        })
    }

    /// A page of a project's domains. `project` is the one the caller's project access check
    /// returned.
    pub async fn project_domains(
        &self,
        access: &Access,
        project: &ProjectRow,
        limit: i64,
        offset: i64,
    ) -> Result<Page<DomainRow>> {
        own_project(access, project)?;
        let (rows, count) = hosting::domains_page(
            self.store.reader(),
            access.organization,
            project.id,
            limit,
            offset,
        )
        .await?;
        Ok(Page { rows, count })
    }

    /// A page of the organization's invoices, newest first.
    pub async fn org_invoices(
        &self,
        access: &Access,
        limit: i64,
        offset: i64,
    ) -> Result<Page<InvoiceRow>> {
        access.require_org_wide()?;
        let (rows, count) = billing::invoices_page(
            self.store.reader(),
            access.organization,
            None,
            limit,
            offset,
        )
        .await?;
        Ok(Page { rows, count })
    }

    /// A page of the organization's API keys (owners only).
    pub async fn org_api_keys(
        &self,
        access: &Access,
        limit: i64,
        offset: i64,
    ) -> Result<Page<ApiKeyRow>> {
        access.require_owner()?;
        let (rows, count) =
            keys::page_for_org(self.store.reader(), access.organization, limit, offset).await?;
        Ok(Page { rows, count })
    }

    /// Any organization (staff).
    pub async fn staff_organization(&self, org: OrganizationId) -> Result<OrgRow> {
        orgs::by_id(self.store.reader(), org)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// The plans a server is reserved for (staff).
    pub async fn server_plan_ids(&self, id: ServerId) -> Result<Vec<String>> {
        Ok(servers::plans_of(self.store.reader(), id).await?)
    }

    /// The organizations a user belongs to (the user's own, as after a login).
    pub async fn user_organizations(&self, user: UserId) -> Result<Vec<OrgRow>> {
        Ok(orgs::for_user(self.store.reader(), user).await?)
    }

    /// Pays the invoice with this token in full from its organization's account credit (the
    /// payment page's button). `NotFound` for an unknown token.
    pub async fn pay_page_from_credit(&self, token: &str) -> Result<PagePayment> {
        let id = self.invoice_by_token(token).await?.invoice.id;
        match self
            .pay_from_credit(&[id], &format!("payment-page:{id}"))
            .await
        {
            Ok(()) => Ok(PagePayment::Paid),
            // Refused inside the payment's transaction: the credit fell short, or the
            // invoice is no longer unpaid.
            Err(ServiceError::InsufficientCredit(_)) => Ok(PagePayment::InsufficientCredit),
            Err(ServiceError::Conflict(_)) => Ok(PagePayment::Closed),
            Err(e) => Err(e),
        }
    }

    /// The payment page of the invoice with this token: `NotFound` for an unknown token.
    pub async fn payment_page(&self, token: &str) -> Result<PayPage> {
        let detail = self.invoice_by_token(token).await?;
        let org = orgs::by_id(self.store.reader(), detail.invoice.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let due = due_now(&detail.invoice);
        Ok(PayPage {
            credit_balance_minor: org.credit_balance_minor,
            due_minor: due,
            can_pay_from_credit: due > 0 && org.credit_balance_minor >= due,
            detail,
        })
    }
}
