//! Hosting accounts and domains as customers see and manage them.

use lodge_core::{DomainId, HostingId, ProjectId};
use lodge_store::hosting::{self, DomainRow, HistoryRow, HostingRow};
use lodge_store::StoreError;

use crate::auth::Access;
use crate::billing::JOB_TERMINATE;
use crate::{Lodge, Result, ServiceError};

/// How a customer cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelType {
    Immediate,
    EndOfPeriod,
}

impl CancelType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "immediate" => Some(CancelType::Immediate),
            "end_of_period" => Some(CancelType::EndOfPeriod),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CancelType::Immediate => "immediate",
            CancelType::EndOfPeriod => "end_of_period",
        }
    }
}

impl Lodge {
    /// A hosting account of the caller's organization (and project, when given).
    pub async fn org_hosting(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
    ) -> Result<HostingRow> {
        hosting::hosting(self.store.reader(), id)
            .await?
            .filter(|h| h.organization_id == access.organization)
            .filter(|h| project.is_none_or(|p| h.project_id == p))
            .ok_or(ServiceError::NotFound)
    }

    pub async fn hosting_history(&self, id: HostingId) -> Result<Vec<HistoryRow>> {
        Ok(hosting::history(self.store.reader(), id).await?)
    }

    /// Requests cancellation. A never-paid account is cancelled at once with its order and
    /// invoice; a paid one either ends now (terminated by the worker) or at the end of its
    /// paid period. `Conflict` when it is already cancelled or a cancellation is pending.
    pub async fn cancel_hosting(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
        kind: CancelType,
        reason: &str,
    ) -> Result<HostingRow> {
        access.require_write()?;
        let h = self.org_hosting(access, project, id).await?;
        if reason.chars().count() > 1000 {
            return Err(ServiceError::field("reason", "At most 1000 characters."));
        }
        if ["cancelled", "terminated"].contains(&h.status.as_str()) {
            return Err(ServiceError::Conflict(format!(
                "This hosting account is {}.",
                h.status
            )));
        }
        if h.cancel_type.is_some() {
            return Err(ServiceError::Conflict(
                "A cancellation has already been requested.".into(),
            ));
        }
        let actor = format!("user:{}", access.principal().user);
        let now = self.now_us();
        let today = self.today().to_string();
        let mut tx = self.store.begin().await?;
        if h.status == "pending" {
            // Paid in the meantime: the customer must ask again, now for a paid account.
            if !self
                .cancel_pending_order(&mut tx, h.order_id, reason, &actor)
                .await?
            {
                return Err(ServiceError::Conflict(
                    "This order was paid meanwhile; ask again to cancel the paid account.".into(),
                ));
            }
            hosting::set_cancellation(
                &mut tx,
                id,
                Some(kind.as_str()),
                Some(reason),
                Some(now),
                Some(&today),
                now,
            )
            .await?;
        } else {
            let effective = match kind {
                CancelType::Immediate => today,
                CancelType::EndOfPeriod => h.next_due_date.clone().unwrap_or(today),
            };
            hosting::set_cancellation(
                &mut tx,
                id,
                Some(kind.as_str()),
                Some(reason),
                Some(now),
                Some(&effective),
                now,
            )
            .await?;
            if kind == CancelType::Immediate {
                self.enqueue(
                    &mut tx,
                    JOB_TERMINATE,
                    serde_json::json!({ "hosting_id": id, "reason": "cancelled" }),
                    &format!("terminate:{id}"),
                )
                .await?;
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.org_hosting(access, project, id).await
    }

    /// Withdraws a pending end-of-period cancellation.
    pub async fn revoke_cancellation(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
    ) -> Result<HostingRow> {
        access.require_write()?;
        let h = self.org_hosting(access, project, id).await?;
        if h.cancel_type.is_none() {
            return Err(ServiceError::Conflict("No cancellation is pending.".into()));
        }
        // An immediate cancellation has its termination enqueued already.
        if h.cancel_type.as_deref() == Some(CancelType::Immediate.as_str()) {
            return Err(ServiceError::Conflict(
                "An immediate cancellation cannot be withdrawn.".into(),
            ));
        }
        if ["cancelled", "terminated"].contains(&h.status.as_str()) {
            return Err(ServiceError::Conflict(format!(
                "This hosting account is already {}.",
                h.status
            )));
        }
        let mut tx = self.store.begin().await?;
        hosting::set_cancellation(&mut tx, id, None, None, None, None, self.now_us()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.org_hosting(access, project, id).await
    }

    pub async fn project_domain(
        &self,
        access: &Access,
        project: ProjectId,
        id: DomainId,
    ) -> Result<DomainRow> {
        hosting::domain(self.store.reader(), id)
            .await?
            .filter(|d| d.organization_id == access.organization && d.project_id == project)
            .ok_or(ServiceError::NotFound)
    }

    pub async fn set_auto_renew(
        &self,
        access: &Access,
        project: ProjectId,
        id: DomainId,
        on: bool,
    ) -> Result<DomainRow> {
        access.require_write()?;
        self.project_domain(access, project, id).await?;
        let mut tx = self.store.begin().await?;
        hosting::set_auto_renew(&mut tx, id, on, self.now_us()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.project_domain(access, project, id).await
    }

    /// Staff mark a registration or transfer done (the `manual` registrar's completion).
    pub async fn complete_domain(
        &self,
        id: DomainId,
        years: u32,
        nameservers: &[String],
    ) -> Result<DomainRow> {
        if !(1..=10).contains(&years) {
            return Err(ServiceError::field("years", "Between 1 and 10."));
        }
        let today = self.today();
        let expires = lodge_core::dates::add_months(today, years * 12);
        let ns = serde_json::to_string(nameservers)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut tx = self.store.begin().await?;
        let done = hosting::activate_domain(
            &mut tx,
            id,
            &today.to_string(),
            &expires.to_string(),
            &ns,
            self.now_us(),
        )
        .await?;
        if !done {
            let exists = hosting::domain(&mut *tx, id).await?;
            return Err(match exists {
                None => ServiceError::NotFound,
                Some(d) => ServiceError::Conflict(format!("This domain is {}.", d.status)),
            });
        }
        let row = hosting::domain(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(row)
    }
}
