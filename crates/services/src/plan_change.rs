//! Plan changes: a customer moves a hosting account to another plan during its period
//! (docs/billing.md, "Proration"). The due date is kept; the difference of the two prices
//! for the days left ([`lodge_core::pricing::prorate`]) is
//!
//! - positive (an upgrade): invoiced (a `manual` invoice with one `adjustment` line), the
//!   organization's credit applied first. The account moves to the new plan when that
//!   invoice is paid ([`on_invoice_paid`], from [`crate::billing::settle`]), at once when
//!   credit covers it;
//! - zero or negative (a downgrade): the account moves at once, and what it is owed goes to
//!   the organization's credit (an `adjustment` ledger entry), never cash.
//!
//! Either way the account renews at the new plan's price for its cycle (`recurring_minor`),
//! and the worker's `change_package` job tells the provisioning driver.
//!
//! What is refused: an account that is not `active` (409), one with a pending cancellation
//! or an unpaid plan-change invoice (409), one on a `free` or `one_time` cycle (409), a plan
//! that does not exist, is not on sale, is the current one or has no price for the account's
//! cycle (field errors). Also (409): a current period whose length is not the cycle's (an
//! introductory offer period), a day outside the current period (its next period was already
//! paid), and a second invoiced change of one account on the same day (the invoice line's
//! unique key is `(service, period start, kind)`, the period starting on the day of the
//! change).
//!
//! An upgrade's invoice left unpaid holds further changes of the account back (409) until it
//! is paid or the period it was priced for ends: then the scheduler (or the next change
//! asked for) cancels the change and its invoice, the credit applied going back
//! ([`Lodge::expire_stale_plan_changes`]). Paid after its account ended (terminated or
//! cancelled) or once the period it was priced for is over, the change is not applied and
//! what was paid goes back to the organization's credit (the customer asks again, priced
//! for the days then left).

use jiff::civil::Date;
use jiff::ToSpan;
use lodge_core::pricing::{prorate, ProrationError};
use lodge_core::{
    BillingCycle, HostingId, HostingStatus, InvoiceKind, InvoiceStatus, PlanId, ProjectId,
};
use lodge_store::billing::{self, InvoiceRow};
use lodge_store::jobs::{self, JobRow};
use lodge_store::plan_change::{self as store, NewPlanChange};
use lodge_store::DAY_US;
use lodge_store::{hosting, SqlConn, StoreError};
use serde::{Deserialize, Serialize};

use crate::auth::Access;
use crate::catalog::{Catalog, Plan};
use crate::commit::WriteCtx;
use crate::idempotency::{Answer, IdempotencyKey};
use crate::renewals::SCHEDULER;
use crate::{Lodge, Result, ServiceError};

/// The worker's job telling the driver an account's new package.
pub const JOB_CHANGE_PACKAGE: &str = "change_package";

/// What a plan change did (stored as the answer of its `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChangeOutcome {
    pub change_id: i64,
    pub hosting_id: HostingId,
    pub from_plan_id: PlanId,
    pub to_plan_id: PlanId,
    /// `applied` (the account is on the new plan) or `awaiting_payment` (its invoice).
    pub status: String,
    /// The current period, `[start, end)`; `end` is the account's unchanged due date.
    pub period_start: String,
    pub period_end: String,
    /// `d`: days from today (included) to the period's end.
    pub days_left: i64,
    /// `D`: days in the period.
    pub days_in_period: i64,
    /// What the current period was paid at, at most the plan's price (a coupon, an
    /// introductory price); the plan's price once a change was applied in the period.
    pub old_price_minor: i64,
    pub new_price_minor: i64,
    /// `(new − old) × d / D`, rounded once: positive is invoiced, negative credited (never
    /// invoiced when the new plan is listed no dearer than the old).
    pub charge_minor: i64,
    /// The upgrade's invoice.
    pub invoice_id: Option<i64>,
    pub invoice_number: Option<String>,
    /// Credit applied to that invoice.
    pub credit_applied_minor: i64,
    /// What is left to pay on it.
    pub amount_due_minor: i64,
    /// The invoice's payment token while something is due. Not stored with the outcome
    /// (an `Idempotency-Key`'s answer): derived again from `payment_token_salt` on a replay.
    #[serde(skip)]
    pub payment_token: Option<String>,
    /// What the token is derived from ([`crate::payment_tokens`]); not a secret.
    #[serde(default)]
    pub payment_token_salt: Option<String>,
    /// Credit given for a downgrade.
    pub credit_given_minor: i64,
}

#[derive(Debug, Deserialize)]
struct ChangePayload {
    change_id: i64,
}

/// A plan by UUID or slug, as the catalog holds it.
fn find_plan<'a>(catalog: &'a Catalog, given: &str) -> Option<&'a Plan> {
    match given.parse::<PlanId>() {
        Ok(id) => catalog.plan(id),
        Err(_) => catalog.plans.iter().find(|p| p.row.slug == given),
    }
}

/// Whole months from `start` to `end` by the calendar (day of month ignored).
fn months_between(start: Date, end: Date) -> i64 {
    let index = |d: Date| i64::from(d.year()) * 12 + i64::from(d.month());
    index(end) - index(start)
}

/// Why an account's plan cannot change now (its state, not the request's fields).
fn refuse_state(status: HostingStatus, cancelling: bool) -> Result<()> {
    if status != HostingStatus::Active {
        return Err(ServiceError::Conflict(format!(
            "Only an active account can change plans; this one is {status}."
        )));
    }
    if cancelling {
        return Err(ServiceError::Conflict(
            "This account has a pending cancellation: withdraw it before changing plans.".into(),
        ));
    }
    Ok(())
}

impl Lodge {
    /// Moves a hosting account of the caller's organization to `plan` (a UUID or a slug),
    /// prorated (see the module's documentation). Under an `Idempotency-Key` the change and
    /// its stored outcome commit together, so a retry never charges twice. Of concurrent
    /// changes of one account one is accepted: the account's organization and then the
    /// account are locked (the money paths' order) and everything is checked again there.
    pub async fn change_plan(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
        plan: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<PlanChangeOutcome>> {
        access.require_write()?;
        let actor = access.actor();
        // A retry with the key is answered its first outcome before anything is checked
        // (the account has moved since, possibly to this very plan).
        self.keyed(key, || async {
            let (seen, change) = self.check_change(access, project, id, plan).await?;
            let ctx = self.write_ctx(&actor);
            let mut tx = self.store.begin().await?;
            billing::lock_credit(&mut tx, seen.organization_id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            if let Some(key) = key {
                self.claim_key_in(&mut tx, key).await?;
            }
            let outcome = change_in(&ctx, &mut tx, &change).await?;
            if let Some(key) = key {
                self.answer_key_in(&mut tx, key, &outcome).await?;
            }
            tx.commit().await.map_err(StoreError::from)?;
            Ok(outcome)
        })
        .await
    }

    /// The checks of a change outside the transaction (the account's state, the plan), and
    /// what the transaction needs of the catalog.
    async fn check_change(
        &self,
        access: &Access,
        project: Option<ProjectId>,
        id: HostingId,
        plan: &str,
    ) -> Result<(hosting::HostingRow, Requested)> {
        let seen = self.org_hosting(access, project, id).await?;
        refuse_state(seen.status, seen.cancel_kind().is_some())?;
        let cycle: BillingCycle = seen
            .billing_cycle
            .parse()
            .map_err(|_| ServiceError::Internal(format!("account {id}: bad billing cycle")))?;
        if cycle.months().is_none() {
            return Err(ServiceError::Conflict(format!(
                "This account is on the {cycle} cycle: it has no period to prorate, so its plan \
                 cannot be changed."
            )));
        }
        let catalog = self.catalog().await?;
        let given = plan.trim();
        let target = match find_plan(&catalog, given) {
            _ if given.is_empty() => {
                return Err(ServiceError::field_coded(
                    "plan_id",
                    crate::FieldCode::Required,
                    "This field may not be blank.",
                ))
            }
            None => return Err(ServiceError::field("plan_id", "No such plan.")),
            Some(p) if !p.orderable() => {
                return Err(ServiceError::field(
                    "plan_id",
                    "This plan is not available for ordering.",
                ))
            }
            Some(p) => p,
        };
        if target.row.id == seen.plan_id {
            return Err(ServiceError::field(
                "plan_id",
                "The account is already on this plan.",
            ));
        }
        let Some(price) = target.price(cycle) else {
            return Err(ServiceError::field(
                "plan_id",
                format!("This plan has no {cycle} price."),
            ));
        };
        // As when ordering it: a trial is not reached by moving other accounts onto it.
        let mut conn = self.store.read_conn().await?;
        if let Some(why) = crate::orders::quotas::once_per_organization_refusal(
            &mut conn,
            access.organization,
            target,
        )
        .await?
        {
            return Err(ServiceError::field_coded(
                "plan_id",
                crate::FieldCode::OncePerOrganization,
                why,
            ));
        }
        let from_name = catalog
            .plan(seen.plan_id)
            .map_or_else(|| seen.plan_id.to_string(), |p| p.row.name.clone());
        let change = Requested {
            id,
            from: seen.plan_id,
            to: target.row.id,
            to_name: target.row.name.clone(),
            once_per_organization: target.row.once_per_organization == 1,
            summary: format!("{from_name} → {}", target.row.name),
            new_price_minor: price.price.minor(),
            months: cycle.months().unwrap_or(1),
        };
        Ok((seen, change))
    }

    /// A terminated account's plan change still waiting for its invoice will never be
    /// applied: the change is cancelled, and its unpaid invoice with it, the credit applied
    /// and any money received going back to the organization's credit as a refund (found
    /// by the billing audit: the customer had to pay the rest to get the credit back).
    pub(crate) async fn release_awaiting_change(
        &self,
        org: lodge_core::OrganizationId,
        service: HostingId,
    ) -> Result<()> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, org).await?;
        release_awaiting_change_in(&mut tx, service, SCHEDULER, now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Cancels each change still waiting for its invoice once the period it was priced for
    /// has ended, and its unpaid invoice with it, the credit applied going back (found by
    /// the billing audit: such an invoice could only be paid to be refunded, and held every
    /// further change of the account back, and the credit applied to it, until the account
    /// ended). Returns how many were cancelled.
    pub async fn expire_stale_plan_changes(&self) -> Result<usize> {
        let (today, now) = (self.today(), self.now_us());
        let expiry = self.settings.invoice_expiry_days;
        let stale = {
            let mut db = self.store.read_conn().await?;
            let asked_before = now.saturating_sub(expiry.saturating_mul(DAY_US));
            store::stale_awaiting(&mut db, &today.to_string(), asked_before, 1000).await?
        };
        let mut cancelled = 0;
        for (org, service) in stale {
            let mut tx = self.store.begin().await?;
            billing::lock_credit(&mut tx, org).await?;
            let Some(change) = store::awaiting_change(&mut tx, service).await? else {
                continue;
            };
            let Some(lapse) = lapsed(&change, today, now, expiry) else {
                continue;
            };
            let note = lapse.returned();
            if expire_change_in(&mut tx, &change, note, SCHEDULER, self.now_us()).await? {
                cancelled += 1;
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(cancelled)
    }

    /// The worker's `change_package` job: tells the account's driver the package of its
    /// current plan (idempotent: the drivers' `change_package` is), then records it in the
    /// account's history once (actor `worker`). Nothing to do for a change that was not
    /// applied, or an account that ended.
    pub(crate) async fn run_change_package(&self, job: &JobRow) -> Result<()> {
        let p: ChangePayload = serde_json::from_str(&job.payload).map_err(|e| {
            ServiceError::Internal(format!("job {} has a bad payload: {e}", job.id))
        })?;
        let change = {
            let mut conn = self
                .store
                .reader()
                .acquire()
                .await
                .map_err(StoreError::from)?;
            store::change(&mut *conn, p.change_id).await?
        };
        let Some(change) = change else {
            return Ok(());
        };
        if change.status != store::APPLIED || change.package_changed_at.is_some() {
            return Ok(());
        }
        let Some(h) = hosting::hosting(self.store.reader(), change.hosting_id).await? else {
            return Ok(());
        };
        if matches!(
            h.status,
            HostingStatus::Terminated | HostingStatus::Cancelled
        ) {
            return Ok(());
        }
        let package = match self.account(&h).await? {
            Some((account, target)) => {
                target
                    .driver
                    .change_package(&account, &account.package)
                    .await
                    .map_err(|e| ServiceError::Internal(format!("{}: {e}", target.name)))?;
                account.package
            }
            // Not on a server: provisioning will create it with its current plan.
            None => String::new(),
        };
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        if store::mark_package_changed(&mut *tx, change.id, now).await? {
            let note = if package.is_empty() {
                format!("plan {}: no server to change yet", change.summary)
            } else {
                format!("package changed to {package} ({})", change.summary)
            };
            store::note_history(&mut *tx, h.id, h.status, &note, "worker", now).await?;
            hosting::set_last_error(&mut tx, h.id, None, now).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// A change asked for, checked against the catalog.
#[derive(Debug, Clone)]
struct Requested {
    id: HostingId,
    /// The plan the account was on when the change was checked.
    from: PlanId,
    to: PlanId,
    to_name: String,
    /// The plan is sold once per organization: checked again under the organization's
    /// lock (two accounts moved onto it at once).
    once_per_organization: bool,
    summary: String,
    new_price_minor: i64,
    /// The account's cycle, in months.
    months: u32,
}

/// [`Lodge::release_awaiting_change`]'s writes, in the caller's transaction, the
/// organization's credit locked already (an account cancelled at once releases its waiting
/// change in the same transaction, so its invoice cannot be paid between: found by the
/// money audit).
pub(crate) async fn release_awaiting_change_in(
    tx: &mut lodge_store::AnyConnection,
    service: HostingId,
    actor: &str,
    now: i64,
) -> Result<()> {
    // A difference invoiced for a period paid at the old price bills the account's next
    // period, which it will not have (found by the re-audit: payable after the account
    // was terminated).
    for (id, _) in
        lodge_store::renewals::unpaid_differences_of(&mut *tx, &service.to_string()).await?
    {
        if let Some(inv) = billing::lock_invoice(&mut *tx, id).await? {
            let note = "Returned from a plan change difference: the account ended";
            crate::billing::cancel_returning(tx, &inv, note, actor, now).await?;
        }
    }
    let Some(change) = store::awaiting_change(&mut *tx, service).await? else {
        return Ok(());
    };
    let note = "Returned from a plan change not applied: the account ended";
    expire_change_in(tx, &change, note, actor, now).await?;
    Ok(())
}

/// Withdraws the plan change waiting for the unpaid invoice `invoice_id` (its customer, or
/// staff for them, no longer want it), in the caller's transaction, the organization's
/// credit locked already: the invoice is cancelled, what it received goes back to credit,
/// and the account's history says so. `false` when the invoice is no change's, or its
/// change is no longer waiting (found by the support-desk audit: an upgrade declined after
/// it was invoiced could be withdrawn by no one, and held every further change back).
pub(crate) async fn withdraw_change_in(
    tx: &mut lodge_store::AnyConnection,
    invoice_id: i64,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let Some(change) = store::change_of_invoice(&mut *tx, invoice_id).await? else {
        return Ok(false);
    };
    if change.status != store::AWAITING_PAYMENT {
        return Ok(false);
    }
    let note = "Returned from a plan change withdrawn before its invoice was paid";
    if !expire_change_in(tx, &change, note, actor, now).await? {
        return Ok(false);
    }
    if let Some(h) = hosting::hosting(&mut *tx, change.hosting_id).await? {
        store::note_history(
            &mut *tx,
            change.hosting_id,
            h.status,
            &format!("plan change withdrawn: {}", change.summary),
            actor,
            now,
        )
        .await?;
    }
    Ok(true)
}

/// Why a change waiting for its invoice will never apply ([`lapsed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lapse {
    /// The period it was priced for is over.
    PeriodOver,
    /// Its invoice was left unpaid past the invoice expiry.
    NotPaidInTime,
}

impl Lapse {
    /// The note of the credit returned when it is cancelled unpaid.
    fn returned(self) -> &'static str {
        match self {
            Lapse::PeriodOver => {
                "Returned from a plan change not applied: its period ended before its invoice \
                 was paid"
            }
            Lapse::NotPaidInTime => {
                "Returned from a plan change not applied: its invoice was not paid in time"
            }
        }
    }

    /// Why it was not applied when its invoice is paid all the same.
    fn not_applied(self) -> &'static str {
        match self {
            Lapse::PeriodOver => {
                "Plan change not applied: its period ended before its invoice was paid"
            }
            Lapse::NotPaidInTime => "Plan change not applied: its invoice was not paid in time",
        }
    }
}

/// Why a change waiting for its invoice will never apply, if it will not: the period it was
/// priced for is over, or its invoice was left unpaid past the invoice expiry
/// (`expiry_days`, as an order's first invoice). An upgrade is priced from the day it is
/// asked for: paid months later, it charged for the days gone on the old plan (found by the
/// support-desk audit: 4½ months late, 121.61 of 297.37 paid for days never served), and
/// held every further change of the account back until the period ended.
fn lapsed(change: &store::PlanChangeRow, today: Date, now: i64, expiry_days: i64) -> Option<Lapse> {
    let period_over = change
        .period_end
        .parse::<Date>()
        .is_ok_and(|end| today >= end);
    if period_over {
        Some(Lapse::PeriodOver)
    } else if change.created_at <= now.saturating_sub(expiry_days.saturating_mul(DAY_US)) {
        Some(Lapse::NotPaidInTime)
    } else {
        None
    }
}

/// Cancels a change waiting for its invoice, and the invoice with it, what it received
/// going back to the organization's credit (`note`), in the caller's transaction, the
/// organization's credit locked already. `false` when its invoice was paid meanwhile (its
/// settling gave it back or applied the change already).
async fn expire_change_in(
    tx: &mut lodge_store::AnyConnection,
    change: &store::PlanChangeRow,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    let mut ended = true;
    if let Some(id) = change.invoice_id {
        if let Some(inv) = billing::lock_invoice(&mut *tx, id).await? {
            if !crate::billing::cancel_returning(tx, &inv, note, actor, now).await? {
                ended = inv.status == InvoiceStatus::Cancelled;
            }
        }
    }
    if ended {
        store::settle_change(&mut *tx, change.id, store::CANCELLED, now).await?;
    }
    Ok(ended)
}

/// The change's writes, in the caller's transaction, the organization already locked: the
/// account is locked and checked again, the change prorated, and either invoiced or applied
/// with its credit.
async fn change_in(
    ctx: &WriteCtx<'_>,
    conn: &mut lodge_store::AnyConnection,
    r: &Requested,
) -> Result<PlanChangeOutcome> {
    let (status, plan_now, list_price) = store::lock_account(conn, r.id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let h = hosting::hosting(&mut *conn, r.id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    refuse_state(status, h.cancel_kind().is_some())?;
    // Checked, priced and described against the plan seen before the lock: another change
    // applied meanwhile makes all of that stale (found by the money audit: concurrent
    // changes recorded "Business → Starter" for a move from Reseller Boost).
    if plan_now != r.from {
        return Err(ServiceError::Conflict(
            "The account's plan changed meanwhile: look at it again before changing plans.".into(),
        ));
    }
    if plan_now == r.to {
        return Err(ServiceError::Conflict(
            "The account is already on this plan.".into(),
        ));
    }
    if r.once_per_organization
        && lodge_store::orgs::accounts_of_plan(&mut *conn, h.organization_id, &r.to.to_string())
            .await?
            > 0
    {
        return Err(ServiceError::field_coded(
            "plan_id",
            crate::FieldCode::OncePerOrganization,
            crate::orders::quotas::had_once(&r.to_name),
        ));
    }
    let waiting = match store::awaiting_change(conn, r.id).await? {
        // Its period is over, or it was left unpaid too long: it will never apply, and
        // gives way (as the scheduler's pass would have it).
        Some(w) => match lapsed(&w, ctx.today, ctx.now, ctx.invoice_expiry_days) {
            Some(lapse)
                if expire_change_in(conn, &w, lapse.returned(), ctx.actor, ctx.now).await? =>
            {
                None
            }
            _ => Some(w),
        },
        None => None,
    };
    if let Some(waiting) = waiting {
        let number = match waiting.invoice_id {
            Some(inv) => billing::invoice(conn, inv).await?.and_then(|i| i.number),
            None => None,
        };
        return Err(ServiceError::Conflict(format!(
            "The invoice {} of an earlier plan change ({}) is unpaid: pay it before changing \
             plans again.",
            number.unwrap_or_default(),
            waiting.summary
        )));
    }
    // Nor while a difference an earlier change invoiced is unpaid (found by the billing
    // audit: changes went on, a downgrade paying back what that invoice never received).
    if let Some(number) = store::unpaid_difference(conn, r.id).await? {
        return Err(ServiceError::Conflict(format!(
            "The invoice {number} of an earlier plan change (the difference for a period paid \
             at the old price) is unpaid: pay it before changing plans again."
        )));
    }
    let (start, end) = current_period(conn, &h, r.months).await?;
    let (start_s, end_s) = (start.to_string(), end.to_string());
    // The period's price is what it was paid at (a coupon, an introductory price, a
    // difference left unpaid), never more than the list price; once a change was applied
    // in it, the price that change's proration paid the rest of the period at: the plan's
    // it moved to, or the lower one when it charged nothing (found by review: a free move
    // up then one down gave back what was never paid). What was refunded of the invoices
    // paying the period is not paid either: their lines count for the share of each
    // invoice kept, a change's new price for the share of its invoice kept (found by the
    // billing audit: a downgrade after a refund gave back money already refunded).
    let old_price = match store::last_change_in_period(conn, r.id, &start_s, &end_s).await? {
        Some(c) if c.charge_minor == 0 => c.old_price_minor.min(c.new_price_minor),
        Some(c) => c.old_price_minor + kept_share(c),
        None => store::period_billed_net(conn, r.id, &start_s)
            .await?
            .unwrap_or(list_price),
    }
    .clamp(0, list_price);
    let p = prorate(old_price, r.new_price_minor, start, end, ctx.today).map_err(|e| match e {
        ProrationError::OutsidePeriod if ctx.today >= end => ServiceError::Conflict(format!(
            "The account's period from {end} is not paid yet (its renewal is unpaid): pay it \
             before changing plans."
        )),
        ProrationError::OutsidePeriod => ServiceError::Conflict(format!(
            "The account's next period ({start} to {end}) is paid already and has not begun: \
             change plans once it has begun."
        )),
        other => ServiceError::Internal(other.to_string()),
    })?;
    // A move to a plan listed no dearer is never invoiced, even from a period paid below
    // the new plan's price (it then gives nothing back).
    let charge = if r.new_price_minor <= list_price {
        p.charge_minor.min(0)
    } else {
        p.charge_minor
    };
    // Never more back than was kept of what paid the period, less what downgrades in it gave
    // back already (found by review: a refund of the period's invoice made after an
    // upgrade, then a downgrade, gave back more than was ever paid).
    let charge = match store::period_kept_and_credited(conn, r.id, &start_s, &end_s).await? {
        Some((kept, credited)) if charge < 0 => charge.max(-(kept - credited).max(0)),
        _ => charge,
    };
    let today = ctx.today.to_string();
    let mut outcome = PlanChangeOutcome {
        change_id: 0,
        hosting_id: r.id,
        from_plan_id: plan_now,
        to_plan_id: r.to,
        status: store::APPLIED.to_owned(),
        period_start: start_s.clone(),
        period_end: end_s.clone(),
        days_left: p.days_left,
        days_in_period: p.days_in_period,
        old_price_minor: old_price,
        new_price_minor: r.new_price_minor,
        charge_minor: charge,
        invoice_id: None,
        invoice_number: None,
        credit_applied_minor: 0,
        amount_due_minor: 0,
        payment_token: None,
        payment_token_salt: None,
        credit_given_minor: 0,
    };
    let new_change = |invoice_id, applied| NewPlanChange {
        hosting_id: r.id,
        organization_id: h.organization_id,
        from_plan_id: plan_now,
        to_plan_id: r.to,
        summary: &r.summary,
        old_price_minor: old_price,
        new_price_minor: r.new_price_minor,
        period_start: &start_s,
        period_end: &end_s,
        days_left: p.days_left,
        days_in_period: p.days_in_period,
        charge_minor: charge,
        invoice_id,
        applied,
        actor: ctx.actor,
        now: ctx.now,
    };

    if charge <= 0 {
        // A downgrade (or the same price): at once, what is owed to credit.
        let change_id = store::insert_change(conn, &new_change(None, true)).await?;
        let change = store::change(conn, change_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        apply(ctx, conn, &change, status).await?;
        if charge < 0 {
            let note = format!(
                "Plan change {} ({} of {} days left, prorated)",
                r.summary, p.days_left, p.days_in_period
            );
            billing::append_ledger(
                conn,
                &billing::NewLedgerEntry {
                    organization_id: h.organization_id,
                    kind: "adjustment",
                    amount_minor: -charge,
                    currency: &h.currency,
                    invoice_id: None,
                    note: &note,
                    actor: ctx.actor,
                    now: ctx.now,
                },
            )
            .await?;
        }
        outcome.change_id = change_id;
        outcome.credit_given_minor = -charge;
        return Ok(outcome);
    }

    // An upgrade: invoiced, the credit applied first.
    if store::line_exists(conn, r.id, &today, "adjustment").await? {
        return Err(ServiceError::Conflict(
            "This account's plan was already changed with an invoice today: change it again \
             tomorrow."
                .into(),
        ));
    }
    let description = format!("Change to {}, {today} to {end} (prorated)", r.to_name);
    let account = hosting::account_billing(conn, r.id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let (invoice, token) = invoice_charge(
        ctx,
        conn,
        &account,
        charge,
        &description,
        (&today, Some(end_s.clone())),
        &today,
    )
    .await?;
    let change_id = store::insert_change(conn, &new_change(Some(invoice), false)).await?;
    let row = billing::invoice(conn, invoice)
        .await?
        .ok_or(ServiceError::NotFound)?;
    // Covered by credit: paid now, which applies the change (the one path of a paid
    // plan-change invoice).
    crate::billing::settle(ctx, conn, &row).await?;
    let row = billing::invoice(conn, invoice)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let paid = !row.status.is_payable();
    outcome.change_id = change_id;
    outcome.status = if paid {
        store::APPLIED
    } else {
        store::AWAITING_PAYMENT
    }
    .to_owned();
    outcome.invoice_id = Some(invoice);
    outcome.invoice_number = row.number.clone();
    outcome.credit_applied_minor = row.credit_applied_minor;
    outcome.amount_due_minor = row.amount_due();
    outcome.payment_token = (!paid).then(|| token.token.clone());
    outcome.payment_token_salt = (!paid).then_some(token.salt);
    Ok(outcome)
}

/// What of an invoice the downgrades in the periods it paid for gave back already as account
/// credit (what a refund of it may no longer return; at most each line's amount). A
/// downgrade's credit undoes the upgrades before it in the period, the latest first, then
/// the period's own invoice (found by the lifecycle audit: an upgrade's invoice, its money
/// given back by a downgrade the same day, was then refunded in full as well).
pub(crate) async fn given_back_by_downgrades<C: SqlConn>(
    conn: &mut C,
    inv: &InvoiceRow,
) -> Result<i64> {
    if inv.total_minor <= 0 {
        return Ok(0);
    }
    let mine = store::change_of_invoice(conn, inv.id).await?;
    let mut given_back = 0i64;
    for (service, kind, start, end, amount) in store::invoice_periods(conn, inv.id).await? {
        if amount <= 0 {
            continue;
        }
        // The service's period the line lies in, and what the line is in it: the period's
        // own (its renewal, or a difference for it paid at the old price) or a change's.
        let (period, my_change) = match (&*kind, &mine) {
            ("plan", _) => ((start, end), None),
            (_, Some(c)) if c.hosting_id == service && c.status == store::APPLIED => {
                ((c.period_start.clone(), c.period_end.clone()), Some(c.id))
            }
            // A change not applied.
            (_, Some(_)) => continue,
            _ => ((start, end), None),
        };
        let changes = store::applied_in_period(conn, service, &period.0, &period.1).await?;
        // Each upgrade's invoice still standing, in order; what downgrades took of it.
        let mut upgrades: Vec<(i64, i64, i64)> = Vec::new();
        let mut from_the_period = 0i64;
        for c in changes {
            if c.charge_minor > 0 && c.invoice_id.is_some() {
                // What is kept of its invoice (refunded before the downgrade: the
                // downgrade's credit was priced without it, so it came from elsewhere;
                // found by review).
                let kept = lodge_core::money::kept_share(
                    c.charge_minor,
                    c.invoice_total_minor,
                    c.invoice_refunded_minor,
                );
                upgrades.push((c.id, kept, 0));
            } else if c.charge_minor < 0 {
                let mut credit = -c.charge_minor;
                for u in upgrades.iter_mut().rev() {
                    let take = credit.min(u.1 - u.2);
                    u.2 += take;
                    credit -= take;
                }
                from_the_period += credit;
            }
        }
        // The period's own part goes to its differences first (the latest money paid for
        // it), then to its renewal (found by review: a difference stayed refundable in full,
        // the renewal's part capped at its line and the rest dropped).
        let taken = match my_change {
            None => {
                let mut pot = from_the_period;
                let mut mine_taken = 0;
                for (invoice, paid) in
                    store::differences_in_period(conn, service, &period.0).await?
                {
                    let take = pot.min(paid);
                    pot -= take;
                    if invoice == inv.id {
                        mine_taken = take;
                    }
                }
                if kind == "plan" {
                    pot
                } else {
                    mine_taken
                }
            }
            Some(id) => upgrades.iter().find(|u| u.0 == id).map_or(0, |u| u.2),
        }
        .min(amount);
        given_back += taken;
    }
    Ok(given_back.min(inv.total_minor))
}

/// Of the price a change moved to above the one it moved from, the share its invoice was
/// paid and kept (all of it when nothing was refunded, none when all was).
fn kept_share(c: store::LastChange) -> i64 {
    lodge_core::money::kept_share(
        c.new_price_minor - c.old_price_minor,
        c.invoice_total_minor,
        c.invoice_refunded_minor,
    )
}

/// Invoices `charge` for an account (a `manual` invoice, due on `due`, with one
/// `adjustment` line of the service from `start`), the organization's credit applied first (locked
/// already by the caller): the invoice and its payment token. Settling it is the caller's.
async fn invoice_charge<C: SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    h: &hosting::AccountBilling,
    charge: i64,
    description: &str,
    (start, end): (&str, Option<String>),
    due: &str,
) -> Result<(i64, crate::payment_tokens::NewToken)> {
    let balance = billing::lock_credit(conn, h.organization_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let credit = balance.clamp(0, charge);
    let token = ctx.sealer.payment_tokens().issue(ctx.now);
    let invoice = billing::insert_invoice(
        conn,
        &billing::NewInvoice {
            number: None,
            organization_id: h.organization_id,
            order_id: Some(h.order_id),
            kind: InvoiceKind::Manual,
            currency: &h.currency,
            subtotal_minor: charge,
            tax_minor: 0,
            payment_token: token.key(),
            due_date: due,
            credit_applied_minor: credit,
            paid: false,
            now: ctx.now,
        },
    )
    .await?;
    billing::insert_line(
        conn,
        invoice,
        &billing::NewLine {
            position: 0,
            kind: "adjustment",
            description,
            service_id: Some(h.id.to_string()),
            period_start: Some(start.to_owned()),
            period_end: end,
            amount_minor: charge,
        },
    )
    .await?;
    billing::number_invoices(conn, &[invoice], || ctx.now).await?;
    crate::events::invoice_event(
        conn,
        crate::events::EventKind::InvoiceCreated,
        invoice,
        ctx.now,
    )
    .await?;
    if credit > 0 {
        billing::append_ledger(
            conn,
            &billing::NewLedgerEntry {
                organization_id: h.organization_id,
                kind: "applied",
                amount_minor: -credit,
                currency: &h.currency,
                invoice_id: Some(invoice),
                note: "Applied to invoice",
                actor: ctx.actor,
                now: ctx.now,
            },
        )
        .await?;
    }
    Ok((invoice, token))
}

/// After a change took effect: the period following the changed one (from `next_start`),
/// when its renewal was invoiced before the change (in the renewal lead time), is billed
/// at the new plan's price too. An unpaid renewal is re-priced (its plan line and total;
/// credit applied beyond the new total goes back, and a renewal now covered is paid); of a
/// renewal paid already, the difference goes to the organization's credit (a downgrade) or
/// is invoiced like an upgrade's charge. The organization is locked by the caller (every
/// money path locks it first), so the renewal cannot be paid or cancelled meanwhile.
async fn reprice_next_period<C: SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    h: &hosting::AccountBilling,
    next_start: &str,
    new_price_minor: i64,
    summary: &str,
) -> Result<()> {
    for billed in store::billed_from(conn, h.id, next_start).await? {
        let delta = new_price_minor - billed.amount_minor;
        if delta == 0 {
            continue;
        }
        let Some(inv) = billing::lock_invoice(conn, billed.invoice_id).await? else {
            continue;
        };
        let period = format!(
            "{next_start} to {}",
            billed.period_end.as_deref().unwrap_or("")
        );
        match inv.status {
            InvoiceStatus::Unpaid => {
                let description = format!("{}, {period} (plan {summary})", h.domain_name);
                let Some(returned) = store::reprice_unpaid_line(
                    conn,
                    inv.id,
                    billed.line_id,
                    new_price_minor,
                    &description,
                    ctx.now,
                )
                .await?
                else {
                    continue;
                };
                crate::billing::give_back(
                    conn,
                    &inv,
                    returned,
                    "the renewal was re-priced after a plan change",
                    ctx.actor,
                    ctx.now,
                )
                .await?;
                if let Some(now_inv) = billing::invoice(conn, inv.id).await? {
                    Box::pin(crate::billing::settle(ctx, conn, &now_inv)).await?;
                }
                // Still to pay: told with what it asks now (found by the accountant's
                // audit: the mailed 7.12 due became 7.13, announced nowhere, and paying
                // what was mailed left a cent that suspends the account).
                if let Some(now_inv) = billing::invoice(conn, inv.id).await? {
                    if now_inv.status == InvoiceStatus::Unpaid {
                        let mut data = crate::events::invoice_data(&now_inv);
                        if let Some(o) = data.as_object_mut() {
                            o.insert(
                                "reason".into(),
                                format!("the renewal was re-priced after a plan change, {summary}")
                                    .into(),
                            );
                        }
                        crate::events::emit(
                            conn,
                            crate::events::EventKind::InvoiceUpdated,
                            now_inv.organization_id,
                            format!("invoice:{}", now_inv.id),
                            data,
                            ctx.now,
                        )
                        .await?;
                    }
                }
            }
            InvoiceStatus::Paid | InvoiceStatus::PartiallyRefunded if delta < 0 => {
                let note =
                    format!("Plan change {summary}: the renewal {period} paid at the old price");
                billing::append_ledger(
                    conn,
                    &billing::NewLedgerEntry {
                        organization_id: inv.organization_id,
                        kind: "adjustment",
                        amount_minor: -delta,
                        currency: &inv.currency,
                        invoice_id: None,
                        note: &note,
                        actor: ctx.actor,
                        now: ctx.now,
                    },
                )
                .await?;
            }
            InvoiceStatus::Paid | InvoiceStatus::PartiallyRefunded => {
                if store::line_exists(conn, h.id, next_start, "adjustment").await? {
                    continue;
                }
                let description =
                    format!("Plan {summary}, {period}: the renewal paid at the old price");
                // Due when the period it completes begins, as that period's renewal was: the
                // overdue pass then treats it as one.
                let today = ctx.today.to_string();
                let due = if next_start > today.as_str() {
                    next_start
                } else {
                    today.as_str()
                };
                let (invoice, _) = invoice_charge(
                    ctx,
                    conn,
                    h,
                    delta,
                    &description,
                    (next_start, billed.period_end.clone()),
                    due,
                )
                .await?;
                if let Some(row) = billing::invoice(conn, invoice).await? {
                    Box::pin(crate::billing::settle(ctx, conn, &row)).await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The account's current period `[start, end)`: it ends on the next due date, and starts
/// where the plan line billing it starts (a period is counted from the service's anchor,
/// so a clamped end such as 28 February does not give its start), else `months` before
/// its end. `Conflict` when that period is not `months` long (an introductory offer's
/// first period).
async fn current_period<C: SqlConn>(
    conn: &mut C,
    h: &hosting::HostingRow,
    months: u32,
) -> Result<(Date, Date)> {
    let no_period =
        || ServiceError::Conflict("This account has no current period to prorate.".to_owned());
    let end_s = h.next_due_date.as_deref().ok_or_else(no_period)?;
    let end: Date = end_s.parse().map_err(|_| no_period())?;
    let start = match store::period_start_ending(conn, h.id, end_s).await? {
        Some(s) => s.parse::<Date>().map_err(|_| no_period())?,
        None => end
            .checked_sub(i64::from(months).months())
            .map_err(|_| no_period())?,
    };
    if months_between(start, end) != i64::from(months) {
        return Err(ServiceError::Conflict(format!(
            "The account's current period ({start} to {end}) is an introductory period, not \
             one of its cycle: its plan can be changed from its first renewal on."
        )));
    }
    Ok((start, end))
}

/// Moves the account to the change's plan and price (history entry), bills the period
/// after the changed one (from its `period_end`) at that price if it was invoiced already
/// ([`reprice_next_period`]), tells integrators (`hosting.plan_changed`) and queues the
/// driver's `change_package` job once.
async fn apply<C: SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    c: &store::PlanChangeRow,
    status: HostingStatus,
) -> Result<()> {
    let (hosting_id, change_id) = (c.hosting_id, c.id);
    store::set_plan(
        conn,
        hosting_id,
        status,
        c.to_plan_id,
        c.new_price_minor,
        &format!("plan changed: {}", c.summary),
        ctx.actor,
        ctx.now,
    )
    .await?;
    if let Some(h) = hosting::account_billing(conn, hosting_id).await? {
        reprice_next_period(ctx, conn, &h, &c.period_end, c.new_price_minor, &c.summary).await?;
    }
    // Told to integrators (found by the integrator audit: a CRM kept the old plan).
    crate::events::emit(
        conn,
        crate::events::EventKind::HostingPlanChanged,
        c.organization_id,
        format!("hosting:{hosting_id}"),
        serde_json::json!({
            "hosting_id": hosting_id,
            "change_id": change_id,
            "from_plan_id": c.from_plan_id,
            "to_plan_id": c.to_plan_id,
            "summary": c.summary,
            "old_price_minor": c.old_price_minor,
            "new_price_minor": c.new_price_minor,
            "charge_minor": c.charge_minor,
            "invoice_id": c.invoice_id,
            // Who asked for it, not who recorded the payment that applied it (found by the
            // accountant's audit: a customer's upgrade paid by transfer said `staff`).
            "by": crate::events::by(&c.actor),
        }),
        ctx.now,
    )
    .await?;
    let payload =
        serde_json::json!({ "hosting_id": hosting_id, "change_id": change_id }).to_string();
    let dedupe = format!("{JOB_CHANGE_PACKAGE}:{change_id}");
    jobs::enqueue_later(
        conn,
        &jobs::NewJob {
            kind: JOB_CHANGE_PACKAGE,
            payload: &payload,
            dedupe_key: Some(&dedupe),
            run_at: ctx.now,
            max_attempts: 8,
            now: ctx.now,
        },
    )
    .await?;
    Ok(())
}

/// A paid invoice's part in plan changes, from [`crate::billing::settle`] in the paying
/// transaction (the organization and the invoice locked already): when it paid for a
/// change waiting for it, the account moves to the new plan ([`apply`]), once. If the
/// account ended meanwhile the change is cancelled and what was paid goes back to the
/// organization's credit (never cash).
pub(crate) async fn on_invoice_paid<C: SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoice: &InvoiceRow,
) -> Result<()> {
    if invoice.kind != InvoiceKind::Manual {
        return Ok(());
    }
    let Some(change) = store::change_of_invoice(conn, invoice.id).await? else {
        // A difference for a period paid at the old price: as a renewal's payment.
        return crate::renewals::difference_paid(ctx, conn, invoice).await;
    };
    if change.status != store::AWAITING_PAYMENT {
        return Ok(());
    }
    let Some((status, _, _)) = store::lock_account(conn, change.hosting_id).await? else {
        return Ok(());
    };
    let live = matches!(
        status,
        HostingStatus::Provisioning
            | HostingStatus::Active
            | HostingStatus::Suspended
            | HostingStatus::Failed
    );
    // The days the change was priced for are over: applying it now would charge for an
    // upgrade never served (and bill the next period's difference again); or it was left
    // unpaid past the invoice expiry, and was priced for days gone.
    let not_applied = if !live {
        Some("Plan change not applied: the account ended before its invoice was paid")
    } else {
        lapsed(&change, ctx.today, ctx.now, ctx.invoice_expiry_days).map(Lapse::not_applied)
    };
    if let Some(note) = not_applied {
        if store::settle_change(conn, change.id, store::CANCELLED, ctx.now).await? {
            // Given back as a refund of the invoice to credit, recorded as one: the invoice
            // is then refunded, and nothing of it is left for staff to refund again.
            lodge_store::refunds::insert_refund(
                conn,
                &lodge_store::refunds::NewRefund {
                    invoice_id: invoice.id,
                    organization_id: invoice.organization_id,
                    amount_minor: invoice.total_minor,
                    currency: &invoice.currency,
                    destination: lodge_core::RefundTo::Credit,
                    reference: None,
                    reason: note,
                    actor: ctx.actor,
                    now: ctx.now,
                },
            )
            .await?;
            billing::append_ledger(
                conn,
                &billing::NewLedgerEntry {
                    organization_id: invoice.organization_id,
                    kind: "refund",
                    amount_minor: invoice.total_minor,
                    currency: &invoice.currency,
                    invoice_id: Some(invoice.id),
                    note,
                    actor: ctx.actor,
                    now: ctx.now,
                },
            )
            .await?;
            lodge_store::refunds::add_refunded(
                conn,
                invoice.id,
                invoice.total_minor,
                lodge_core::InvoiceEvent::RefundRest,
                ctx.now,
            )
            .await?;
        }
        return Ok(());
    }
    if !store::settle_change(conn, change.id, store::APPLIED, ctx.now).await? {
        return Ok(());
    }
    apply(ctx, conn, &change, status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn months_by_the_calendar() {
        assert_eq!(months_between(date(2026, 1, 31), date(2026, 2, 28)), 1);
        assert_eq!(months_between(date(2026, 2, 28), date(2026, 3, 31)), 1);
        assert_eq!(months_between(date(2026, 11, 15), date(2027, 11, 15)), 12);
        assert_eq!(months_between(date(2026, 3, 31), date(2027, 3, 31)), 12);
    }
}
