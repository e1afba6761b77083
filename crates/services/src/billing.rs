//! Account credit, payments and what a paid invoice sets in motion.

use std::collections::BTreeSet;

use lodge_core::{
    dates, DomainEvent, DomainId, DomainStatus, HostingEvent, HostingId, HostingStatus,
    InvoiceKind, InvoiceStatus, OrderEvent, OrderStatus, OrganizationId, PaymentId,
};
use lodge_store::billing::{self, InvoiceRow, LedgerRow, LineRow, PaymentRow};
use lodge_store::{hosting, jobs, AnyConnection, StoreError};

use crate::auth::Access;
use crate::commit::WriteCtx;
use crate::idempotency::{self, Answer, IdempotencyKey, Keyed};
use crate::{Lodge, Result, ServiceError};

pub mod batch;

pub use batch::PaymentBatcher;

/// An invoice with its lines and payments.
#[derive(Debug, Clone)]
pub struct InvoiceDetail {
    pub invoice: InvoiceRow,
    pub lines: Vec<LineRow>,
    pub payments: Vec<PaymentRow>,
    /// Why the last card payment failed, while the invoice is payable.
    pub card_failure: Option<String>,
    /// A card payment for it went to account credit (it was cancelled meanwhile).
    pub card_credited: bool,
}

/// How a staff-recorded payment went.
#[derive(Debug, Clone)]
pub struct PaymentOutcome {
    pub payment: PaymentRow,
    /// `false` when the same method and reference had already been recorded: nothing changed.
    pub created: bool,
    pub invoice: InvoiceRow,
}

/// What [`Lodge::record_payment`] does with money for an invoice paid or cancelled already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfSettled {
    /// Refused (`Conflict`): the caller decides (a card payment goes to credit its own way).
    Refuse,
    /// Recorded with its reference, all of it to the account's credit (money staff received:
    /// a customer who paid twice, a transfer after the invoice expired).
    ToCredit,
}

/// A deposit made: the organization's balance after it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deposit {
    pub organization_id: OrganizationId,
    pub balance_minor: i64,
}

/// Provisioning job kinds.
pub const JOB_PROVISION: &str = "provision_hosting";
pub const JOB_REGISTER_DOMAIN: &str = "register_domain";

/// The dedupe key of an account's termination, named for what asked for it (`cancel:{when
/// it was asked}`, `overdue:{invoice}`, `staff:{when}`): every path that decides the same
/// termination (several scheduler passes, several nodes) queues it once, while a later
/// decision is a new job. One key per account for ever (`terminate:{id}`) kept every
/// termination out after the first job had run, even one that did nothing because its
/// cancellation had been withdrawn (found by the panels audit).
pub fn terminate_key(id: HostingId, cause: &str) -> String {
    format!("terminate:{id}:{cause}")
}

/// Cancels an unpaid invoice (`inv`, read under its lock) and gives back what it received:
/// the credit applied and the money received return to the organization's credit as one
/// `refund` entry. `false`, and nothing written, when it was no longer unpaid.
pub(crate) async fn cancel_returning(
    conn: &mut lodge_store::AnyConnection,
    inv: &billing::InvoiceRow,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<bool> {
    if !billing::cancel_invoice(conn, inv.id, now).await? {
        return Ok(false);
    }
    crate::events::invoice_event(
        &mut *conn,
        crate::events::EventKind::InvoiceCancelled,
        inv.id,
        now,
    )
    .await?;
    let returned = inv.credit_applied_minor + inv.paid_minor;
    if returned > 0 {
        billing::append_ledger(
            conn,
            &billing::NewLedgerEntry {
                organization_id: inv.organization_id,
                kind: "refund",
                amount_minor: returned,
                currency: &inv.currency,
                invoice_id: Some(inv.id),
                note,
                actor,
                now,
            },
        )
        .await?;
    }
    Ok(true)
}

/// Puts back in the ledger what came off an unpaid invoice whose total went down
/// ([`lodge_store::renewals::move_unpaid_total`]): the credit applied beyond it (an
/// `applied` entry the other way: the invoice shows what its entries sum to), and the
/// money received beyond it (a `deposit`, as an overpayment is).
pub(crate) async fn give_back<C: lodge_store::SqlConn>(
    conn: &mut C,
    inv: &billing::InvoiceRow,
    returned: lodge_store::renewals::Returned,
    why: &str,
    actor: &str,
    now: i64,
) -> Result<()> {
    for (kind, amount_minor, note) in [
        ("applied", returned.credit, format!("Returned: {why}")),
        (
            "deposit",
            returned.paid,
            format!("Received beyond the invoice's new total: {why}"),
        ),
    ] {
        if amount_minor > 0 {
            billing::append_ledger(
                conn,
                &billing::NewLedgerEntry {
                    organization_id: inv.organization_id,
                    kind,
                    amount_minor,
                    currency: &inv.currency,
                    invoice_id: Some(inv.id),
                    note: &note,
                    actor,
                    now,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Whether a termination of the account is queued or running already (another decision's):
/// it ends the account, and two at once would both archive and drop its files and
/// database (the worker does not serialize jobs by account), so the scheduler queues none.
pub(crate) async fn termination_waiting(conn: &mut AnyConnection, id: &str) -> Result<bool> {
    Ok(!jobs::open_kinds_for_hosting(conn, id, &[JOB_TERMINATE])
        .await?
        .is_empty())
}
pub const JOB_TRANSFER_DOMAIN: &str = "transfer_domain";
pub const JOB_TERMINATE: &str = "terminate_hosting";

impl Lodge {
    /// Enqueues a job in the caller's transaction (once per dedupe key); whether it was new.
    pub(crate) async fn enqueue<C: lodge_store::SqlConn>(
        &self,
        conn: &mut C,
        kind: &str,
        payload: serde_json::Value,
        dedupe_key: &str,
    ) -> Result<bool> {
        let payload = payload.to_string();
        Ok(jobs::enqueue(conn, &new_job(self.now_us(), kind, &payload, dedupe_key)).await?)
    }

    /// After money reached an invoice: mark it paid if covered, and activate what it pays
    /// for ([`settle`]).
    pub(crate) async fn settle<C: lodge_store::SqlConn>(
        &self,
        conn: &mut C,
        invoice: &InvoiceRow,
        actor: &str,
    ) -> Result<bool> {
        settle(&self.write_ctx(actor), conn, invoice).await
    }

    /// Staff add account credit (a deposit in the ledger), or take some off (a negative
    /// amount: an `adjustment`, never below a zero balance): the new balance. Under an
    /// `Idempotency-Key` the deposit and its stored outcome commit together
    /// ([`crate::idempotency`]), so a retry never deposits twice.
    pub async fn add_credit(
        &self,
        org: OrganizationId,
        amount_minor: i64,
        note: &str,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<Deposit>> {
        let mut v = crate::Validator::new();
        if amount_minor == 0 {
            v.add("amount", "The amount must not be zero.");
        }
        // The ledger entry's note, which the customer sees.
        v.text("note", note, 500);
        v.finish()?;
        self.keyed(key, || async {
            let now = self.now_us();
            let mut tx = self.store.begin().await?;
            let balance = billing::lock_credit(&mut tx, org)
                .await?
                .ok_or(ServiceError::NotFound)?;
            if balance.saturating_add(amount_minor) > lodge_core::money::MAX_BALANCE_MINOR {
                return Err(ServiceError::field(
                    "amount",
                    "This deposit would take the balance past the largest one Lodge keeps.",
                ));
            }
            // Credit taken off (staff correcting a deposit typed wrong: found by the staff
            // audit, there was no way to) never takes the balance below zero.
            if balance.saturating_add(amount_minor) < 0 {
                let cur = self.settings.currency;
                return Err(ServiceError::Conflict(format!(
                    "The balance is {}: at most that much can be taken off.",
                    lodge_core::Money::new(balance, cur)
                )));
            }
            if let Some(key) = key {
                self.claim_key_in(&mut tx, key).await?;
            }
            let balance_minor = billing::append_ledger(
                &mut tx,
                &billing::NewLedgerEntry {
                    organization_id: org,
                    kind: if amount_minor > 0 {
                        "deposit"
                    } else {
                        "adjustment"
                    },
                    amount_minor,
                    currency: self.settings.currency.code(),
                    invoice_id: None,
                    note,
                    actor,
                    now,
                },
            )
            .await?;
            // Told to integrators, whose mirror of the balance drifted without it (found
            // by the integrator audit).
            crate::events::emit(
                &mut *tx,
                crate::events::EventKind::CreditAdjusted,
                org,
                format!("organization:{org}"),
                serde_json::json!({
                    "amount_minor": amount_minor,
                    "currency": self.settings.currency.code(),
                    "balance_minor": balance_minor,
                    "note": note,
                    "by": crate::events::by(actor),
                }),
                now,
            )
            .await?;
            let done = Deposit {
                organization_id: org,
                balance_minor,
            };
            if let Some(key) = key {
                self.answer_key_in(&mut tx, key, &done).await?;
            }
            tx.commit().await.map_err(StoreError::from)?;
            Ok(done)
        })
        .await
    }

    /// An organization's balance and a page of its ledger.
    pub async fn credit(
        &self,
        access: &Access,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<LedgerRow>, i64)> {
        access.require_org_wide()?;
        let org = self.organization(access).await?;
        let (rows, count) =
            billing::ledger_page(self.store.reader(), access.organization, limit, offset).await?;
        Ok((org.credit_balance_minor, rows, count))
    }

    pub async fn invoice_detail(&self, id: i64) -> Result<InvoiceDetail> {
        let invoice = billing::invoice(&mut self.store.read_conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let lines = billing::lines(self.store.reader(), id).await?;
        let payments = billing::payments(self.store.reader(), id).await?;
        let card_failure = if invoice.status.is_payable() {
            self.card_failure(id).await?
        } else {
            None
        };
        let card_credited = invoice.status == lodge_core::InvoiceStatus::Cancelled
            && lodge_store::cards::of_invoice(&mut self.store.read_conn().await?, id)
                .await?
                .iter()
                .any(|c| c.status == crate::gateway::STATUS_CREDITED);
        Ok(InvoiceDetail {
            invoice,
            lines,
            payments,
            card_failure,
            card_credited,
        })
    }

    /// An invoice of the caller's organization (`NotFound` for anyone else's).
    pub async fn org_invoice(&self, access: &Access, id: i64) -> Result<InvoiceDetail> {
        access.require_org_wide()?;
        let d = self.invoice_detail(id).await?;
        if d.invoice.organization_id != access.organization {
            return Err(ServiceError::NotFound);
        }
        Ok(d)
    }

    /// The invoice of a payment token (the payment page's): found by the token's digest
    /// (the database holds no token, [`crate::payment_tokens`]), so no comparison with a
    /// stored secret can take longer for a nearer guess.
    pub async fn invoice_by_token(&self, token: &str) -> Result<InvoiceDetail> {
        if !crate::payment_tokens::plausible(token) {
            return Err(ServiceError::NotFound);
        }
        let digest = crate::payment_tokens::digest(token);
        let inv = billing::invoice_by_token_digest(self.store.reader(), &digest)
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.invoice_detail(inv.id).await
    }

    /// Pays unpaid invoices in full from account credit, all or none (the payment page,
    /// `/apiv2` prepay). `Conflict` when one is no longer unpaid or the balance does not
    /// cover what is due.
    pub async fn pay_from_credit(&self, invoices: &[i64], actor: &str) -> Result<()> {
        self.pay_from_credit_keyed(invoices, actor, None).await
    }

    /// Staff pay one invoice in full from its organization's credit ([`Lodge::pay_from_credit`]).
    /// Under an `Idempotency-Key` the payment and its outcome commit together, and a retry
    /// (its answer lost) is answered that outcome instead of "This invoice is paid", which
    /// cannot tell this payment from another's (found by the crash audit).
    pub async fn pay_from_credit_by_staff(
        &self,
        invoice: i64,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<()>> {
        self.keyed(key, || async {
            let keyed = key.map(|k| Keyed::new(k, &())).transpose()?;
            self.pay_from_credit_keyed(&[invoice], actor, keyed).await
        })
        .await
    }

    /// [`Lodge::pay_from_credit`], under an `Idempotency-Key` when `keyed`: the key's claim,
    /// the payment and the outcome stored under the key commit together.
    pub(crate) async fn pay_from_credit_keyed(
        &self,
        invoices: &[i64],
        actor: &str,
        keyed: Option<Keyed>,
    ) -> Result<()> {
        if let Some(payments) = &self.payments {
            // SQLite: on the batch writer's thread, sharing a commit with the payments
            // waiting at the same moment (each all-or-nothing on its own).
            return payments
                .submit(batch::Payment {
                    env: self.write_env(actor),
                    invoices: invoices.to_vec(),
                    keyed,
                })
                .await;
        }
        let mut tx = self.store.begin().await?;
        pay_from_credit_in(
            &self.write_ctx(actor),
            &mut tx,
            invoices,
            keyed.as_ref(),
            None,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Removes the unpaid first invoice of a pending order, cancelling that order and its
    /// services. `Conflict` for any other invoice, or when the order was paid meanwhile.
    /// Under an `Idempotency-Key` the deletion and its stored outcome commit together, and a
    /// retry is answered that outcome (not "only the unpaid first invoice…").
    pub async fn delete_pending_invoice(
        &self,
        access: &Access,
        id: i64,
        actor: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Answer<()>> {
        access.require_write()?;
        self.keyed(key, || async {
            let inv = billing::invoice(&mut self.store.read_conn().await?, id)
                .await?
                .filter(|i| i.organization_id == access.organization)
                .ok_or(ServiceError::NotFound)?;
            let mut tx = self.store.begin().await?;
            // The money paths' lock order: the organization, then the key.
            billing::lock_credit(&mut tx, inv.organization_id).await?;
            if let Some(key) = key {
                self.claim_key_in(&mut tx, key).await?;
            }
            self.cancel_unpaid_in(&mut tx, &inv, "Invoice deleted by the customer", actor)
                .await?;
            if let Some(key) = key {
                self.answer_key_in(&mut tx, key, &()).await?;
            }
            tx.commit().await.map_err(StoreError::from)?;
            Ok(())
        })
        .await
    }

    /// Staff cancel an unpaid invoice a customer no longer wants, as the customer may: an
    /// order's first invoice (the order and its services cancelled) or a plan change's (the
    /// change withdrawn); what it received goes back to credit. Returns it as it is now.
    pub async fn cancel_invoice_by_staff(&self, id: i64, actor: &str) -> Result<InvoiceDetail> {
        let inv = billing::invoice(&mut self.store.read_conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, inv.organization_id).await?;
        self.cancel_unpaid_in(&mut tx, &inv, "Invoice cancelled by staff", actor)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.invoice_detail(id).await
    }

    /// The writes of cancelling an unpaid invoice its customer no longer wants (see
    /// [`Lodge::cancel_invoice_by_staff`]), the organization locked: `Conflict` for any
    /// other invoice (a renewal is ended by cancelling its account), or one paid meanwhile.
    async fn cancel_unpaid_in(
        &self,
        tx: &mut AnyConnection,
        inv: &InvoiceRow,
        note: &str,
        actor: &str,
    ) -> Result<()> {
        let done = match (inv.kind, inv.order_id) {
            (InvoiceKind::First, Some(order)) if inv.status.is_payable() => {
                self.cancel_pending_order(tx, inv.organization_id, order, note, actor)
                    .await?
            }
            (InvoiceKind::Manual, _) if inv.status.is_payable() => {
                crate::plan_change::withdraw_change_in(tx, inv.id, actor, self.now_us()).await?
            }
            _ => false,
        };
        if done {
            Ok(())
        } else {
            Err(ServiceError::Conflict(
                "Only an unpaid first invoice of a pending service, or the unpaid invoice of a \
                 plan change, can be cancelled (a renewal ends with its account's cancellation)."
                    .into(),
            ))
        }
    }

    /// Staff record a payment received outside Lodge (bank transfer, cheque…). The same
    /// `(method, reference)` twice changes nothing the second time; paying more than is due
    /// puts the rest on the account as credit. For an invoice paid or cancelled already,
    /// `settled` says what happens: refused (`Conflict`), or recorded and all of it put on
    /// the account as credit.
    pub async fn record_payment(
        &self,
        invoice: i64,
        amount_minor: i64,
        method: &str,
        reference: &str,
        actor: &str,
        settled: IfSettled,
    ) -> Result<PaymentOutcome> {
        let mut v = crate::Validator::new();
        if amount_minor <= 0 {
            v.add("amount", "The amount must be positive.");
        }
        let method_ok = !method.is_empty()
            && method.len() <= 32
            && method
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
        if !method_ok {
            v.add(
                "method",
                "A method is lowercase letters, digits and _ (e.g. bank_transfer).",
            );
        } else if CREDIT_METHODS.contains(&method) {
            // Money received, not credit moved (found by the support-desk audit: `credit`
            // marked the invoice paid, the balance untouched, and made it refundable in
            // cash).
            v.add(
                "method",
                "A recorded payment is money received. To pay an invoice from the account's \
                 credit, use POST /v1/admin/invoices/{invoice_id}/pay-from-credit.",
            );
        }
        let reference = reference.trim();
        if reference.is_empty() || reference.len() > 200 {
            v.add(
                "reference",
                "A transaction reference of 1 to 200 characters is required.",
            );
        } else {
            // Shown to the customer on the invoice: one line, no bidi overrides (found by
            // the staff audit: a line break was kept).
            v.line("reference", reference, 200);
        }
        v.finish()?;
        let now = self.now_us();
        let org = billing::invoice(&mut self.store.read_conn().await?, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?
            .organization_id;
        let mut tx = self.store.begin().await?;
        // The money paths' lock order: the organization, then the invoice.
        billing::lock_credit(&mut tx, org)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let inv = billing::lock_invoice(&mut tx, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if let Some(existing) = billing::payment_by_reference(&mut *tx, method, reference).await? {
            same_payment(&existing, invoice, amount_minor, &inv.currency)?;
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(PaymentOutcome {
                payment: existing,
                created: false,
                invoice: inv,
            });
        }
        // Money that arrived for an invoice paid or cancelled since (a customer paying
        // twice, a transfer after the invoice expired or its upgrade lapsed) is recorded with
        // its reference and goes to the account's credit whole, as a card payment in that
        // case does (found by the accountant's audit: refused, the money had no way in but
        // a deposit with no method nor reference).
        let settled_already = !inv.status.is_payable();
        if settled_already && (settled == IfSettled::Refuse || inv.status == InvoiceStatus::Draft) {
            return Err(ServiceError::Conflict(format!(
                "This invoice is {}.",
                inv.status
            )));
        }
        // A card payment Stripe reported for an invoice that could no longer take it was put
        // to credit then, with no payment row: recorded again by hand (from the Stripe
        // dashboard), it would be credited twice (found by review).
        if let Some(card) =
            lodge_store::cards::by_intent(&mut *tx, crate::gateway::GATEWAY_STRIPE, reference)
                .await?
        {
            if card.status == crate::gateway::STATUS_CREDITED {
                return Err(ServiceError::Conflict(format!(
                    "The card payment {reference} was put to the account's credit already, \
                     when Stripe reported it."
                )));
            }
        }
        let id = PaymentId::new();
        let inserted = billing::insert_payment(
            &mut tx,
            &billing::NewPayment {
                id,
                invoice_id: invoice,
                organization_id: inv.organization_id,
                method,
                reference,
                amount_minor,
                currency: &inv.currency,
                actor,
                now,
            },
        )
        .await?;
        if !inserted {
            // A concurrent request recorded this reference first (the unique key waited for
            // it, possibly on another invoice, which the lock above does not cover): this
            // one must not move any money.
            tx.rollback().await.map_err(StoreError::from)?;
            let existing = billing::payment_by_reference(self.store.reader(), method, reference)
                .await?
                .ok_or(ServiceError::NotFound)?;
            same_payment(&existing, invoice, amount_minor, &inv.currency)?;
            let inv = billing::invoice(&mut self.store.read_conn().await?, invoice)
                .await?
                .ok_or(ServiceError::NotFound)?;
            return Ok(PaymentOutcome {
                payment: existing,
                created: false,
                invoice: inv,
            });
        }
        let settled = settled_already;
        let due = if settled { 0 } else { inv.amount_due() };
        let to_invoice = amount_minor.min(due);
        if to_invoice > 0 {
            billing::add_paid(&mut tx, invoice, to_invoice, now).await?;
        }
        crate::events::payment_received(
            &mut *tx,
            &crate::events::Received {
                organization_id: inv.organization_id,
                invoice_id: invoice,
                number: inv.number.as_deref(),
                payment_id: Some(id.to_string()),
                amount_minor,
                currency: &inv.currency,
                method,
                reference,
                to_credit_minor: amount_minor - to_invoice,
                amount_due_minor: due - to_invoice,
            },
            now,
        )
        .await?;
        let excess = amount_minor - to_invoice;
        if excess > 0 {
            let note = if settled {
                let was = if inv.status == InvoiceStatus::Cancelled {
                    "cancelled"
                } else {
                    "paid"
                };
                format!("Payment received for an invoice already {was}")
            } else {
                OVERPAYMENT_NOTE.to_owned()
            };
            billing::lock_credit(&mut tx, inv.organization_id).await?;
            billing::append_ledger(
                &mut tx,
                &billing::NewLedgerEntry {
                    organization_id: inv.organization_id,
                    kind: "deposit",
                    amount_minor: excess,
                    currency: &inv.currency,
                    invoice_id: Some(invoice),
                    note: &note,
                    actor,
                    now,
                },
            )
            .await?;
        }
        if !settled {
            let current = billing::invoice(&mut tx, invoice)
                .await?
                .ok_or(ServiceError::NotFound)?;
            self.settle(&mut tx, &current, actor).await?;
        }
        let payment = billing::payment_by_reference(&mut *tx, method, reference)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let invoice_row = billing::invoice(&mut tx, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(PaymentOutcome {
            payment,
            created: true,
            invoice: invoice_row,
        })
    }

    /// Cancels a pending order: its unpaid invoices, its hosting accounts and pending
    /// domains. `false` (and nothing written) when the order was not pending. Takes its
    /// locks in the money paths' one order: the organization, the order's invoices by
    /// ascending id, then the order, its accounts and domains, so it never deadlocks with a
    /// payment of the same invoice.
    ///
    /// `org` is the order's organization, locked first (on SQLite this first write takes the
    /// database's write lock, before anything is read); an order of another organization is
    /// left alone (`false`).
    pub(crate) async fn cancel_pending_order(
        &self,
        conn: &mut AnyConnection,
        org: OrganizationId,
        order_id: i64,
        note: &str,
        actor: &str,
    ) -> Result<bool> {
        let now = self.now_us();
        billing::lock_credit(conn, org).await?;
        let coupon = match billing::order(&mut *conn, order_id).await? {
            Some(order) if order.organization_id == org => order.coupon_id,
            _ => return Ok(false),
        };
        let mut invoices = Vec::new();
        for inv in billing::invoices_of_order(&mut *conn, order_id).await? {
            // Read under the invoice's lock: a payment being recorded at this moment is
            // either in these figures or waits for this transaction.
            if let Some(locked) = billing::lock_invoice(conn, inv.id).await? {
                invoices.push(locked);
            }
        }
        if !billing::transition_order(conn, order_id, OrderEvent::Cancel, now).await? {
            return Ok(false);
        }
        // Never paid: its use of a limited coupon is given back (found by the money audit:
        // ordering with a coupon and deleting the invoice used a one-use coupon up).
        if let Some(coupon) = coupon {
            lodge_store::catalog::release_coupon(conn, &coupon).await?;
        }
        for inv in invoices {
            let note = if inv.paid_minor > 0 {
                "Credit and payments returned from a cancelled invoice"
            } else {
                "Credit returned from a cancelled invoice"
            };
            cancel_returning(conn, &inv, note, actor, now).await?;
        }
        let accounts = hosting::order_accounts(conn, order_id).await?;
        for &(id, _, domain) in &accounts {
            hosting::transition(conn, id, HostingEvent::Cancel, note, actor, now).await?;
            if let Some(d) = domain {
                if hosting::domain_status_of_order(conn, d, order_id)
                    .await?
                    .is_some()
                {
                    hosting::set_domain_status(conn, d, DomainEvent::Cancel, now).await?;
                }
            }
        }
        // Told as `order.created` was (found by the integrator audit: a mirror of orders
        // had only `invoice.cancelled` to guess an order's end from).
        let domain = match accounts.first() {
            Some(&(id, ..)) => hosting::account_billing(&mut *conn, id)
                .await?
                .map(|h| h.domain_name),
            None => None,
        };
        crate::events::emit(
            conn,
            crate::events::EventKind::OrderCancelled,
            org,
            format!("order:{order_id}"),
            serde_json::json!({
                "order_id": order_id,
                "order_number": crate::orders::order_number(order_id),
                "hosting_id": accounts.first().map(|&(id, ..)| id),
                "domain": domain,
                "note": note,
                "by": crate::events::by(actor),
            }),
            now,
        )
        .await?;
        Ok(true)
    }
}

/// The ledger note of what a payment brought beyond what its invoice still owed (the
/// receipt counts these as what the invoice's payments put on credit).
pub(crate) const OVERPAYMENT_NOTE: &str = "Overpayment of an invoice";

/// Methods that name account credit, which a recorded payment (money received) is not.
const CREDIT_METHODS: [&str; 10] = [
    "credit",
    "account_credit",
    "store_credit",
    "credit_balance",
    "prepay",
    "prepaid",
    "prepayment",
    "balance",
    "account_balance",
    "wallet",
];

/// A job to enqueue now.
fn new_job<'a>(now: i64, kind: &'a str, payload: &'a str, dedupe_key: &'a str) -> jobs::NewJob<'a> {
    jobs::NewJob {
        kind,
        payload,
        dedupe_key: Some(dedupe_key),
        run_at: now,
        max_attempts: 8,
        now,
    }
}

/// Enqueues a job (once per dedupe key), through [`lodge_store::SqlConn::insert_later`].
pub(crate) async fn enqueue_later<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    kind: &str,
    payload: serde_json::Value,
    dedupe_key: &str,
) -> Result<()> {
    let payload = payload.to_string();
    Ok(jobs::enqueue_later(conn, &new_job(ctx.now, kind, &payload, dedupe_key)).await?)
}

/// The ledger's entry of `amount` of the organization's credit applied to an invoice. Alone
/// (`pending` is `None`) the balance moves with it: call with the organization's row
/// locked. In a batch that follows its organizations' balances in memory, the entry is
/// written with the balance it leaves and the balance moves after the batch's last unit
/// (`pending`: the batch's [`billing::PendingMoves`] and that balance).
pub(crate) async fn spend_credit<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    org: OrganizationId,
    invoice: i64,
    amount: i64,
    pending: Option<(&mut billing::PendingMoves, i64)>,
) -> Result<()> {
    let entry = billing::NewLedgerEntry {
        organization_id: org,
        kind: "applied",
        amount_minor: -amount,
        currency: ctx.currency,
        invoice_id: Some(invoice),
        note: "Applied to invoice",
        actor: ctx.actor,
        now: ctx.now,
    };
    match pending {
        Some((moves, balance_after)) => moves.append(conn, &entry, balance_after).await?,
        None => {
            billing::append_ledger(conn, &entry).await?;
        }
    }
    Ok(())
}

/// What activating one hosting account of an order writes, whether its order is paid as it
/// is placed (the rows are written in this final state) or later (a pending order's rows
/// are moved to it): decided here once for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Activation {
    /// The order's status once active.
    pub order: OrderStatus,
    /// The account's status once active.
    pub hosting: HostingStatus,
    /// The first period, starting on the day it is paid: `(start, end)`. It is the plan
    /// line's period and its end the account's next due date. `None` without a period.
    pub period: Option<(String, String)>,
    /// The registrar's work on the order's own domain object, if it brought one.
    pub domain_job: Option<&'static str>,
}

impl Activation {
    /// The activation of an account paid `today` whose first period lasts
    /// `first_period_months`, and whose order brought a domain object in `domain` status.
    pub(crate) fn plan(
        today: jiff::civil::Date,
        first_period_months: Option<u32>,
        domain: Option<DomainStatus>,
    ) -> Activation {
        Activation {
            order: OrderStatus::Pending
                .next(OrderEvent::Paid)
                .unwrap_or(OrderStatus::Active),
            hosting: HostingStatus::Pending
                .next(HostingEvent::Paid)
                .unwrap_or(HostingStatus::Provisioning),
            period: first_period_months
                .map(|m| (today.to_string(), dates::add_months(today, m).to_string())),
            domain_job: match domain {
                Some(DomainStatus::PendingRegistration) => Some(JOB_REGISTER_DOMAIN),
                Some(DomainStatus::PendingTransfer) => Some(JOB_TRANSFER_DOMAIN),
                _ => None,
            },
        }
    }

    /// The account's next due date: the end of its first period.
    pub(crate) fn next_due_date(&self) -> Option<&str> {
        self.period.as_ref().map(|(_, end)| end.as_str())
    }

    /// Enqueues the jobs of an activated account: provisioning it, and the registrar's
    /// work on its domain, each once.
    pub(crate) async fn enqueue_jobs<C: lodge_store::SqlConn>(
        &self,
        ctx: &WriteCtx<'_>,
        conn: &mut C,
        hosting_id: HostingId,
        domain_id: Option<DomainId>,
    ) -> Result<()> {
        enqueue_later(
            ctx,
            conn,
            JOB_PROVISION,
            serde_json::json!({ "hosting_id": hosting_id }),
            &format!("provision:{hosting_id}"),
        )
        .await?;
        if let (Some(d), Some(kind)) = (domain_id, self.domain_job) {
            enqueue_later(
                ctx,
                conn,
                kind,
                serde_json::json!({ "domain_id": d }),
                &format!("{kind}:{d}"),
            )
            .await?;
        }
        Ok(())
    }
}

/// A pending order whose first invoice (`first_invoice`) is paid: the order becomes active
/// and each of its hosting accounts is activated ([`Activation`]: provisioning, its first
/// period starting today, its jobs enqueued — once). `false` when the order was not pending.
///
/// The order and its accounts are read in one statement (in a batch of payments, with the
/// batch's invoices: [`batch::PayMemo`]) and each move is decided from what was read and
/// written only from the status it was decided from ([`billing::PendingActivations`]): at
/// once alone, after the batch's last payment in a batch. The rows nothing reads again
/// (history, jobs) are written with the caller's other rows.
pub(crate) async fn activate_order<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    order_id: i64,
    first_invoice: i64,
    mut memo: Option<&mut batch::PayMemo>,
) -> Result<bool> {
    let read = match memo.as_deref_mut().and_then(|m| m.order(order_id)) {
        Some(order) => Some(order),
        None => billing::orders_to_activate(conn, &[order_id]).await?.pop(),
    };
    let Some(order) = read else {
        return Ok(false);
    };
    let Some(to) = order.status.next(OrderEvent::Paid) else {
        return Ok(false);
    };
    let mut alone = billing::PendingActivations::default();
    let in_batch = memo.is_some();
    let moves = match memo {
        Some(m) => m.activations(),
        None => &mut alone,
    };
    moves.order(order.id, order.status, to, ctx.now);
    for a in order.accounts {
        let Some(next) = a.status.next(HostingEvent::Paid) else {
            continue;
        };
        let months = a.first_period_months.map(|m| u32::try_from(m).unwrap_or(0));
        let activation = Activation::plan(ctx.today, months, a.domain_status);
        moves.account(a.id, (a.status, next), activation.period.clone(), ctx.now);
        if let Some((start, end)) = &activation.period {
            moves.line_period(first_invoice, a.id, start, end);
        }
        hosting::record_history(conn, a.id, Some(a.status), next, "paid", ctx.actor, ctx.now)
            .await?;
        activation
            .enqueue_jobs(ctx, conn, a.id, a.domain_id)
            .await?;
    }
    if !in_batch {
        alone.write(conn).await?;
    }
    Ok(true)
}

/// After money reached an invoice: mark it paid if covered, and activate what it pays for.
/// Returns whether this call marked it paid.
pub(crate) async fn settle<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoice: &InvoiceRow,
) -> Result<bool> {
    if !billing::mark_paid(conn, invoice.id, ctx.now).await? {
        return Ok(false);
    }
    settled(ctx, conn, invoice, None, None).await?;
    Ok(true)
}

/// What follows an invoice's becoming paid (by this transaction): the order it is the first
/// invoice of is activated, the renewal or plan change it bills takes effect, and the event
/// `invoice.paid` is recorded — of `paid`, the invoice as it is now, when the caller has it
/// (else read again).
async fn settled<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoice: &InvoiceRow,
    paid: Option<&InvoiceRow>,
    memo: Option<&mut batch::PayMemo>,
) -> Result<()> {
    match (invoice.order_id, invoice.kind) {
        (Some(order), InvoiceKind::First) => {
            activate_order(ctx, conn, order, invoice.id, memo).await?;
        }
        (_, InvoiceKind::Renewal) => {
            crate::renewals::renewal_paid(ctx, conn, invoice.id).await?;
        }
        _ => {}
    }
    crate::plan_change::on_invoice_paid(ctx, conn, invoice).await?;
    let kind = crate::events::EventKind::InvoicePaid;
    match paid {
        Some(row) => crate::events::invoice_event_of(conn, kind, row, ctx.now).await,
        None => crate::events::invoice_event(conn, kind, invoice.id, ctx.now).await,
    }
}

/// The writes of [`Lodge::pay_from_credit`], inside a transaction; on `Err` nothing of it
/// may be committed. Takes its locks in the money paths' one order (docs/architecture.md):
/// the organizations, then the invoices by ascending id, then (settling them) their orders
/// and accounts. Each organization's balance is read once, under its lock, and followed
/// through the payment in memory.
pub(crate) async fn pay_from_credit_in<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoices: &[i64],
    keyed: Option<&Keyed>,
    mut memo: Option<&mut batch::PayMemo>,
) -> Result<()> {
    let ids: BTreeSet<i64> = invoices.iter().copied().collect();
    let mut balances = std::collections::BTreeMap::new();
    // In a batch, what its first payment read of every invoice and organization of the
    // batch, followed in memory; alone, read here.
    let mut known = std::collections::BTreeMap::new();
    if let Some(m) = memo.as_deref_mut() {
        for &id in &ids {
            let inv = m.invoice(conn, id).await?.ok_or(ServiceError::NotFound)?;
            let balance = m
                .balance(inv.organization_id)
                .ok_or(ServiceError::NotFound)?;
            balances.insert(inv.organization_id, balance);
            known.insert(id, inv);
        }
    } else {
        let mut orgs = BTreeSet::new();
        for &id in &ids {
            let inv = billing::invoice(conn, id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            orgs.insert(inv.organization_id);
        }
        for org in orgs {
            let balance = billing::lock_credit(conn, org)
                .await?
                .ok_or(ServiceError::NotFound)?;
            balances.insert(org, balance);
        }
    }
    // The money paths' lock order: the organizations, the key, then the invoices (a
    // batch locked its keys before its first payment).
    if let Some(k) = keyed {
        idempotency::claim_in(conn, &k.key, ctx.now).await?;
    }
    for id in ids {
        let inv = match known.remove(&id) {
            Some(inv) => inv,
            None => billing::lock_invoice(conn, id)
                .await?
                .ok_or(ServiceError::NotFound)?,
        };
        if !inv.status.is_payable() {
            return Err(ServiceError::Conflict(format!(
                "This invoice is {}.",
                inv.status
            )));
        }
        let due = inv.amount_due();
        // Not locked above: the invoice moved to another organization meanwhile, which no
        // path does; refused rather than paid from a balance not locked.
        let balance = balances
            .get_mut(&inv.organization_id)
            .ok_or(ServiceError::NotFound)?;
        if *balance < due {
            return Err(ServiceError::InsufficientCredit(
                "The account credit does not cover what is due.".into(),
            ));
        }
        if due > 0 {
            *balance -= due;
            let pending = memo.as_deref_mut().map(|m| (m.pending(), *balance));
            spend_credit(ctx, conn, inv.organization_id, id, due, pending).await?;
        }
        // Locked and unpaid above, and covered by what was applied: it is paid now. In a
        // batch, a first invoice is written paid with the orders it activates, after the
        // last payment (nothing before reads it from the database; a renewal's or a plan
        // change's settling reads other invoices and rows, so theirs are written here).
        let paid = match memo.as_deref_mut() {
            Some(m) if inv.kind == InvoiceKind::First => m.pay_in_full(&inv, due, ctx.now),
            _ => billing::apply_credit_in_full(conn, id, due, ctx.now)
                .await?
                .ok_or_else(|| {
                    ServiceError::Internal(format!("invoice {id} was not marked paid"))
                })?,
        };
        // A renewal's or a plan change's settling may move credit itself (spend it on the
        // next period's difference it issues, or give some back): in a batch, the balance
        // is moved to what the batch followed first; on every path it is read again after
        // (found by the accounting audit: on PostgreSQL that entry's `balance_after` ignored
        // this payment's; and by review: the next invoice of the same payment started from
        // a balance the settling had spent, refused by the database rather than as credit
        // that does not cover it).
        let settles_apart = inv.kind != InvoiceKind::First;
        if settles_apart {
            if let Some(m) = memo.as_deref_mut() {
                m.pending().flush(conn, inv.organization_id).await?;
            }
        }
        settled(ctx, conn, &inv, Some(&paid), memo.as_deref_mut()).await?;
        if settles_apart {
            let balance = billing::lock_credit(conn, inv.organization_id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            balances.insert(inv.organization_id, balance);
        }
    }
    if let Some(m) = memo {
        // What the batch's next payment finds.
        m.followed(balances);
    }
    if let Some(k) = keyed {
        idempotency::answer_in(conn, &k.key, &k.outcome).await?;
    }
    Ok(())
}

/// A payment recorded again (a retry, the same bank line entered twice) is the one already
/// recorded only when it is for the same invoice and the same amount; otherwise the
/// reference is refused, so that staff never believe an amount was booked that was not.
fn same_payment(
    existing: &billing::PaymentRow,
    invoice: i64,
    amount_minor: i64,
    currency: &str,
) -> Result<()> {
    if existing.invoice_id != invoice {
        return Err(ServiceError::field(
            "reference",
            "This reference was already recorded for another invoice.",
        ));
    }
    if existing.amount_minor != amount_minor {
        let recorded = crate::amount_text(existing.amount_minor, currency);
        return Err(ServiceError::field(
            "reference",
            format!("This reference was already recorded for this invoice with another amount ({recorded})."),
        ));
    }
    Ok(())
}
