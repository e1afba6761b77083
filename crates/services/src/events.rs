//! Events: what happened to an organization's orders, invoices, payments and accounts,
//! recorded in the transaction that made it happen (the `events` table, an outbox) and
//! handed there to whatever tells people about it: mail notices and outgoing webhooks are
//! jobs written in that same transaction ([`fan_out`]), so an event committed is told, and
//! one rolled back never is.
//!
//! Every event has an id (`evt_…`), a [`EventKind`], the organization, a subject
//! (`invoice:12`, `hosting:<uuid>`, `order:3`) and data (JSON, amounts in minor units as
//! they were when it happened). An event that several passes may notice (a renewal
//! reminder) carries a `dedupe_key`: recorded once, and the jobs made from it are keyed by
//! it too, so it is told once.

use lodge_core::{HostingId, OrganizationId};
use lodge_store::events::{self as store, NewEvent};
use lodge_store::SqlConn;
use serde::Serialize;
use serde_json::{json, Value};

use crate::Result;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    /// An order was placed (its first invoice, if any, follows as `invoice.created`).
    #[serde(rename = "order.created")]
    OrderCreated,
    /// An unpaid order was cancelled: by its customer, by staff, or because its invoice
    /// expired unpaid (`by` and `note` say which); `invoice.cancelled` tells its invoice.
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    /// An invoice was issued: an order's first, a renewal, a plan change's.
    #[serde(rename = "invoice.created")]
    InvoiceCreated,
    /// An invoice was paid in full (credit, card, transfer).
    #[serde(rename = "invoice.paid")]
    InvoicePaid,
    /// What an unpaid invoice asks changed after it was issued: a plan change re-priced a
    /// renewal issued before it (`reason`; the new `total_minor`, `credit_applied_minor` and
    /// `amount_due_minor`).
    #[serde(rename = "invoice.updated")]
    InvoiceUpdated,
    /// An unpaid invoice was cancelled (its order cancelled or expired, a renewal or a plan
    /// change's difference left unpaid): what was applied or paid on it went back to credit.
    #[serde(rename = "invoice.cancelled")]
    InvoiceCancelled,
    /// A renewal is due soon and still unpaid (once per invoice).
    #[serde(rename = "invoice.reminder")]
    InvoiceReminder,
    /// A renewal is past due and unpaid: the account will be suspended (once per invoice).
    #[serde(rename = "invoice.overdue")]
    InvoiceOverdue,
    /// Money was received for an invoice (a card payment, a transfer staff recorded), in
    /// full or in part; `invoice.paid` follows when nothing is left due.
    #[serde(rename = "payment.received")]
    PaymentReceived,
    /// A card payment failed (declined); the invoice stays unpaid.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// Staff added account credit, or took some off (a correction).
    #[serde(rename = "credit.adjusted")]
    CreditAdjusted,
    /// Money went back: to credit, in cash, or to the card.
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    /// A refund to a card was refused by the gateway: nothing went back, the invoice counts
    /// it no more.
    #[serde(rename = "payment.refund_failed")]
    PaymentRefundFailed,
    /// A hosting account was created on its server and is live.
    #[serde(rename = "hosting.active")]
    HostingActive,
    /// A hosting account moved to another plan (an upgrade once paid, a downgrade at once).
    #[serde(rename = "hosting.plan_changed")]
    HostingPlanChanged,
    /// The cancellation of a paid account was asked for: at once (`hosting.terminated`
    /// follows when the worker has done it) or at the end of its paid period
    /// (`effective_date`), which can be withdrawn until then.
    #[serde(rename = "hosting.cancellation_requested")]
    HostingCancellationRequested,
    /// A cancellation at the end of the period was withdrawn: the account renews again.
    #[serde(rename = "hosting.cancellation_withdrawn")]
    HostingCancellationWithdrawn,
    #[serde(rename = "hosting.suspended")]
    HostingSuspended,
    #[serde(rename = "hosting.unsuspended")]
    HostingUnsuspended,
    #[serde(rename = "hosting.terminated")]
    HostingTerminated,
}

impl EventKind {
    /// Every kind, for the lists that name them (webhook subscriptions, documentation).
    pub const ALL: [EventKind; 20] = [
        EventKind::OrderCreated,
        EventKind::OrderCancelled,
        EventKind::InvoiceCreated,
        EventKind::InvoicePaid,
        EventKind::InvoiceUpdated,
        EventKind::InvoiceCancelled,
        EventKind::InvoiceReminder,
        EventKind::InvoiceOverdue,
        EventKind::PaymentReceived,
        EventKind::PaymentFailed,
        EventKind::PaymentRefunded,
        EventKind::PaymentRefundFailed,
        EventKind::CreditAdjusted,
        EventKind::HostingActive,
        EventKind::HostingPlanChanged,
        EventKind::HostingCancellationRequested,
        EventKind::HostingCancellationWithdrawn,
        EventKind::HostingSuspended,
        EventKind::HostingUnsuspended,
        EventKind::HostingTerminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order.created",
            EventKind::OrderCancelled => "order.cancelled",
            EventKind::InvoiceCreated => "invoice.created",
            EventKind::InvoicePaid => "invoice.paid",
            EventKind::InvoiceUpdated => "invoice.updated",
            EventKind::InvoiceCancelled => "invoice.cancelled",
            EventKind::InvoiceReminder => "invoice.reminder",
            EventKind::InvoiceOverdue => "invoice.overdue",
            EventKind::PaymentReceived => "payment.received",
            EventKind::PaymentFailed => "payment.failed",
            EventKind::PaymentRefunded => "payment.refunded",
            EventKind::PaymentRefundFailed => "payment.refund_failed",
            EventKind::CreditAdjusted => "credit.adjusted",
            EventKind::HostingActive => "hosting.active",
            EventKind::HostingPlanChanged => "hosting.plan_changed",
            EventKind::HostingCancellationRequested => "hosting.cancellation_requested",
            EventKind::HostingCancellationWithdrawn => "hosting.cancellation_withdrawn",
            EventKind::HostingSuspended => "hosting.suspended",
            EventKind::HostingUnsuspended => "hosting.unsuspended",
            EventKind::HostingTerminated => "hosting.terminated",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event {s:?}"))
    }
}

/// An event, as its consumers get it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    pub organization_id: OrganizationId,
    pub subject: String,
    pub data: Value,
    /// Set for an event told once whoever notices it ([`emit_once`]).
    #[serde(skip)]
    pub dedupe_key: Option<String>,
    /// Unix microseconds.
    pub created_at: i64,
}

impl Event {
    /// What keys the jobs made from this event for one consumer (`mail`, `webhook:<id>`):
    /// the dedupe key when there is one, else the event's id.
    pub fn job_key(&self, consumer: &str) -> String {
        format!(
            "{consumer}:{}",
            self.dedupe_key.as_deref().unwrap_or(&self.id)
        )
    }
}

/// Digits of an event id's time: base 36, ten of them, hold microseconds until 2084.
const TIME_DIGITS: usize = 10;

/// A new event id, `evt_` and 24 characters: the time it happened (`now`, Unix
/// microseconds) in [`TIME_DIGITS`] lower-case base-36 digits, then 14 random letters and
/// digits (83 bits). Ids made later sort later (byte-wise, and under any locale's collation,
/// which orders digits and lower-case letters alike), so the unique index on them grows at
/// its right edge: with random ids, every event of a group commit wrote a leaf page of its
/// own (a WAL frame on SQLite, a page dirtied on PostgreSQL).
fn new_id(now: i64) -> String {
    let mut t = u64::try_from(now).unwrap_or(0);
    let mut digits = ['0'; TIME_DIGITS];
    for d in digits.iter_mut().rev() {
        // `from_digit` writes base 36 in lower case.
        *d = u32::try_from(t % 36)
            .ok()
            .and_then(|n| char::from_digit(n, 36))
            .unwrap_or('0');
        t /= 36;
    }
    let time: String = digits.iter().collect();
    format!(
        "evt_{time}{}",
        crate::orders::random_token(24 - TIME_DIGITS)
    )
}

/// Records an event in the caller's transaction and hands it to its consumers there.
pub(crate) async fn emit<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    organization_id: OrganizationId,
    subject: String,
    data: Value,
    now: i64,
) -> Result<()> {
    record(conn, kind, organization_id, subject, data, None, now).await
}

/// [`emit`], once per `dedupe_key` whoever asks (`false` when it was recorded before).
pub(crate) async fn emit_once<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    organization_id: OrganizationId,
    subject: String,
    data: Value,
    dedupe_key: String,
    now: i64,
) -> Result<bool> {
    if store::seen(conn, &dedupe_key).await? {
        return Ok(false);
    }
    record(
        conn,
        kind,
        organization_id,
        subject,
        data,
        Some(dedupe_key),
        now,
    )
    .await?;
    Ok(true)
}

async fn record<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    organization_id: OrganizationId,
    subject: String,
    data: Value,
    dedupe_key: Option<String>,
    now: i64,
) -> Result<()> {
    let event = Event {
        id: new_id(now),
        kind,
        organization_id,
        subject,
        data,
        dedupe_key,
        created_at: now,
    };
    let data = event.data.to_string();
    store::insert(
        conn,
        &NewEvent {
            id: &event.id,
            kind: kind.as_str(),
            organization_id,
            subject: &event.subject,
            data: &data,
            dedupe_key: event.dedupe_key.as_deref(),
            now,
        },
    )
    .await?;
    fan_out(conn, &event).await
}

/// The consumers of an event, in the event's transaction: each writes the jobs that tell
/// it (keyed by [`Event::job_key`], so a deduplicated event makes no second job).
async fn fan_out<C: SqlConn>(conn: &mut C, event: &Event) -> Result<()> {
    crate::webhooks::on_event(conn, event).await?;
    crate::mail::on_event(conn, event).await?;
    Ok(())
}

/// An invoice's event data (its number may still be unassigned in a group commit:
/// consumers read it back by `invoice_id` when they run).
pub(crate) fn invoice_data(i: &lodge_store::billing::InvoiceRow) -> Value {
    json!({
        "invoice_id": i.id,
        "number": i.number,
        "kind": i.kind.as_str(),
        "status": i.status.as_str(),
        "currency": i.currency,
        "total_minor": i.total_minor,
        "credit_applied_minor": i.credit_applied_minor,
        "paid_minor": i.paid_minor,
        // Nothing is due on an invoice that cannot be paid (cancelled), as the API says.
        "amount_due_minor": if i.status.is_payable() { i.amount_due() } else { 0 },
        "due_date": i.due_date,
        "order_id": i.order_id,
    })
}

/// Money received for an invoice, as `payment.received` tells it.
pub(crate) struct Received<'a> {
    pub organization_id: OrganizationId,
    pub invoice_id: i64,
    pub number: Option<&'a str>,
    /// The payment row's id; `None` for a card payment that went to credit whole.
    pub payment_id: Option<String>,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub method: &'a str,
    pub reference: &'a str,
    /// What went to the account's credit (received beyond what was due).
    pub to_credit_minor: i64,
    /// What the invoice still has due after it.
    pub amount_due_minor: i64,
}

/// `payment.received`, in the caller's transaction (every card payment or transfer staff
/// record, whether on its invoice or to credit).
pub(crate) async fn payment_received<C: SqlConn>(
    conn: &mut C,
    r: &Received<'_>,
    now: i64,
) -> Result<()> {
    emit(
        conn,
        EventKind::PaymentReceived,
        r.organization_id,
        format!("invoice:{}", r.invoice_id),
        json!({
            "invoice_id": r.invoice_id,
            "number": r.number,
            "payment_id": r.payment_id,
            "amount_minor": r.amount_minor,
            "currency": r.currency,
            "method": r.method,
            "reference": r.reference,
            "to_credit_minor": r.to_credit_minor,
            "amount_due_minor": r.amount_due_minor,
        }),
        now,
    )
    .await
}

/// An invoice event (`invoice.created`, `invoice.paid`) with the invoice's data.
pub(crate) async fn invoice_event<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    invoice: i64,
    now: i64,
) -> Result<()> {
    let Some(i) = lodge_store::billing::invoice(conn, invoice).await? else {
        return Ok(());
    };
    invoice_event_of(conn, kind, &i, now).await
}

/// [`invoice_event`] of the invoice as the caller has just read or written it.
pub(crate) async fn invoice_event_of<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    i: &lodge_store::billing::InvoiceRow,
    now: i64,
) -> Result<()> {
    emit(
        conn,
        kind,
        i.organization_id,
        format!("invoice:{}", i.id),
        invoice_data(i),
        now,
    )
    .await
}

/// A hosting account's event (`hosting.active`, `.suspended`, `.unsuspended`,
/// `.terminated`), after its transition in the caller's transaction; `note` says why.
pub(crate) async fn hosting_event<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    id: HostingId,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<()> {
    hosting_event_with(conn, kind, id, (note, actor), json!({}), now).await
}

/// [`hosting_event`] with more `data` than every hosting event has (`extra`'s fields,
/// after `hosting_id`, `domain`, `note` and `by`).
pub(crate) async fn hosting_event_with<C: SqlConn>(
    conn: &mut C,
    kind: EventKind,
    id: HostingId,
    (note, actor): (&str, &str),
    extra: Value,
    now: i64,
) -> Result<()> {
    let Some(h) = lodge_store::hosting::account_billing(conn, id).await? else {
        return Ok(());
    };
    let mut data =
        json!({ "hosting_id": id, "domain": h.domain_name, "note": note, "by": by(actor) });
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    emit(
        conn,
        kind,
        h.organization_id,
        format!("hosting:{id}"),
        data,
        now,
    )
    .await
}

/// Who moved an account, as its events say (`by`): `scheduler` (an unpaid renewal, a
/// period's end), `staff`, `customer`, or `system` (the worker): never a staff member's id.
pub(crate) fn by(actor: &str) -> &'static str {
    if actor == crate::renewals::SCHEDULER {
        "scheduler"
    } else if actor.starts_with("staff:") {
        "staff"
    } else if actor.starts_with("user:") || actor.starts_with("key:") {
        "customer"
    } else {
        "system"
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::new_id;

    #[test]
    fn an_id_is_evt_and_24_letters_and_digits_led_by_its_time() {
        let id = new_id(1_796_000_000_000_000);
        assert_eq!(id.len(), 28, "{id}");
        assert!(id.starts_with("evt_"), "{id}");
        assert!(id[4..].chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
        // 1,796,000,000,000,000 µs in base 36.
        assert_eq!(&id[4..14], "homn0cnjsw", "{id}");
        assert_ne!(
            new_id(0),
            new_id(0),
            "the random part tells ids of one instant apart"
        );
    }

    proptest! {
        /// Ids sort by time: an event recorded later never sorts before an earlier one,
        /// byte-wise (SQLite) and in a locale's collation (PostgreSQL), since the time is
        /// digits and lower-case letters only.
        #[test]
        fn later_ids_sort_later(a in 0i64..3_656_158_440_062_975, b in 0i64..3_656_158_440_062_975) {
            let (x, y) = (new_id(a.min(b)), new_id(a.max(b)));
            if a != b {
                prop_assert!(x < y, "{x} {y}");
                prop_assert!(x[4..14].bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()), "{x}");
            }
        }
    }
}
