//! Card payments through a gateway: Stripe's PaymentIntents (docs/billing.md, "Card
//! payments").
//!
//! - The payment page's "Pay by card" creates, or reuses, one PaymentIntent per invoice and
//!   amount due ([`Lodge::card_checkout`]); its rows are `card_payments` (migration 0012).
//! - What Stripe says of an intent, by a signed webhook ([`Lodge::stripe_webhook`]) or read
//!   back on the return page ([`Lodge::card_return`]), is applied by [`Lodge::apply_intent`]:
//!   a succeeded intent is recorded through the staff payments' path
//!   ([`Lodge::record_payment`], method `card`, the intent's id as reference), whose unique
//!   key `(method, reference)` records it once whichever arrives first or twice; a failed one
//!   keeps its reason, shown on the page and the invoice.
//! - A staff cash refund of a card-paid invoice goes back through Stripe
//!   ([`Lodge::send_card_refund`]): the refund is recorded first under a placeholder
//!   reference, with a retry job in the same transaction, then Stripe is asked (idempotency
//!   key `lodge-refund-<id>`, the refund's id in its metadata) and its `re_…` id replaces the
//!   placeholder. `charge.refunded` records refunds made in Stripe's dashboard once (their
//!   `re_…` id is a unique cash reference) and skips those that carry a Lodge refund id.
//!   A refund of Lodge's that Stripe refuses for good, or later reports failed
//!   (`charge.refund.updated`), is recorded as failed and no longer counted.
//!
//! Nothing here holds a database transaction across a call to Stripe.

pub mod signature;
pub mod stripe;

use lodge_core::RefundTo;
use lodge_store::billing;
use lodge_store::cards::{self, NewCardPayment};
use lodge_store::refunds;
use lodge_store::StoreError;
use serde::Deserialize;

use crate::refunds::{RefundOutcome, RefundRequest};
use crate::{Lodge, Result, ServiceError};
pub use stripe::{PaymentIntent, Stripe, StripeError, StripeSettings};

/// The gateway's name in `card_payments`.
pub const GATEWAY_STRIPE: &str = "stripe";
/// The payment method of card payments (in `payments`, with the intent's id as reference).
pub const METHOD_CARD: &str = "card";
/// The status of a succeeded intent whose money went to account credit (its invoice could
/// no longer take it).
pub const STATUS_CREDITED: &str = "credited";
/// The reference of a cash refund until Stripe answered with its own.
pub const PENDING_REFUND_PREFIX: &str = "stripe:pending:";
/// The job that (re)sends a refund to Stripe.
pub const JOB_CARD_REFUND: &str = "stripe_refund";
/// Who records what Stripe reported.
pub const ACTOR_STRIPE: &str = "gateway:stripe";
/// How long the retry job of a refund waits, so the attempt made at once goes first.
const REFUND_RETRY_DELAY_US: i64 = 5 * 60 * 1_000_000;

/// A card payment started from the payment page.
#[derive(Debug, Clone)]
pub struct CardCheckout {
    pub intent_id: String,
    pub amount_minor: i64,
    /// Handed to Stripe.js in the browser (the page's card form).
    pub client_secret: Option<String>,
    /// Stripe's status of the intent.
    pub status: String,
}

/// What applying an intent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentOutcome {
    /// The payment was recorded now.
    Recorded,
    /// It had been recorded already (by the other of webhook and return page).
    AlreadyRecorded,
    /// The payment failed; the reason is stored.
    Failed,
    /// Still in progress at the bank (`processing`).
    Pending,
    /// Not completed by the customer: Stripe waits for a card, its confirmation or its
    /// authentication (`requires_payment_method`, `requires_confirmation`,
    /// `requires_action`), or the intent was cancelled; nothing was taken.
    Unfinished,
    /// Not an intent Lodge created.
    Unknown,
}

/// What asking Stripe to cancel an open intent came to.
enum Cancelled {
    Yes,
    /// It had succeeded meanwhile.
    Succeeded(Box<PaymentIntent>),
    /// Not now (processing, Stripe unreachable).
    Left,
}

/// How a webhook went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOutcome {
    pub event_type: String,
    pub handled: bool,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    data: EventData,
}

#[derive(Debug, Default, Deserialize)]
struct EventData {
    #[serde(default)]
    object: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct RefundJob {
    refund_id: i64,
}

/// The smallest charge Stripe takes in a currency, minor units: its published minimums for
/// a charge settled in that currency (<https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts>).
/// Below it Stripe refuses the PaymentIntent (`amount_too_small`), so the card is not
/// offered (found by the payments audit: a 0.20 remainder was offered "by card" and then
/// said "unavailable, try again later" for good). Unlisted currencies: none known (Stripe's
/// own refusal is still told as this).
pub fn card_minimum_minor(currency: &str) -> i64 {
    match currency.to_ascii_uppercase().as_str() {
        "USD" | "EUR" | "AUD" | "CAD" | "CHF" | "NZD" | "SGD" | "BRL" | "INR" => 50,
        "GBP" => 30,
        "JPY" => 50,
        "HKD" => 400,
        "DKK" => 250,
        "NOK" | "SEK" => 300,
        "PLN" | "MYR" | "AED" | "RON" => 200,
        "BGN" => 100,
        "CZK" => 1_500,
        "HUF" => 17_500,
        "MXN" | "THB" => 1_000,
        _ => 0,
    }
}

/// The refusal of a card payment below [`card_minimum_minor`] (or one Stripe found too
/// small): a field error on `amount`.
fn below_card_minimum(currency: &str) -> ServiceError {
    let min = card_minimum_minor(currency);
    let what = if min > 0 {
        format!(
            "Card payments start at {}: pay this another way.",
            crate::amount_text(min, currency)
        )
    } else {
        "This amount is below what the card gateway takes: pay it another way.".to_owned()
    };
    ServiceError::field("amount", what)
}

fn gateway_error(e: StripeError) -> ServiceError {
    ServiceError::Internal(format!("card gateway: {e}"))
}

/// A refund to a card the gateway refused for good.
fn refund_refused(why: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "The card gateway refused this refund ({why}): nothing went back, and the refund is \
         recorded as failed."
    ))
}

impl Lodge {
    /// The Stripe gateway, or `Conflict` when none is configured.
    pub fn stripe(&self) -> Result<&Stripe> {
        self.stripe
            .as_deref()
            .ok_or_else(|| ServiceError::Conflict("Card payments are not configured.".into()))
    }

    /// "Pay by card" on the payment page of `token`: the PaymentIntent of the amount due,
    /// created once per invoice and amount and reused after.
    pub async fn card_checkout(&self, token: &str) -> Result<CardCheckout> {
        let stripe = self.stripe()?;
        let detail = self.invoice_by_token(token).await?;
        let inv = &detail.invoice;
        let due = crate::queries::due_now(inv);
        if due <= 0 {
            return Err(ServiceError::Conflict(format!(
                "This invoice is {}: nothing is due.",
                inv.status
            )));
        }
        let open = cards::open_for(
            &mut self.store.read_conn().await?,
            GATEWAY_STRIPE,
            inv.id,
            due,
        )
        .await?;
        if let Some(row) = open {
            let pi = stripe
                .retrieve_payment_intent(&row.intent_id)
                .await
                .map_err(gateway_error)?;
            if pi.status != "canceled" {
                if pi.status == "succeeded" {
                    self.apply_intent(&pi).await?;
                }
                return Ok(CardCheckout {
                    intent_id: pi.id,
                    amount_minor: row.amount_minor,
                    client_secret: pi.client_secret,
                    status: pi.status,
                });
            }
            self.set_card_status(&pi.id, &pi.status, None).await?;
        }
        self.cancel_superseded(stripe, inv.id, due).await?;
        // After the intents of other amounts are cancelled (a form of one left open could
        // otherwise still charge until the scheduler's pass: found by review).
        if due < card_minimum_minor(&inv.currency) {
            return Err(below_card_minimum(&inv.currency));
        }
        let attempts = cards::of_invoice(&mut self.store.read_conn().await?, inv.id)
            .await?
            .len();
        let pi = stripe
            .create_payment_intent(
                due,
                &inv.currency,
                &[
                    ("invoice_id", inv.id.to_string()),
                    ("invoice_number", inv.number.clone().unwrap_or_default()),
                    ("organization_id", inv.organization_id.to_string()),
                ],
                // Stripe keeps keys 24 hours for the whole account: the invoice's own random
                // salt keeps another installation (or this database restored) with the same
                // invoice id and amount from being handed this key's intent (found by the
                // payments audit).
                &format!(
                    "lodge-invoice-{}-{}-{due}-{attempts}",
                    inv.id, inv.payment_token_salt
                ),
            )
            .await
            .map_err(|e| match &e {
                StripeError::Api { code: Some(c), .. } if c == "amount_too_small" => {
                    below_card_minimum(&inv.currency)
                }
                _ => gateway_error(e),
            })?;
        let mut tx = self.store.begin().await?;
        let inserted = cards::insert(
            &mut tx,
            &NewCardPayment {
                gateway: GATEWAY_STRIPE,
                intent_id: &pi.id,
                invoice_id: inv.id,
                organization_id: inv.organization_id,
                amount_minor: due,
                currency: &inv.currency,
                status: &pi.status,
                now: self.now_us(),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        if !inserted {
            // Another click made the invoice's intent first: use that one (this one is
            // never shown, so never confirmed).
            tracing::info!(intent = %pi.id, invoice = inv.id, "a concurrent checkout made the intent first");
            if let Some(row) = cards::open_for(
                &mut self.store.read_conn().await?,
                GATEWAY_STRIPE,
                inv.id,
                due,
            )
            .await?
            {
                let other = stripe
                    .retrieve_payment_intent(&row.intent_id)
                    .await
                    .map_err(gateway_error)?;
                return Ok(CardCheckout {
                    intent_id: other.id,
                    amount_minor: due,
                    client_secret: other.client_secret,
                    status: other.status,
                });
            }
        }
        Ok(CardCheckout {
            intent_id: pi.id,
            amount_minor: due,
            client_secret: pi.client_secret,
            status: pi.status,
        })
    }

    /// Cancels at Stripe the invoice's intents still open for another amount than `due`
    /// (the amount due changed, e.g. part of it was paid otherwise): a card form left open
    /// in another tab could still be confirmed and charge the card a second time (found by
    /// the payments audit: a 5.00 invoice took 1.00 by bank and 5.00 and 4.00 by card). One
    /// that succeeded meanwhile is recorded instead, and the customer is asked to look again.
    async fn cancel_superseded(&self, stripe: &Stripe, invoice: i64, due: i64) -> Result<()> {
        let rows = cards::of_invoice(&mut self.store.read_conn().await?, invoice).await?;
        for row in rows.iter().filter(|r| {
            r.gateway == GATEWAY_STRIPE
                && r.amount_minor != due
                && !matches!(
                    r.status.as_str(),
                    "succeeded" | "canceled" | STATUS_CREDITED
                )
        }) {
            if let Cancelled::Succeeded(pi) =
                self.cancel_open_intent(stripe, &row.intent_id).await?
            {
                self.apply_intent(&pi).await?;
                return Err(ServiceError::Conflict(
                    "A card payment of this invoice has just succeeded: look at the invoice \
                     again before paying more."
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Cancels at Stripe the open intents whose invoice no longer asks for their amount
    /// (paid from credit or by bank, cancelled, or partly paid otherwise): a card form left
    /// open in a browser tab could otherwise still charge the card, the money then going to
    /// account credit. Each scheduler pass, at most `limit`; one Stripe will not cancel now
    /// (processing) or cannot be reached is tried again next pass, and one that succeeded
    /// meanwhile is recorded as usual. Returns how many were cancelled.
    pub async fn cancel_superseded_intents(&self, limit: i64) -> Result<usize> {
        let Some(stripe) = self.stripe.as_deref() else {
            return Ok(0);
        };
        let rows =
            cards::superseded(&mut self.store.read_conn().await?, GATEWAY_STRIPE, limit).await?;
        let mut cancelled = 0;
        for row in rows {
            match self.cancel_open_intent(stripe, &row.intent_id).await? {
                Cancelled::Yes => cancelled += 1,
                Cancelled::Succeeded(pi) => {
                    self.apply_intent(&pi).await?;
                }
                Cancelled::Left => {}
            }
        }
        Ok(cancelled)
    }

    /// Cancels one open intent at Stripe and records it cancelled. When Stripe will not,
    /// the intent is read back: cancelled already (recorded so), succeeded meanwhile
    /// (returned, for the caller to record), unknown to Stripe (another Stripe account:
    /// recorded cancelled, it can charge nothing there), or anything else (processing,
    /// Stripe unreachable: logged and left open, to be tried again).
    async fn cancel_open_intent(&self, stripe: &Stripe, intent: &str) -> Result<Cancelled> {
        let e = match stripe.cancel_payment_intent(intent).await {
            Ok(pi) => {
                self.set_card_status(&pi.id, "canceled", None).await?;
                return Ok(Cancelled::Yes);
            }
            Err(e) => e,
        };
        match stripe.retrieve_payment_intent(intent).await {
            Ok(pi) if pi.status == "canceled" => {
                self.set_card_status(&pi.id, "canceled", None).await?;
                Ok(Cancelled::Yes)
            }
            Ok(pi) if pi.status == "succeeded" => Ok(Cancelled::Succeeded(Box::new(pi))),
            Ok(pi) => {
                tracing::warn!(intent = %pi.id, status = %pi.status, error = %e,
                    "an earlier card payment of the invoice could not be cancelled yet");
                Ok(Cancelled::Left)
            }
            Err(StripeError::Api { status: 404, .. }) => {
                tracing::warn!(intent = %intent,
                    "an earlier card payment of the invoice is unknown to Stripe");
                self.set_card_status(intent, "canceled", None).await?;
                Ok(Cancelled::Yes)
            }
            Err(e2) => {
                tracing::warn!(intent = %intent, error = %e2,
                    "an earlier card payment of the invoice could not be read back; tried again later");
                Ok(Cancelled::Left)
            }
        }
    }

    async fn set_card_status(
        &self,
        intent: &str,
        status: &str,
        failure: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.store.begin().await?;
        let changed = cards::set_status(
            &mut tx,
            GATEWAY_STRIPE,
            intent,
            status,
            failure,
            self.now_us(),
        )
        .await?;
        if let (Some(reason), Some(card)) = (
            failure,
            cards::by_intent(&mut *tx, GATEWAY_STRIPE, intent)
                .await?
                // A failure reported after the intent succeeded (Stripe sends an earlier
                // declined attempt's event late) tells nothing: the invoice is paid (found
                // by the payments audit: a "payment failed" notice went out after it).
                // Nor one of an intent cancelled meanwhile (found by review).
                .filter(|c| !matches!(c.status.as_str(), "succeeded" | "credited" | "canceled")),
        ) {
            // Told once per intent, however many times Stripe reports it.
            crate::events::emit_once(
                &mut *tx,
                crate::events::EventKind::PaymentFailed,
                card.organization_id,
                format!("invoice:{}", card.invoice_id),
                serde_json::json!({
                    "invoice_id": card.invoice_id,
                    "gateway": GATEWAY_STRIPE,
                    "intent_id": intent,
                    "amount_minor": card.amount_minor,
                    "currency": card.currency,
                    "reason": reason,
                }),
                format!("payment.failed:{intent}"),
                self.now_us(),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(changed)
    }

    /// Applies what Stripe reports of an intent (from a verified webhook or read back from
    /// Stripe): records a succeeded payment once, keeps a failure's reason.
    pub async fn apply_intent(&self, pi: &PaymentIntent) -> Result<IntentOutcome> {
        let row =
            cards::by_intent(&mut self.store.read_conn().await?, GATEWAY_STRIPE, &pi.id).await?;
        let Some(row) = row else {
            return Ok(IntentOutcome::Unknown);
        };
        match pi.status.as_str() {
            "succeeded" => {
                if !pi.currency.is_empty() && !pi.currency.eq_ignore_ascii_case(&row.currency) {
                    // Money in another currency is not this invoice's amount in minor units.
                    return Err(ServiceError::Internal(format!(
                        "intent {} succeeded in {} for an invoice in {}: not recorded",
                        pi.id, pi.currency, row.currency
                    )));
                }
                // What Stripe collected, never more than the intent Lodge created: a
                // webhook's body is not trusted for the amount beyond that (found by the
                // payments audit: a signed event with a larger amount became credit).
                let reported = pi.amount_received.filter(|a| *a > 0).unwrap_or(pi.amount);
                let amount = if reported > 0 {
                    reported.min(row.amount_minor)
                } else {
                    row.amount_minor
                };
                if row.status == STATUS_CREDITED {
                    return Ok(IntentOutcome::AlreadyRecorded);
                }
                let out = self
                    .record_payment(
                        row.invoice_id,
                        amount,
                        METHOD_CARD,
                        &pi.id,
                        ACTOR_STRIPE,
                        crate::billing::IfSettled::Refuse,
                    )
                    .await;
                match out {
                    Ok(o) => {
                        self.set_card_status(&pi.id, "succeeded", None).await?;
                        Ok(if o.created {
                            IntentOutcome::Recorded
                        } else {
                            IntentOutcome::AlreadyRecorded
                        })
                    }
                    Err(ServiceError::Conflict(why)) => {
                        // The invoice was paid otherwise or cancelled meanwhile: the money
                        // goes to the organization's account credit, once.
                        let credited = self.credit_unpayable(&row, amount).await?;
                        if credited {
                            tracing::warn!(intent = %pi.id, invoice = row.invoice_id, why, "a card payment for an invoice no longer payable went to account credit");
                            Ok(IntentOutcome::Recorded)
                        } else {
                            Ok(IntentOutcome::AlreadyRecorded)
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            status => {
                let failure = pi.last_payment_error.as_ref().map(|e| e.reason());
                self.set_card_status(&pi.id, status, failure.as_deref())
                    .await?;
                Ok(match (failure, status) {
                    (Some(_), _) => IntentOutcome::Failed,
                    (None, "processing") => IntentOutcome::Pending,
                    // Nothing under way (found by the accessibility audit: a customer who
                    // closed the bank's check was told the payment was being processed).
                    (None, _) => IntentOutcome::Unfinished,
                })
            }
        }
    }

    /// A succeeded card payment whose invoice could no longer take it: a deposit to the
    /// organization's credit, once per intent (under the organization's lock).
    async fn credit_unpayable(&self, row: &cards::CardPaymentRow, amount: i64) -> Result<bool> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, row.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if !cards::mark_credited(&mut tx, GATEWAY_STRIPE, &row.intent_id, now).await? {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(false);
        }
        billing::append_ledger(
            &mut tx,
            &billing::NewLedgerEntry {
                organization_id: row.organization_id,
                kind: "deposit",
                amount_minor: amount,
                currency: &row.currency,
                invoice_id: Some(row.invoice_id),
                note: "Card payment for an invoice no longer payable",
                actor: ACTOR_STRIPE,
                now,
            },
        )
        .await?;
        // Money received all the same: told as every payment is, all of it to credit
        // (found by review: only payments recorded on their invoice were told).
        let number = billing::invoice(&mut tx, row.invoice_id)
            .await?
            .and_then(|i| i.number);
        crate::events::payment_received(
            &mut *tx,
            &crate::events::Received {
                organization_id: row.organization_id,
                invoice_id: row.invoice_id,
                number: number.as_deref(),
                payment_id: None,
                amount_minor: amount,
                currency: &row.currency,
                method: METHOD_CARD,
                reference: &row.intent_id,
                to_credit_minor: amount,
                amount_due_minor: 0,
            },
            now,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// The return page after the card form (`/pay/{token}/return?payment_intent=…`): the
    /// intent is read back from Stripe and applied. `NotFound` for an intent of another
    /// invoice.
    pub async fn card_return(&self, token: &str, intent_id: &str) -> Result<IntentOutcome> {
        let stripe = self.stripe()?;
        let detail = self.invoice_by_token(token).await?;
        let row = cards::by_intent(
            &mut self.store.read_conn().await?,
            GATEWAY_STRIPE,
            intent_id,
        )
        .await?
        .filter(|r| r.invoice_id == detail.invoice.id)
        .ok_or(ServiceError::NotFound)?;
        let pi = stripe
            .retrieve_payment_intent(&row.intent_id)
            .await
            .map_err(gateway_error)?;
        self.apply_intent(&pi).await
    }

    /// The reason the invoice's last card payment failed, while it is payable.
    pub async fn card_failure(&self, invoice: i64) -> Result<Option<String>> {
        let rows = cards::of_invoice(&mut self.store.read_conn().await?, invoice).await?;
        Ok(rows
            .into_iter()
            .find(|r| r.status != "canceled")
            .filter(|r| r.status != "succeeded" && r.status != STATUS_CREDITED)
            .and_then(|r| r.failure_reason))
    }

    /// A webhook from Stripe: the `Stripe-Signature` is verified over the raw body first
    /// (`Invalid` on `signature`, and nothing done, when it does not hold), then the event
    /// is handled. Unknown events are accepted and ignored.
    pub async fn stripe_webhook(
        &self,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome> {
        let stripe = self.stripe()?;
        let now = self.clock.now().as_second();
        signature::verify(
            signature_header,
            body,
            &stripe.settings().webhook_secrets,
            now,
            signature::TOLERANCE_SECS,
        )
        .map_err(|e| ServiceError::field("signature", e.to_string()))?;
        let event: Event = serde_json::from_slice(body)
            .map_err(|e| ServiceError::field("body", format!("not a Stripe event: {e}")))?;
        let handled = match event.kind.as_str() {
            "payment_intent.succeeded" | "payment_intent.payment_failed" => {
                let pi: PaymentIntent = serde_json::from_value(event.data.object)
                    .map_err(|e| ServiceError::field("body", format!("not an intent: {e}")))?;
                self.apply_intent(&pi).await? != IntentOutcome::Unknown
            }
            // A refund Stripe accepted and then could not make (the card expired or was
            // closed): Lodge's own is marked failed, and the invoice counts it no more.
            "charge.refund.updated" | "refund.updated" | "refund.failed" => {
                let r: stripe::Refund = serde_json::from_value(event.data.object)
                    .map_err(|e| ServiceError::field("body", format!("not a refund: {e}")))?;
                self.refund_update(&r).await?
            }
            "charge.refunded" => {
                let intent = event
                    .data
                    .object
                    .get("payment_intent")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
                match intent {
                    Some(pi) => self.stripe_refunds_of(&pi).await?,
                    None => false,
                }
            }
            _ => false,
        };
        Ok(WebhookOutcome {
            event_type: event.kind,
            handled,
        })
    }

    /// After `charge.refunded`: asks Stripe for the intent's refunds and records those made
    /// outside Lodge (once each, their `re_…` id being a unique cash reference).
    async fn stripe_refunds_of(&self, intent: &str) -> Result<bool> {
        let stripe = self.stripe()?;
        let Some(row) =
            cards::by_intent(&mut self.store.read_conn().await?, GATEWAY_STRIPE, intent).await?
        else {
            return Ok(false);
        };
        let mut list = stripe.list_refunds(intent).await.map_err(gateway_error)?;
        // Oldest first (Stripe lists the newest first): each delivery shares out the same
        // way what the invoice sent to credit ([`credit_sent`]).
        list.reverse();
        let credited = row.status == STATUS_CREDITED;
        let mut sent_to_credit = if credited {
            0
        } else {
            self.credit_sent(row.invoice_id).await?
        };
        for r in list {
            if r.status
                .as_deref()
                .is_some_and(|s| s == "failed" || s == "canceled")
            {
                self.refund_update(&r).await?;
                continue;
            }
            if let Some(id) = r
                .metadata
                .get("lodge_refund_id")
                .and_then(|v| v.parse::<i64>().ok())
            {
                // Lodge's own: complete its reference if its answer was lost.
                self.complete_refund_reference(id, &r.id).await?;
                continue;
            }
            if credited {
                // The money went to account credit (its invoice could no longer take it):
                // what Stripe gave back comes out of that credit.
                if r.amount > 0 {
                    self.take_back_credit(&row, &r.id, r.amount).await?;
                }
                continue;
            }
            if r.amount <= 0 {
                continue;
            }
            let recorded =
                refunds::cash_refund_by_reference(&mut self.store.read_conn().await?, &r.id)
                    .await?
                    .map(|f| f.amount_minor);
            // What Stripe gave back beyond what Lodge had left to refund went back as
            // account credit already (staff refunded it "to credit"; Stripe never gives
            // back more than the charge): it is recorded as the cash refund it can be, and
            // the rest comes out of that credit (found by the currencies audit: such a
            // refund was refused, logged and answered "handled", the customer paid back
            // twice with no trace in Lodge).
            let cash = match recorded {
                Some(amount) => amount,
                None => {
                    let left = self
                        .invoice_refunds(row.invoice_id)
                        .await?
                        .invoice
                        .cash_refundable_minor;
                    let cash = r.amount.min(left).max(0);
                    if cash > 0 {
                        let req = RefundRequest {
                            amount_minor: cash,
                            to: RefundTo::Cash,
                            reason: "Refunded in Stripe",
                            reference: Some(&r.id),
                        };
                        if let Err(e) = self
                            .refund_invoice(row.invoice_id, &req, ACTOR_STRIPE, None)
                            .await
                        {
                            // Stripe asks again (its webhook is answered with the error).
                            tracing::error!(refund = %r.id, invoice = row.invoice_id, error = %e, "a refund made in Stripe could not be recorded");
                            return Err(e);
                        }
                    }
                    cash
                }
            };
            // Only what this invoice sent to credit is taken back (found by review: a
            // dashboard refund of an invoice refunded in cash by bank took the customer's
            // unrelated credit); beyond it, the customer was paid back twice in cash, which
            // staff settle with the customer.
            let beyond = r.amount - cash;
            let taken = beyond.min(sent_to_credit).max(0);
            sent_to_credit -= taken;
            if taken > 0 {
                self.take_back_credit(&row, &r.id, taken).await?;
            }
            if beyond > taken {
                tracing::error!(
                    refund = %r.id,
                    invoice = row.invoice_id,
                    beyond = %crate::amount_text(beyond - taken, &row.currency),
                    "a refund made in Stripe gave back more than the invoice had left, in cash or as credit: the customer was paid back twice"
                );
            }
        }
        Ok(true)
    }

    /// What an invoice sent to account credit: its refunds to credit and what downgrades
    /// gave back of it. A dashboard refund beyond what was left to refund in cash is taken
    /// out of that, never out of other credit.
    async fn credit_sent(&self, invoice: i64) -> Result<i64> {
        let all = self.invoice_refunds(invoice).await?;
        let refunded: i64 = all
            .refunds
            .iter()
            .filter(|f| f.to == RefundTo::Credit && f.failed_at.is_none())
            .map(|f| f.amount_minor)
            .sum();
        Ok(refunded.saturating_add(all.invoice.given_back_minor))
    }

    /// A refund of Lodge's (its `lodge_refund_id` metadata) that Stripe reports failed or
    /// canceled: marked failed with Stripe's reason ([`Lodge::card_refund_refused`]), once.
    /// Whether it was one of Lodge's.
    async fn refund_update(&self, r: &stripe::Refund) -> Result<bool> {
        let Some(status) = r
            .status
            .as_deref()
            .filter(|s| *s == "failed" || *s == "canceled")
        else {
            return Ok(r.metadata.contains_key("lodge_refund_id"));
        };
        let lodge_id = r
            .metadata
            .get("lodge_refund_id")
            .and_then(|v| v.parse::<i64>().ok());
        let row = {
            let mut db = self.store.read_conn().await?;
            match lodge_id {
                Some(id) => refunds::refund(&mut db, id).await?,
                // One made in Stripe's dashboard, recorded from `charge.refunded` by its id.
                None => refunds::cash_refund_by_reference(&mut db, &r.id).await?,
            }
        };
        let Some(row) = row else {
            if lodge_id.is_none() {
                return self.dashboard_refund_failed(r).await;
            }
            return Ok(false);
        };
        // Only the refund Stripe names: its id, or the placeholder before Stripe's answer
        // for the same payment (another installation on the same Stripe account has its
        // own refund numbers: found by review).
        let reference = row.reference.clone().unwrap_or_default();
        let same = reference == r.id
            || reference
                .strip_prefix(PENDING_REFUND_PREFIX)
                .and_then(|rest| rest.split(':').next())
                .is_some_and(|intent| r.payment_intent.as_deref() == Some(intent));
        if row.failed_at.is_some() || !same {
            return Ok(true);
        }
        let why = format!(
            "Stripe reports the refund {status}{}",
            r.failure_reason
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        );
        self.card_refund_refused(&row, &reference, &why).await?;
        Ok(true)
    }

    /// A refund made in Stripe's dashboard of a card payment that went to account credit,
    /// which took that credit back ([`Lodge::take_back_credit`]), and which Stripe then
    /// reports failed: what was taken back is given back, once. Whether it was one.
    async fn dashboard_refund_failed(&self, r: &stripe::Refund) -> Result<bool> {
        let Some(intent) = r.payment_intent.as_deref() else {
            return Ok(false);
        };
        let Some(row) =
            cards::by_intent(&mut self.store.read_conn().await?, GATEWAY_STRIPE, intent).await?
        else {
            return Ok(false);
        };
        if row.status != STATUS_CREDITED {
            return Ok(false);
        }
        let taken_note = format!("Card payment refunded in Stripe ({})", r.id);
        let back_note = format!(
            "Refund {} failed in Stripe: the credit taken back returns",
            r.id
        );
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, row.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let taken = -billing::ledger_sum_with_note(
            &mut tx,
            row.organization_id,
            row.invoice_id,
            &taken_note,
        )
        .await?;
        if taken <= 0
            || billing::ledger_has_note(&mut tx, row.organization_id, row.invoice_id, &back_note)
                .await?
        {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(true);
        }
        billing::append_ledger(
            &mut tx,
            &billing::NewLedgerEntry {
                organization_id: row.organization_id,
                kind: "adjustment",
                amount_minor: taken,
                currency: &row.currency,
                invoice_id: Some(row.invoice_id),
                note: &back_note,
                actor: ACTOR_STRIPE,
                now,
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// A refund made in Stripe of a card payment that went to account credit: the amount
    /// comes out of the organization's credit, once per Stripe refund (its `re_…` id is in
    /// the entry's note), under the organization's lock. What the customer already spent
    /// cannot be taken back: that part is logged as an error for staff.
    async fn take_back_credit(
        &self,
        row: &cards::CardPaymentRow,
        refund: &str,
        amount: i64,
    ) -> Result<()> {
        let now = self.now_us();
        let note = format!("Card payment refunded in Stripe ({refund})");
        let mut tx = self.store.begin().await?;
        let balance = billing::lock_credit(&mut tx, row.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if billing::ledger_has_note(&mut tx, row.organization_id, row.invoice_id, &note).await? {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(());
        }
        let taken = amount.min(balance).max(0);
        if taken > 0 {
            billing::append_ledger(
                &mut tx,
                &billing::NewLedgerEntry {
                    organization_id: row.organization_id,
                    kind: "adjustment",
                    amount_minor: -taken,
                    currency: &row.currency,
                    invoice_id: Some(row.invoice_id),
                    note: &note,
                    actor: ACTOR_STRIPE,
                    now,
                },
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        if taken < amount {
            tracing::error!(
                refund,
                intent = %row.intent_id,
                organization = %row.organization_id,
                short = %crate::amount_text(amount - taken, &row.currency),
                "a card payment that went to account credit was refunded in Stripe, and the credit had been spent: the rest could not be taken back"
            );
        }
        Ok(())
    }

    async fn complete_refund_reference(&self, refund_id: i64, reference: &str) -> Result<bool> {
        let mut tx = self.store.begin().await?;
        let Some(row) = refunds::refund(&mut tx, refund_id).await? else {
            return Ok(false);
        };
        let done = match row.reference.as_deref() {
            Some(p) if p.starts_with(PENDING_REFUND_PREFIX) => {
                refunds::set_reference(&mut tx, refund_id, p, reference).await?
            }
            _ => false,
        };
        tx.commit().await.map_err(StoreError::from)?;
        Ok(done)
    }

    /// The intent a cash refund of this invoice goes back through, and how much of it can
    /// still go back ([`card_left`]), when Stripe is configured and the invoice was paid by
    /// card. Read before the refund's transaction; `refund_in_tx` checks again under the
    /// invoice's lock.
    pub(crate) async fn card_payment_to_refund(
        &self,
        invoice: i64,
    ) -> Result<Option<(String, i64)>> {
        if self.stripe.is_none() {
            return Ok(None);
        }
        let payments = billing::payments(self.store.reader(), invoice).await?;
        let refunds = refunds::refunds_of_invoice(self.store.reader(), invoice).await?;
        let intents = intents_of(&mut self.store.read_conn().await?, invoice).await?;
        Ok(card_left(&payments, &refunds, &intents))
    }

    /// A staff cash refund of a card-paid invoice, through Stripe: recorded first (with the
    /// retry job), then sent.
    pub(crate) async fn refund_through_gateway(
        &self,
        invoice: i64,
        intent: &str,
        req: &RefundRequest<'_>,
        actor: &str,
        key: Option<&crate::idempotency::IdempotencyKey>,
    ) -> Result<crate::idempotency::Answer<RefundOutcome>> {
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let placeholder = format!("{PENDING_REFUND_PREFIX}{intent}:{}", hex::encode(nonce));
        let pending = RefundRequest {
            reference: Some(&placeholder),
            ..req.clone()
        };
        let org = billing::invoice(&mut self.store.read_conn().await?, invoice)
            .await?
            .ok_or(ServiceError::NotFound)?
            .organization_id;
        let answer = self
            .keyed(key, || {
                self.refund_in_tx(org, invoice, &pending, actor, key)
            })
            .await?;
        let replay = answer.is_replay();
        let mut outcome = answer.into_outcome();
        // A replay of a refund whose answer from Stripe was lost asks again (same key).
        match self.send_card_refund(outcome.refund.id).await {
            Ok(Some(reference)) => outcome.refund.reference = Some(reference),
            Ok(None) => {}
            Err(refused @ ServiceError::Conflict(_)) => return Err(refused),
            Err(e) => {
                tracing::warn!(refund = outcome.refund.id, error = %e, "the refund was recorded; the worker will ask Stripe again");
            }
        }
        Ok(if replay {
            crate::idempotency::Answer::Replayed(outcome)
        } else {
            crate::idempotency::Answer::Done(outcome)
        })
    }

    /// Sends a recorded refund with a placeholder reference to Stripe (the idempotency key
    /// is Lodge's refund id) and stores Stripe's `re_…` id; the refund's reference, or `None`
    /// when it is no refund of Lodge's through Stripe.
    pub async fn send_card_refund(&self, refund_id: i64) -> Result<Option<String>> {
        let stripe = self.stripe()?;
        let row = refunds::refund(&mut self.store.read_conn().await?, refund_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let Some(placeholder) = row.reference.clone() else {
            return Ok(None);
        };
        let Some(rest) = placeholder.strip_prefix(PENDING_REFUND_PREFIX) else {
            return Ok(Some(placeholder));
        };
        if let Some(why) = row.failure.as_deref().filter(|_| row.failed_at.is_some()) {
            return Err(refund_refused(why));
        }
        let intent = rest.split(':').next().unwrap_or_default();
        let r = match stripe
            .create_refund(
                intent,
                row.amount_minor,
                &[("lodge_refund_id", refund_id.to_string())],
                &format!("lodge-refund-{refund_id}"),
            )
            .await
        {
            Ok(r) => r,
            Err(StripeError::Api {
                status: status @ (400 | 402 | 404),
                message,
                ..
            }) => {
                // Refused for good (the charge was disputed, refunded in the dashboard
                // meanwhile, or is unknown): asking again would be refused again.
                let why = format!("Stripe answered {status}: {message}");
                self.card_refund_refused(&row, &placeholder, &why).await?;
                return Err(refund_refused(&why));
            }
            Err(e) => return Err(gateway_error(e)),
        };
        self.complete_refund_reference(refund_id, &r.id).await?;
        Ok(Some(r.id))
    }

    /// A refund to a card that Stripe refused for good: marked failed with Stripe's words,
    /// its amount given back to what the invoice has left to refund (its status moved
    /// back), and a `payment.refund_failed` event; in one transaction, under the
    /// organization's and the invoice's locks. Nothing when it failed or was sent already.
    async fn card_refund_refused(
        &self,
        row: &refunds::RefundRow,
        placeholder: &str,
        why: &str,
    ) -> Result<()> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, row.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let inv = billing::lock_invoice(&mut tx, row.invoice_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let after = inv.refunded_minor - row.amount_minor;
        let Some(to) = inv
            .status
            .next(lodge_core::InvoiceEvent::refund_returned(after))
        else {
            return Err(ServiceError::Internal(format!(
                "refund {} was refused, but its invoice is {}",
                row.id, inv.status
            )));
        };
        if !refunds::fail_refund(&mut tx, row, placeholder, why, to, now).await? {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(());
        }
        tracing::error!(refund = row.id, invoice = row.invoice_id, reason = %why,
            "Stripe refused a refund to a card: nothing went back; it is recorded as failed");
        crate::events::emit(
            &mut *tx,
            crate::events::EventKind::PaymentRefundFailed,
            row.organization_id,
            format!("invoice:{}", row.invoice_id),
            serde_json::json!({
                "invoice_id": row.invoice_id,
                "number": inv.number,
                "refund_id": row.id,
                "amount_minor": row.amount_minor,
                "currency": row.currency,
                "failure": why,
                "refunded_minor": after,
                "status": to.as_str(),
            }),
            now,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The retry job of [`Lodge::send_card_refund`] (the worker's `stripe_refund`).
    pub(crate) async fn card_refund_job(&self, payload: &str) -> Result<()> {
        let p: RefundJob = serde_json::from_str(payload)
            .map_err(|e| ServiceError::Internal(format!("bad stripe_refund payload: {e}")))?;
        match self.send_card_refund(p.refund_id).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Refused for good, recorded as failed: nothing to ask again.
                let row = refunds::refund(&mut self.store.read_conn().await?, p.refund_id).await?;
                if row.is_some_and(|r| r.failed_at.is_some()) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Queues the retry job of a refund going through the gateway, in its transaction.
    pub(crate) async fn enqueue_card_refund<C: lodge_store::SqlConn>(
        &self,
        conn: &mut C,
        refund_id: i64,
    ) -> Result<()> {
        let now = self.now_us();
        let payload = serde_json::json!({ "refund_id": refund_id }).to_string();
        let dedupe = format!("{JOB_CARD_REFUND}:{refund_id}");
        lodge_store::jobs::enqueue(
            conn,
            &lodge_store::jobs::NewJob {
                kind: JOB_CARD_REFUND,
                payload: &payload,
                dedupe_key: Some(&dedupe),
                run_at: now + REFUND_RETRY_DELAY_US,
                max_attempts: 8,
                now,
            },
        )
        .await?;
        Ok(())
    }
}

/// The ids of the PaymentIntents Lodge made for an invoice.
pub(crate) async fn intents_of<C: lodge_store::SqlConn>(
    conn: &mut C,
    invoice: i64,
) -> Result<Vec<String>> {
    Ok(lodge_store::cards::of_invoice(conn, invoice)
        .await?
        .into_iter()
        .map(|c| c.intent_id)
        .collect())
}

/// The card payment a cash refund of an invoice goes back through (its largest), and how much
/// of it can still go back: the payment less every refund of the invoice already sent through
/// Stripe (counted against this payment: a charge is never asked for more than it received).
/// `None` when no payment of the invoice was by card through Lodge's gateway: one of
/// `intents` (a card payment staff recorded by hand, from a terminal, has no intent; sent
/// to Stripe with its reference as one, the refund was recorded and no money moved: found
/// by the payments audit).
pub(crate) fn card_left(
    payments: &[billing::PaymentRow],
    refunds: &[refunds::RefundRow],
    intents: &[String],
) -> Option<(String, i64)> {
    let card = payments
        .iter()
        .filter(|p| p.method == METHOD_CARD && intents.contains(&p.reference))
        .max_by_key(|p| p.amount_minor)?;
    let to_cards: i64 = refunds
        .iter()
        .filter(|r| {
            r.destination == RefundTo::Cash
                && r.failed_at.is_none()
                && r.reference
                    .as_deref()
                    .is_some_and(|x| x.starts_with(PENDING_REFUND_PREFIX) || x.starts_with("re_"))
        })
        .map(|r| r.amount_minor)
        .sum();
    Some((
        card.reference.clone(),
        (card.amount_minor - to_cards).max(0),
    ))
}
