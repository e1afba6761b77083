//! Hosting accounts and domains as customers see and manage them.

use lodge_core::{
    CancelKind, CancelPlan, DomainId, DomainStatus, HostingId, HostingStatus, ProjectId,
};
use lodge_store::hosting::{self, DomainRow, HistoryRow, HostingRow};
use lodge_store::{billing, StoreError};

use crate::auth::Access;
use crate::billing::JOB_TERMINATE;
use crate::idempotency::IdempotencyKey;
use crate::{Lodge, Result, ServiceError};

/// A cancellation accepted: the account, and the day it takes effect (today, or the end
/// of its paid period).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cancellation {
    pub hosting_id: HostingId,
    pub effective_date: String,
}

/// How a customer cancels (the lifecycle's [`CancelKind`]).
pub type CancelType = CancelKind;

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
    /// paid period ([`CancelKind::plan`]). The account's status and pending cancellation are
    /// read under its lock, in the transaction that changes them: of concurrent requests
    /// exactly one is accepted, the others are a `Conflict`. The locks are taken in the
    /// money paths' order (the organization, the order's invoices, the order, the account),
    /// so a cancellation racing a payment of the same order never deadlocks.
    pub async fn cancel_hosting(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
        kind: CancelKind,
        reason: &str,
    ) -> Result<HostingRow> {
        self.cancel_hosting_keyed(access, project, id, |_| kind, reason, None)
            .await?;
        self.org_hosting(access, project, id).await
    }

    /// [`Lodge::cancel_hosting`] in one transaction, under an `Idempotency-Key` when `key`
    /// is given: its claim (after the organization's lock), the cancellation and the
    /// outcome stored under it commit together. The caller replays through
    /// [`Lodge::keyed`]. `kind` chooses the cancellation from the account as locked (a
    /// website's rule depends on whether it is paid, which a payment may change until then:
    /// found by the money audit, a website paid and cancelled at once was terminated).
    pub(crate) async fn cancel_hosting_keyed(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
        kind: impl Fn(&HostingRow) -> CancelKind,
        reason: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Cancellation> {
        access.require_write()?;
        let seen = self.org_hosting(access, project, id).await?;
        let mut v = crate::errors::Validator::new();
        v.text("reason", reason, 1000);
        v.finish()?;
        let actor = access.actor();
        let now = self.now_us();
        let today = self.today().to_string();
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, seen.organization_id).await?;
        if let Some(key) = key {
            self.claim_key_in(&mut tx, key).await?;
        }
        for inv in billing::invoices_of_order(&mut *tx, seen.order_id).await? {
            billing::lock_invoice(&mut tx, inv.id).await?;
        }
        billing::lock_order(&mut tx, seen.order_id).await?;
        let h = hosting::lock_hosting(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let kind = kind(&h);
        // Asked of an unpaid order, which was paid meanwhile: what was asked no longer
        // applies (ending a paid account at once keeps its money), so the caller looks again.
        // Cancelled meanwhile (its invoice deleted), it is refused below as any cancelled
        // account is: it was not paid (found by the customer audit).
        if kind == CancelKind::Immediate
            && seen.status == HostingStatus::Pending
            && !matches!(
                h.status,
                HostingStatus::Pending | HostingStatus::Cancelled | HostingStatus::Terminated
            )
        {
            return Err(paid_meanwhile());
        }
        let plan = kind
            .plan(h.status, h.cancel_kind())
            .map_err(|refusal| ServiceError::Conflict(refusal.to_string()))?;
        // The account's history says who asked (its cancellation row keeps no actor;
        // found by the staff audit: a cancellation staff asked for left no trace of it).
        // An unpaid order's account is cancelled at once, and that transition is noted.
        let asked = match plan {
            CancelPlan::CancelUnpaidOrder => None,
            CancelPlan::TerminateNow => Some("cancellation requested: ends now".to_owned()),
            CancelPlan::AtPeriodEnd => Some(format!(
                "cancellation requested: ends {}",
                h.next_due_date.as_deref().unwrap_or(&today)
            )),
        };
        if let Some(note) = &asked {
            lodge_store::plan_change::note_history(&mut *tx, id, h.status, note, &actor, now)
                .await?;
        }
        let effective = match plan {
            CancelPlan::CancelUnpaidOrder => {
                if !self
                    .cancel_pending_order(&mut tx, h.organization_id, h.order_id, reason, &actor)
                    .await?
                {
                    return Err(paid_meanwhile());
                }
                today
            }
            CancelPlan::TerminateNow => {
                // A termination queued already (staff's, an overdue renewal's) ends it: a
                // second at once would archive and drop the same files and database.
                if !crate::billing::termination_waiting(&mut tx, &id.to_string()).await? {
                    self.enqueue(
                        &mut tx,
                        JOB_TERMINATE,
                        serde_json::json!({ "hosting_id": id, "reason": "cancelled" }),
                        &crate::billing::terminate_key(id, &format!("cancel:{now}")),
                    )
                    .await?;
                }
                // Its unpaid renewals and a plan change waiting for its invoice end with it,
                // in this transaction: paid between now and the termination, they took the
                // customer's money for an account that was ending (found by the money audit).
                let ctx = self.write_ctx(&actor);
                crate::renewals::release_unpaid_in(
                    &ctx,
                    &mut tx,
                    &id.to_string(),
                    "plan",
                    "Account cancelled: period not billed",
                )
                .await?;
                crate::plan_change::release_awaiting_change_in(&mut tx, id, &actor, now).await?;
                today
            }
            CancelPlan::AtPeriodEnd => h.next_due_date.clone().unwrap_or(today),
        };
        hosting::set_cancellation(
            &mut tx,
            id,
            Some(kind),
            Some(reason),
            Some(now),
            Some(&effective),
            now,
        )
        .await?;
        // A paid account's cancellation is told (an unpaid order's by `order.cancelled`).
        if let Some(note) = &asked {
            crate::events::hosting_event_with(
                &mut *tx,
                crate::events::EventKind::HostingCancellationRequested,
                id,
                (note, &actor),
                serde_json::json!({
                    "type": kind.as_str(),
                    "effective_date": effective,
                    "reason": reason,
                }),
                now,
            )
            .await?;
        }
        let done = Cancellation {
            hosting_id: id,
            effective_date: effective,
        };
        if let Some(key) = key {
            self.answer_key_in(&mut tx, key, &done).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(done)
    }

    /// Withdraws a pending end-of-period cancellation, checked under the account's lock (of
    /// concurrent withdrawals one is accepted).
    ///
    /// Refused to the customer once staff gave back anything of an invoice that billed the
    /// account after the cancellation was asked for: the refund was most likely made
    /// because of it, and withdrawing it alone would keep the period that was given back
    /// (found by the money audit: cancel, be refunded in full, withdraw, and keep three
    /// paid-back years). Staff, who made the refund, may still withdraw it.
    pub async fn revoke_cancellation(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
    ) -> Result<HostingRow> {
        access.require_write()?;
        self.org_hosting(access, project, id).await?;
        let mut tx = self.store.begin().await?;
        let h = hosting::lock_hosting(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        CancelKind::revoke(h.status, h.cancel_kind())
            .map_err(|refusal| ServiceError::Conflict(refusal.to_string()))?;
        if let Some(asked) = h.cancel_requested_at.filter(|_| !access.as_operator()) {
            if lodge_store::refunds::service_refunded_since(&mut tx, &id.to_string(), asked).await?
            {
                return Err(ServiceError::Conflict(
                    "An invoice of this account was refunded after its cancellation was asked for, so the cancellation can no longer be withdrawn here: contact us to keep the account."
                        .into(),
                ));
            }
        }
        let now = self.now_us();
        hosting::set_cancellation(&mut tx, id, None, None, None, None, now).await?;
        lodge_store::plan_change::note_history(
            &mut *tx,
            id,
            h.status,
            "cancellation withdrawn",
            &access.actor(),
            now,
        )
        .await?;
        crate::events::hosting_event(
            &mut *tx,
            crate::events::EventKind::HostingCancellationWithdrawn,
            id,
            "cancellation withdrawn",
            &access.actor(),
            now,
        )
        .await?;
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
        // Checked as a customer's change is (none given: none recorded).
        let nameservers = if nameservers.is_empty() {
            Vec::new()
        } else {
            crate::registrar::jobs::clean_nameservers(nameservers)?
        };
        let today = self.today();
        let expires = lodge_core::dates::add_months(today, years * 12);
        let ns = serde_json::to_string(&nameservers)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut tx = self.store.begin().await?;
        let done = hosting::activate_domain(
            &mut tx,
            id,
            &today.to_string(),
            &expires.to_string(),
            &ns,
            self.now_us(),
            true, // by hand: only a paid order's (registering costs the operator a year)
        )
        .await?;
        if !done {
            let exists = hosting::domain(&mut *tx, id).await?;
            return Err(match exists {
                None => ServiceError::NotFound,
                Some(d)
                    if matches!(
                        d.status,
                        DomainStatus::PendingRegistration | DomainStatus::PendingTransfer
                    ) =>
                {
                    // Registering a name nobody has paid for costs the operator a year.
                    ServiceError::Conflict(
                        "This domain's order is not paid: it is registered or transferred once it is."
                            .into(),
                    )
                }
                Some(d) => ServiceError::Conflict(format!("This domain is {}.", d.status)),
            });
        }
        let row = hosting::domain(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(row)
    }

    /// Staff give up a paid registration or transfer that will not happen (the `manual`
    /// registrar's, the name was taken meanwhile; or one a registry keeps refusing): the
    /// domain is cancelled with `reason` as its registry error, which frees the name, and
    /// what paid for it goes back to the organization's credit in the same transaction. The hosting
    /// account ordered with it is left as it is. An unpaid order's domain is refused (the
    /// customer cancels the order, or it expires).
    pub async fn fail_domain(&self, id: DomainId, reason: &str, actor: &str) -> Result<DomainRow> {
        let reason = reason.trim();
        let mut v = crate::errors::Validator::new();
        if reason.is_empty() {
            v.required("reason");
        }
        v.line("reason", reason, 500);
        v.finish()?;
        let d = hosting::domain(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let what = match d.status {
            DomainStatus::PendingRegistration => "Registration",
            DomainStatus::PendingTransfer => "Transfer",
            other => return Err(ServiceError::Conflict(format!("This domain is {other}."))),
        };
        if let Some(order) = d.order_id {
            let unpaid = billing::order(self.store.reader(), order)
                .await?
                .is_some_and(|o| o.status == lodge_core::OrderStatus::Pending);
            if unpaid {
                return Err(ServiceError::Conflict(
                    "This domain's order is not paid: nothing was bought to refund; the customer \
                     cancels the order, or it expires."
                        .into(),
                ));
            }
        }
        let why = format!("{what} of {} failed: {reason}", d.name);
        let cancelled = self.domain_failed(&d, &why, actor).await?;
        let row = hosting::domain(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if !cancelled {
            // Completed (or cancelled) between the read and the move: nothing was refunded.
            return Err(ServiceError::Conflict(format!(
                "This domain is {}.",
                row.status
            )));
        }
        Ok(row)
    }
}

fn paid_meanwhile() -> ServiceError {
    ServiceError::Conflict(
        "This order was paid meanwhile; ask again to cancel the paid account.".into(),
    )
}
