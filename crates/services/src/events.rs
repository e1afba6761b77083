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
    /// An invoice was issued: an order's first, a renewal, a plan change's.
    #[serde(rename = "invoice.created")]
    InvoiceCreated,
    /// An invoice was paid in full (credit, card, transfer).
    #[serde(rename = "invoice.paid")]
    InvoicePaid,
    /// A renewal is due soon and still unpaid (once per invoice).
    #[serde(rename = "invoice.reminder")]
    InvoiceReminder,
    /// A renewal is past due and unpaid: the account will be suspended (once per invoice).
    #[serde(rename = "invoice.overdue")]
    InvoiceOverdue,
    /// A card payment failed (declined); the invoice stays unpaid.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// Money went back: to credit, in cash, or to the card.
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    /// A hosting account was created on its server and is live.
    #[serde(rename = "hosting.active")]
    HostingActive,
    #[serde(rename = "hosting.suspended")]
    HostingSuspended,
    #[serde(rename = "hosting.unsuspended")]
    HostingUnsuspended,
    #[serde(rename = "hosting.terminated")]
    HostingTerminated,
}

impl EventKind {
    /// Every kind, for the lists that name them (webhook subscriptions, documentation).
    pub const ALL: [EventKind; 11] = [
        EventKind::OrderCreated,
        EventKind::InvoiceCreated,
        EventKind::InvoicePaid,
        EventKind::InvoiceReminder,
        EventKind::InvoiceOverdue,
        EventKind::PaymentFailed,
        EventKind::PaymentRefunded,
        EventKind::HostingActive,
        EventKind::HostingSuspended,
        EventKind::HostingUnsuspended,
        EventKind::HostingTerminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order.created",
            EventKind::InvoiceCreated => "invoice.created",
            EventKind::InvoicePaid => "invoice.paid",
            EventKind::InvoiceReminder => "invoice.reminder",
            EventKind::InvoiceOverdue => "invoice.overdue",
            EventKind::PaymentFailed => "payment.failed",
            EventKind::PaymentRefunded => "payment.refunded",
            EventKind::HostingActive => "hosting.active",
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

fn new_id() -> String {
    format!("evt_{}", crate::orders::random_token(24))
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
        id: new_id(),
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
        "amount_due_minor": i.amount_due(),
        "due_date": i.due_date,
        "order_id": i.order_id,
    })
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
    now: i64,
) -> Result<()> {
    let Some(h) = lodge_store::hosting::account_billing(conn, id).await? else {
        return Ok(());
    };
    emit(
        conn,
        kind,
        h.organization_id,
        format!("hosting:{id}"),
        json!({ "hosting_id": id, "domain": h.domain_name, "note": note }),
        now,
    )
    .await
}
