//! Staff refunds of paid invoices, whole or part, to account credit or as a recorded cash
//! refund (docs/billing.md, "Refunds").
//!
//! Decided under the money paths' locks (docs/architecture.md): the organization
//! (`billing::lock_credit`), the `Idempotency-Key`'s claim, then the invoice
//! (`billing::lock_invoice`); the figures are read again under them, so refunds racing for
//! one invoice never take back more than it received. What is allowed is the pure
//! [`RefundBasis::refund`]. A refund leaves the invoice's services as they are: staff cancel
//! them separately.

use lodge_core::{InvoiceStatus, OrganizationId, RefundBasis, RefundRefusal, RefundTo};
use lodge_store::billing::{self, InvoiceRow};
use lodge_store::refunds::{self, NewRefund, RefundRow};
use lodge_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::idempotency::{Answer, IdempotencyKey};
use crate::{Lodge, Result, ServiceError};

/// What staff ask for.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    pub amount_minor: i64,
    pub to: RefundTo,
    /// Why (kept with the refund and, to credit, in the ledger entry).
    pub reason: &'a str,
    /// The bank's or gateway's reference of the money sent back: required for cash.
    pub reference: Option<&'a str>,
}

/// A refund as the services hand it out (and store it under an `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: i64,
    pub invoice_id: i64,
    pub organization_id: OrganizationId,
    pub amount_minor: i64,
    pub currency: String,
    pub to: RefundTo,
    pub reference: Option<String>,
    pub reason: String,
    pub actor: String,
    pub created_at: i64,
    /// When the gateway refused it (a refund to a card), and its words: nothing went back.
    #[serde(default)]
    pub failed_at: Option<i64>,
    #[serde(default)]
    pub failure: Option<String>,
}

impl From<RefundRow> for Refund {
    fn from(r: RefundRow) -> Self {
        Refund {
            id: r.id,
            invoice_id: r.invoice_id,
            organization_id: r.organization_id,
            amount_minor: r.amount_minor,
            currency: r.currency,
            to: r.destination,
            reference: r.reference,
            reason: r.reason,
            actor: r.actor,
            created_at: r.created_at,
            failed_at: r.failed_at,
            failure: r.failure,
        }
    }
}

/// An invoice's refund figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    pub invoice_id: i64,
    pub number: Option<String>,
    pub status: InvoiceStatus,
    pub currency: String,
    pub total_minor: i64,
    /// What it received: credit applied and payments.
    pub received_minor: i64,
    pub refunded_minor: i64,
    /// What can still go back, to credit.
    pub refundable_minor: i64,
    /// What can still go back in cash.
    pub cash_refundable_minor: i64,
    /// What downgrades in the periods it paid for gave back of it already as credit (no
    /// longer refundable).
    #[serde(default)]
    pub given_back_minor: i64,
}

impl RefundState {
    fn new(inv: &InvoiceRow, cash_refunded: i64, given_back: i64) -> Self {
        let basis = basis(inv, cash_refunded, given_back);
        let refundable = |left: i64| if inv.status.is_refundable() { left } else { 0 };
        RefundState {
            invoice_id: inv.id,
            number: inv.number.clone(),
            status: inv.status,
            currency: inv.currency.clone(),
            total_minor: inv.total_minor,
            received_minor: inv.credit_applied_minor + inv.paid_minor,
            refunded_minor: inv.refunded_minor,
            refundable_minor: refundable(basis.left()),
            cash_refundable_minor: refundable(basis.cash_left()),
            given_back_minor: given_back,
        }
    }
}

/// How a refund went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    pub refund: Refund,
    /// `false` when this cash refund's reference had already been recorded for this
    /// invoice: nothing changed.
    pub created: bool,
    /// The invoice after it.
    pub invoice: RefundState,
    /// The organization's credit balance after it.
    pub balance_minor: i64,
}

/// The refunds of an invoice.
#[derive(Debug, Clone)]
pub struct InvoiceRefunds {
    pub invoice: RefundState,
    pub refunds: Vec<Refund>,
}

/// What [`Lodge::refund_locked`] did.
pub(crate) enum Refunded {
    /// Refunded: the caller commits.
    Done(RefundOutcome),
    /// This cash reference is recorded already (by another request): nothing was moved,
    /// the caller rolls back and answers with the refund it names.
    Recorded(RefundRow),
}

/// What is left to refund on `inv` (0 when it cannot be refunded), under its lock.
pub(crate) async fn left_to_refund(tx: &mut lodge_store::Tx, inv: &InvoiceRow) -> Result<i64> {
    if !inv.status.is_refundable() {
        return Ok(0);
    }
    let cash_refunded = refunds::cash_refunded(tx, inv.id).await?;
    let given_back = crate::plan_change::given_back_by_downgrades(&mut **tx, inv).await?;
    Ok(basis(inv, cash_refunded, given_back).left())
}

/// What a refund of `inv` is decided on ([`RefundBasis`]).
pub(crate) fn basis(inv: &InvoiceRow, cash_refunded: i64, given_back: i64) -> RefundBasis {
    RefundBasis {
        status: inv.status,
        credit_applied: inv.credit_applied_minor,
        paid: inv.paid_minor,
        refunded: inv.refunded_minor,
        cash_refunded,
        given_back,
    }
}

/// A refusal, in words staff read (amounts in the invoice's currency).
fn refused(r: RefundRefusal, currency: &str) -> ServiceError {
    let m = |minor: i64| crate::amount_text(minor, currency);
    match r {
        RefundRefusal::NotPositive => ServiceError::field("amount", "The amount must be positive."),
        RefundRefusal::NotRefundable(status) => ServiceError::Conflict(format!(
            "This invoice is {status}: only a paid or partially refunded invoice can be refunded."
        )),
        RefundRefusal::MoreThanLeft(0) => {
            ServiceError::Conflict("Nothing is left to refund on this invoice.".into())
        }
        RefundRefusal::MoreThanLeft(left) => ServiceError::Conflict(format!(
            "At most {} is left to refund on this invoice.",
            m(left)
        )),
        RefundRefusal::MoreThanCashLeft(left) => ServiceError::Conflict(format!(
            "At most {} can be refunded in cash: a refund in cash never exceeds the money \
             received for this invoice less what went back in cash, and account credit \
             applied to it can only go back as credit.",
            m(left)
        )),
    }
}

/// The refusal of a refund to a card beyond what the card payment has left.
fn over_card(left_minor: i64, currency: &str) -> ServiceError {
    ServiceError::field(
        "amount",
        format!(
            "At most {} can go back to the card payment; refund the rest as a cash refund with the bank's reference.",
            crate::amount_text(left_minor, currency)
        ),
    )
}

/// Checks what does not depend on the invoice.
fn validate(req: &RefundRequest<'_>) -> Result<()> {
    let mut v = crate::Validator::new();
    if req.amount_minor <= 0 {
        v.add("amount", "The amount must be positive.");
    }
    v.text("reason", req.reason, 500);
    match req.reference {
        Some(r) if r.starts_with(crate::gateway::PENDING_REFUND_PREFIX) => {
            v.add(
                "reference",
                "This reference is reserved for refunds sent to Stripe.",
            );
        }
        Some(r) if r.is_empty() || r.len() > 200 => {
            v.add(
                "reference",
                "A reference is 1 to 200 characters (the bank's or gateway's reference).",
            );
        }
        Some(r) => v.line("reference", r, 200),
        None if req.to == RefundTo::Cash => {
            v.add(
                "reference",
                "A cash refund needs the bank's or gateway's reference of the money sent back.",
            );
        }
        _ => {}
    }
    v.finish()
}

impl Lodge {
    /// Staff refund part or all of what a paid invoice received: to the organization's
    /// credit (a `refund` entry in its ledger) or in cash (recorded; the money left outside
    /// Lodge). The invoice becomes `partially_refunded`, then `refunded` when nothing is left.
    ///
    /// A cash refund's reference recorded again for the same invoice changes nothing (the
    /// first refund, `created: false`); for another invoice it is refused. Under an
    /// `Idempotency-Key` the refund and its stored outcome commit together, so a retry never
    /// refunds twice.
    pub async fn refund_invoice(
        &self,
        invoice: i64,
        req: &RefundRequest<'_>,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<RefundOutcome>> {
        let reference = req.reference.map(str::trim);
        let req = RefundRequest {
            reference,
            reason: req.reason.trim(),
            ..req.clone()
        };
        if req.to == RefundTo::Cash && req.reference.is_none() {
            // Paid by card: the money goes back through the gateway (crate::gateway).
            if let Some((intent, left_on_card)) = self.card_payment_to_refund(invoice).await? {
                validate(&RefundRequest {
                    reference: Some(&intent),
                    ..req.clone()
                })?;
                // Without a key, refused at once; with one, a retry must find its stored
                // answer first (the card has less left after it): the transaction checks
                // again after the key's claim either way.
                if key.is_none() && req.amount_minor > left_on_card {
                    return Err(over_card(left_on_card, self.settings.currency.code()));
                }
                return self
                    .refund_through_gateway(invoice, &intent, &req, actor, key)
                    .await;
            }
        }
        validate(&req)?;
        let org = billing::invoice(&mut self.store.read_conn().await?, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?
            .organization_id;
        self.keyed(key, || self.refund_in_tx(org, invoice, &req, actor, key))
            .await
    }

    pub(crate) async fn refund_in_tx(
        &self,
        org: OrganizationId,
        invoice: i64,
        req: &RefundRequest<'_>,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<RefundOutcome> {
        let mut tx = self.store.begin().await?;
        // The money paths' lock order: the organization, the key, then the invoice.
        billing::lock_credit(&mut tx, org)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if let Some(key) = key {
            self.claim_key_in(&mut tx, key).await?;
        }
        match self
            .refund_locked(&mut tx, org, invoice, req, actor, key)
            .await?
        {
            Refunded::Done(done) => {
                tx.commit().await.map_err(StoreError::from)?;
                Ok(done)
            }
            Refunded::Recorded(existing) => {
                tx.rollback().await.map_err(StoreError::from)?;
                self.already_recorded(existing, invoice, req.amount_minor)
                    .await
            }
        }
    }

    /// The refund itself, in the caller's transaction, which holds the organization's
    /// credit lock (and `key`'s claim) already and commits on [`Refunded::Done`] (on an
    /// error or [`Refunded::Recorded`] it rolls back: nothing here is to be kept).
    pub(crate) async fn refund_locked(
        &self,
        tx: &mut lodge_store::Tx,
        org: OrganizationId,
        invoice: i64,
        req: &RefundRequest<'_>,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Refunded> {
        let now = self.now_us();
        let inv = billing::lock_invoice(tx, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if inv.organization_id != org {
            // Read before the lock; an invoice never changes organization.
            return Err(ServiceError::NotFound);
        }
        if req
            .reference
            .is_some_and(|r| r.starts_with(crate::gateway::PENDING_REFUND_PREFIX))
        {
            // Going back to the card: what it has left, counted again under the invoice's
            // lock (another refund of it may have committed since the check before).
            let payments = billing::payments(&mut **tx, invoice).await?;
            let sent = refunds::refunds_of_invoice(&mut **tx, invoice).await?;
            let intents = crate::gateway::intents_of(&mut **tx, invoice).await?;
            let left =
                crate::gateway::card_left(&payments, &sent, &intents).map_or(0, |(_, left)| left);
            if req.amount_minor > left {
                return Err(over_card(left, &inv.currency));
            }
        }
        let cash_reference = match (req.to, req.reference) {
            (RefundTo::Cash, Some(r)) => Some(r),
            _ => None,
        };
        if let Some(reference) = cash_reference {
            if let Some(existing) = refunds::cash_refund_by_reference(tx, reference).await? {
                return Ok(Refunded::Recorded(existing));
            }
        }
        let cash_refunded = refunds::cash_refunded(tx, invoice).await?;
        let given_back = crate::plan_change::given_back_by_downgrades(&mut **tx, &inv).await?;
        let event = basis(&inv, cash_refunded, given_back)
            .refund(req.amount_minor, req.to)
            .map_err(|r| refused(r, &inv.currency))?;
        let reason = if req.reason.is_empty() {
            "Refunded by staff"
        } else {
            req.reason
        };
        let Some(id) = refunds::insert_refund(
            tx,
            &NewRefund {
                invoice_id: invoice,
                organization_id: org,
                amount_minor: req.amount_minor,
                currency: &inv.currency,
                destination: req.to,
                reference: req.reference,
                reason,
                actor,
                now,
            },
        )
        .await?
        else {
            // A concurrent request recorded this cash reference first (the unique index
            // waited for its commit, possibly on another invoice, whose lock this one does
            // not hold): this one must not move any money (the caller rolls back).
            let existing = match cash_reference {
                Some(r) => {
                    refunds::cash_refund_by_reference(&mut self.store.read_conn().await?, r).await?
                }
                None => None,
            }
            .ok_or_else(|| ServiceError::Internal("a refund was refused unseen".into()))?;
            return Ok(Refunded::Recorded(existing));
        };
        if req
            .reference
            .is_some_and(|r| r.starts_with(crate::gateway::PENDING_REFUND_PREFIX))
        {
            // Sent to Stripe after commit; this job asks again if that answer is lost.
            self.enqueue_card_refund(tx, id).await?;
        }
        if req.to == RefundTo::Credit {
            billing::append_ledger(
                tx,
                &billing::NewLedgerEntry {
                    organization_id: org,
                    kind: "refund",
                    amount_minor: req.amount_minor,
                    currency: &inv.currency,
                    invoice_id: Some(invoice),
                    note: reason,
                    actor,
                    now,
                },
            )
            .await?;
        }
        if !refunds::add_refunded(tx, invoice, req.amount_minor, event, now).await? {
            // Not reached: the status was read under the invoice's lock.
            return Err(ServiceError::Conflict(format!(
                "This invoice is no longer {}.",
                inv.status
            )));
        }
        let refund = refunds::refund(tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let after = billing::invoice(tx, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let cash_after = cash_refunded
            + if req.to == RefundTo::Cash {
                req.amount_minor
            } else {
                0
            };
        let balance_minor = billing::lock_credit(tx, org)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let done = RefundOutcome {
            refund: refund.into(),
            created: true,
            invoice: RefundState::new(&after, cash_after, given_back),
            balance_minor,
        };
        crate::events::emit(
            &mut **tx,
            crate::events::EventKind::PaymentRefunded,
            org,
            format!("invoice:{invoice}"),
            serde_json::json!({
                "invoice_id": invoice,
                "number": after.number,
                "refund_id": id,
                "amount_minor": req.amount_minor,
                "currency": inv.currency,
                "to": req.to.as_str(),
                "reference": req.reference,
                "reason": reason,
                "refunded_minor": after.refunded_minor,
                "status": after.status.as_str(),
            }),
            now,
        )
        .await?;
        if let Some(key) = key {
            self.answer_key_in(tx, key, &done).await?;
        }
        Ok(Refunded::Done(done))
    }

    /// The answer to a cash refund whose reference is recorded already: the first refund
    /// when it was for this invoice and this amount (nothing changed), refused otherwise
    /// (so that staff never believe an amount was recorded that was not).
    async fn already_recorded(
        &self,
        existing: RefundRow,
        invoice: i64,
        amount_minor: i64,
    ) -> Result<RefundOutcome> {
        if existing.invoice_id != invoice {
            return Err(ServiceError::field(
                "reference",
                "This reference was already recorded for a refund of another invoice.",
            ));
        }
        if existing.amount_minor != amount_minor {
            return Err(ServiceError::field(
                "reference",
                format!(
                    "This reference was already recorded for a refund of this invoice with another amount ({}).",
                    crate::amount_text(existing.amount_minor, &existing.currency)
                ),
            ));
        }
        let state = self.refund_state(invoice).await?;
        let balance_minor = lodge_store::orgs::by_id(self.store.reader(), existing.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?
            .credit_balance_minor;
        Ok(RefundOutcome {
            refund: existing.into(),
            created: false,
            invoice: state,
            balance_minor,
        })
    }

    async fn refund_state(&self, invoice: i64) -> Result<RefundState> {
        let mut db = self.store.read_conn().await?;
        let inv = billing::invoice(&mut db, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let cash = refunds::cash_refunded(&mut db, invoice).await?;
        let given_back = crate::plan_change::given_back_by_downgrades(&mut db, &inv).await?;
        Ok(RefundState::new(&inv, cash, given_back))
    }

    /// An invoice's refunds, oldest first, with its refund figures (staff).
    pub async fn invoice_refunds(&self, invoice: i64) -> Result<InvoiceRefunds> {
        let state = self.refund_state(invoice).await?;
        let rows = refunds::refunds_of_invoice(self.store.reader(), invoice).await?;
        Ok(InvoiceRefunds {
            invoice: state,
            refunds: rows.into_iter().map(Refund::from).collect(),
        })
    }
}
