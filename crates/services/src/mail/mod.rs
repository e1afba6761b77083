//! Mail notices: an e-mail to the organization's owner for each event a customer expects to
//! be told about, sent over SMTP by the job worker.
//!
//! - **Which events** ([`Notice::for_event`]): `order.created` (order confirmation),
//!   `invoice.created` when something is left to pay (invoice issued, first or renewal),
//!   `invoice.paid` (payment receipt), `invoice.updated` (an unpaid invoice re-priced),
//!   `invoice.reminder`, `invoice.overdue`,
//!   `hosting.active` (the account is ready: its username, server and nameservers),
//!   `hosting.cancellation_requested` (the cancellation confirmed, with the day it takes
//!   effect), `hosting.suspended`, `hosting.unsuspended`, `hosting.terminated`, and
//!   `payment.refunded` (a refund, to credit or to the payment method).
//! - **When**: [`on_event`] writes a `mail` job in the event's own transaction (keyed by
//!   [`crate::events::Event::job_key`], so an event told once makes one job). Nothing is
//!   read back nor sent there; the job renders and sends when the worker runs it.
//! - **To whom**: the organization's first owner (the active user who became an owner
//!   earliest): the person who signed up and pays. Organizations have no separate billing
//!   address; an organization without an owner gets no mail (logged `skipped`).
//! - **Exactly once**: each message's Message-ID is derived from its event's id
//!   (`<evt_…@domain of the From address>`). `mail_log` has one row per message: a send
//!   starts by writing it `sending`, and ends `sent` (the server accepted it), `failed` (refused
//!   or unreachable) or `unknown` (the connection broke after the message may have been
//!   accepted). A job that finds its message `sent` sends nothing (a crash between the send's
//!   record and the job's completion). The one accepted duplicate: a send after `sending` or
//!   `unknown` (the answer to DATA was lost, or the node died mid-send) may deliver the
//!   message a second time, with the same Message-ID, which mail clients collapse; the row
//!   records it (`possible_duplicate = 1`).
//! - **SMTP down**: the job fails and the worker retries it with its backoff (10 s doubling
//!   to an hour, [`MAX_ATTEMPTS`] attempts: about five and a half hours), so it is sent once the
//!   server is back.
//! - **Off** when no SMTP host is configured: each node writes `mail_state` at start from
//!   its configuration ([`crate::Lodge::switch_mail`]); while mail is off events are still
//!   recorded and no mail job is made. The nodes of one installation share one configuration.

use std::sync::atomic::{AtomicBool, Ordering};

use lodge_core::InvoiceStatus;
use lodge_store::billing::InvoiceRow;
use lodge_store::jobs::JobRow;
use lodge_store::SqlConn;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::amount_text as amount;
use crate::events::{Event, EventKind};
use crate::{Lodge, Result, ServiceError};

pub mod config;
pub mod render;
mod send;

pub use config::{MailSettings, TlsMode};
pub use send::SendOutcome;

/// The job kind of a notice.
pub const JOB_MAIL: &str = "mail";

/// Attempts of a mail job: with the worker's backoff (10 s doubling, capped at an hour)
/// about five and a half hours of retries (13 waits).
pub const MAX_ATTEMPTS: i64 = 14;

/// Whether a node of this process has mail configured: until one has, [`on_event`] costs
/// nothing (no read of `mail_state`).
static MAIL_IN_PROCESS: AtomicBool = AtomicBool::new(false);

/// A notice: what a customer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    OrderCreated,
    InvoiceCreated,
    InvoicePaid,
    InvoiceUpdated,
    InvoiceReminder,
    InvoiceOverdue,
    HostingActive,
    HostingCancellationRequested,
    HostingSuspended,
    HostingUnsuspended,
    HostingTerminated,
    PaymentRefunded,
}

impl Notice {
    /// The notice an event is told by, if any: `invoice.created` only when something is
    /// left to pay (an invoice settled at once from credit is told by its receipt).
    pub fn for_event(kind: EventKind, data: &Value) -> Option<Notice> {
        Some(match kind {
            EventKind::OrderCreated => Notice::OrderCreated,
            EventKind::InvoiceCreated => {
                let due = data.get("amount_due_minor").and_then(Value::as_i64);
                if due.unwrap_or(0) <= 0 {
                    return None;
                }
                Notice::InvoiceCreated
            }
            EventKind::InvoicePaid => Notice::InvoicePaid,
            EventKind::InvoiceUpdated => Notice::InvoiceUpdated,
            EventKind::InvoiceReminder => Notice::InvoiceReminder,
            EventKind::InvoiceOverdue => Notice::InvoiceOverdue,
            EventKind::HostingSuspended => Notice::HostingSuspended,
            EventKind::HostingUnsuspended => Notice::HostingUnsuspended,
            EventKind::HostingTerminated => Notice::HostingTerminated,
            // The account's details once it is made (a customer waits for them after paying:
            // found by the support-desk audit, nothing said the account was ready), a
            // cancellation confirmed in writing with its date, and money given back.
            EventKind::HostingActive => Notice::HostingActive,
            EventKind::HostingCancellationRequested => Notice::HostingCancellationRequested,
            EventKind::PaymentRefunded => Notice::PaymentRefunded,
            // A cancelled invoice is told by what cancelled it (the overdue notice, the
            // termination); a payment by its receipt once the invoice is paid.
            EventKind::InvoiceCancelled
            | EventKind::CreditAdjusted
            | EventKind::HostingPlanChanged
            // For integrators, not mailed: an unpaid order's cancellation and a
            // cancellation's withdrawal are answered where they are made; a card payment's
            // failure on the payment page where the customer is paying.
            | EventKind::OrderCancelled
            | EventKind::HostingCancellationWithdrawn
            | EventKind::PaymentReceived
            | EventKind::PaymentFailed
            | EventKind::PaymentRefundFailed => return None,
        })
    }

    /// Whether it asks for the payment of an unpaid invoice.
    fn asks_for_payment(self) -> bool {
        matches!(
            self,
            Notice::InvoiceCreated
                | Notice::InvoiceUpdated
                | Notice::InvoiceReminder
                | Notice::InvoiceOverdue
        )
    }

    /// Whether it tells of one hosting account (its context has the account as it is now).
    fn is_about_an_account(self) -> bool {
        matches!(
            self,
            Notice::HostingActive
                | Notice::HostingCancellationRequested
                | Notice::HostingSuspended
                | Notice::HostingUnsuspended
                | Notice::HostingTerminated
        )
    }

    /// Its templates' name (`<name>.txt`, `<name>.html`).
    pub fn template(self) -> &'static str {
        match self {
            Notice::OrderCreated => "order_created",
            Notice::InvoiceCreated => "invoice_created",
            Notice::InvoicePaid => "invoice_paid",
            Notice::InvoiceUpdated => "invoice_updated",
            Notice::InvoiceReminder => "invoice_reminder",
            Notice::InvoiceOverdue => "invoice_overdue",
            Notice::HostingActive => "hosting_active",
            Notice::HostingCancellationRequested => "hosting_cancellation_requested",
            Notice::HostingSuspended => "hosting_suspended",
            Notice::HostingUnsuspended => "hosting_unsuspended",
            Notice::HostingTerminated => "hosting_terminated",
            Notice::PaymentRefunded => "payment_refunded",
        }
    }
}

/// The mail consumer of an event, in the event's transaction: a `mail` job when the event
/// is a notice and mail is on (both decided in the statement that writes it, which the
/// orders' group commit runs once for all its events, after their rows).
pub(crate) async fn on_event<C: SqlConn>(conn: &mut C, event: &Event) -> Result<()> {
    if Notice::for_event(event.kind, &event.data).is_none()
        || !MAIL_IN_PROCESS.load(Ordering::Relaxed)
    {
        return Ok(());
    }
    lodge_store::mail::enqueue_for_event(conn, JOB_MAIL, &event.id, MAX_ATTEMPTS).await?;
    Ok(())
}

/// The Message-ID of the notice of an event.
pub fn message_id(event_id: &str, settings: &MailSettings) -> String {
    format!("<{event_id}@{}>", settings.from_domain())
}

/// The Message-ID of the notice of an event, or of a copy of it staff sent again
/// ([`Lodge::resend_mail`]): a message of its own (`<evt_….<copy>@…>`), logged apart.
pub fn copy_message_id(event_id: &str, copy: Option<i64>, settings: &MailSettings) -> String {
    match copy {
        None => message_id(event_id, settings),
        Some(c) => format!("<{event_id}.{c}@{}>", settings.from_domain()),
    }
}

fn int(v: &Value, field: &str) -> i64 {
    v.get(field).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

/// A domain name as its customer writes it: an internationalized one in its own letters,
/// not the `xn--` form stored (found by the mail audit: "your order for
/// xn--bcher-strae-46a18a.com").
fn display_domain(ascii: &str) -> String {
    lodge_core::DomainName::parse(ascii).map_or_else(|_| ascii.to_owned(), |d| d.to_unicode())
}

#[derive(Debug, Deserialize)]
struct MailPayload {
    event_id: String,
    /// A copy staff sent again: its number (see [`copy_message_id`]).
    #[serde(default)]
    copy: Option<i64>,
}

/// The dedupe keys of the copies of an event's notice staff send again: `<prefix><copy>`.
fn copy_key_prefix(event_id: &str) -> String {
    format!("{JOB_MAIL}:copy:{event_id}:")
}

/// The statuses of the mail log (`mail_log.status`).
pub const MAIL_STATUSES: [&str; 5] = ["sending", "sent", "failed", "unknown", "skipped"];

impl Lodge {
    /// Staff's view of the mail log: a page, newest first, optionally of one status.
    pub async fn mail_log(
        &self,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<lodge_store::mail::MailLogRow>, i64)> {
        if let Some(s) = status {
            if !MAIL_STATUSES.contains(&s) {
                return Err(ServiceError::field(
                    "status",
                    "One of sending, sent, failed, unknown or skipped.",
                ));
            }
        }
        let mut db = self.store.read_conn().await?;
        Ok(lodge_store::mail::page(&mut db, status, limit, offset).await?)
    }

    /// Staff send a logged notice again (the customer did not get it, or lost it): a new
    /// `mail` job for the message's event, rendered from that event as the first was, sent
    /// to the organization's owner as it is now, with a Message-ID of its own and a row of
    /// its own in the log. One copy of a message waits at a time: asked again while one is
    /// queued or being sent, `Conflict` (a double click sends one copy); so is a copy of a
    /// message whose own job is still queued or retrying. Returns the job.
    pub async fn resend_mail(&self, mail_id: i64) -> Result<lodge_store::jobs::JobRow> {
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        if !lodge_store::mail::enabled(&mut *tx).await? {
            return Err(ServiceError::Conflict(
                "Mail is off: no SMTP server is configured.".into(),
            ));
        }
        let row = lodge_store::mail::by_id(&mut *tx, mail_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let Some(event_id) = row.event_id else {
            return Err(ServiceError::Conflict(
                "This message tells of no event: it cannot be sent again.".into(),
            ));
        };
        let event = lodge_store::events::event(&mut *tx, &event_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        // What its job would skip is said now rather than accepted (found by the support-desk
        // audit: 202, then "skipped" in the log, the customer getting nothing): the same rule
        // as the job's ([`Lodge::no_longer_true`]).
        if let Ok(kind) = event.kind.parse::<EventKind>() {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            if let Some(notice) = Notice::for_event(kind, &data) {
                if let Some(why) = self.no_longer_true(notice, &data, event.created_at).await? {
                    let receipt = if notice.asks_for_payment() {
                        " (its receipt, an invoice_paid message, can be)"
                    } else {
                        ""
                    };
                    return Err(ServiceError::Conflict(format!(
                        "This message is not sent again: {why}{receipt}."
                    )));
                }
            }
        }
        // The organization's lock orders two requests for one of its messages: the second
        // sees the first one's copy waiting.
        lodge_store::billing::lock_credit(&mut *tx, event.organization_id).await?;
        let prefix = copy_key_prefix(&event_id);
        if lodge_store::jobs::open_with_key_prefix(&mut *tx, JOB_MAIL, &prefix).await? {
            return Err(ServiceError::Conflict(
                "A copy of this message is already waiting to be sent.".into(),
            ));
        }
        // The message itself still being tried (its server down): a copy now would reach
        // the customer twice once the server is back (found by review).
        let original = json!({ "event_id": event_id }).to_string();
        if lodge_store::jobs::open_with_payload(&mut *tx, JOB_MAIL, &original).await? {
            return Err(ServiceError::Conflict(
                "This message is still to be sent (its job is queued or retrying): see its \
                 job rather than sending a copy."
                    .into(),
            ));
        }
        // A number of its own (not the clock's: two copies in one microsecond, or under a
        // test's still clock, would be one job and one Message-ID); one taken already
        // (one chance in four billion) is drawn again.
        let mut key = String::new();
        for _ in 0..4 {
            let copy = i64::from(rand::random::<u32>());
            key = format!("{prefix}{copy}");
            let payload = json!({ "event_id": event_id, "copy": copy }).to_string();
            let new = lodge_store::jobs::enqueue(
                &mut *tx,
                &lodge_store::jobs::NewJob {
                    kind: JOB_MAIL,
                    payload: &payload,
                    dedupe_key: Some(&key),
                    run_at: now,
                    max_attempts: MAX_ATTEMPTS,
                    now,
                },
            )
            .await?;
            if new {
                break;
            }
        }
        let job = lodge_store::jobs::by_dedupe_key(&mut *tx, &key)
            .await?
            .ok_or_else(|| {
                ServiceError::Internal(format!("the job {key} just written is missing"))
            })?;
        tx.commit().await.map_err(lodge_store::StoreError::from)?;
        Ok(job)
    }

    /// For a command (`lodge billing run`, …), not a node: the notices of the events it
    /// raises are queued when the installation sends mail (as its nodes recorded), for the
    /// nodes' workers to send (found by the mail audit: the renewal invoices and receipts a
    /// `billing run` issued were never mailed).
    pub fn mail_as_the_installation(&self) {
        MAIL_IN_PROCESS.store(true, Ordering::Relaxed);
    }

    /// Records in the database whether this installation sends mail (this node's
    /// configuration: an SMTP host or not). Called when a node starts.
    pub async fn switch_mail(&self) -> Result<()> {
        let on = self.settings.mail.is_some();
        if on {
            MAIL_IN_PROCESS.store(true, Ordering::Relaxed);
        }
        let mut conn = self.store.write_conn().await?;
        lodge_store::mail::set_enabled(&mut *conn, on, self.now_us()).await?;
        Ok(())
    }

    fn mail_settings(&self) -> Result<&MailSettings> {
        self.settings.mail.as_ref().ok_or_else(|| {
            ServiceError::Internal("mail is not configured on this node (no SMTP host)".into())
        })
    }

    /// The installation's part of every message's context.
    fn installation(&self, m: &MailSettings) -> Value {
        json!({
            "name": m.installation_name,
            "address": m.postal_address,
            "address_lines": m.postal_address.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>(),
            "base_url": m.base_url,
        })
    }

    /// Runs a `mail` job: renders the notice of its event and sends it once.
    pub(crate) async fn run_mail_job(&self, job: &JobRow) -> Result<()> {
        let p: MailPayload = serde_json::from_str(&job.payload).map_err(|e| {
            ServiceError::Internal(format!("job {} has a bad payload: {e}", job.id))
        })?;
        let m = self.mail_settings()?;
        let mid = copy_message_id(&p.event_id, p.copy, m);
        let (event, previous) = {
            let mut db = self.store.read_conn().await?;
            let event = lodge_store::events::event(&mut db, &p.event_id).await?;
            let previous = lodge_store::mail::by_message_id(&mut db, &mid).await?;
            (event, previous)
        };
        if previous
            .as_ref()
            .is_some_and(|r| r.status == "sent" || r.status == "skipped")
        {
            // Sent before the job's completion was recorded: nothing to do.
            return Ok(());
        }
        let event = event.ok_or_else(|| {
            ServiceError::Internal(format!("event {} of job {} is missing", p.event_id, job.id))
        })?;
        let kind: EventKind = event
            .kind
            .parse()
            .map_err(|e: String| ServiceError::Internal(e))?;
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| ServiceError::Internal(format!("event {}: {e}", event.id)))?;
        let Some(notice) = Notice::for_event(kind, &data) else {
            return Ok(());
        };
        let (ctx, recipient, skip) = self.notice_context(m, &event, notice, &data).await?;
        let templates =
            render::Templates::load(m.templates_dir.as_deref()).map_err(ServiceError::Internal)?;
        let rendered = templates
            .render(notice.template(), &ctx)
            .map_err(ServiceError::Internal)?;
        let sending = lodge_store::mail::Sending {
            message_id: &mid,
            event_id: Some(&event.id),
            job_id: Some(job.id),
            notice: notice.template(),
            to_address: recipient.as_ref().map_or("", |(a, _)| a.as_str()),
            subject: &rendered.subject,
            now: self.now_us(),
        };
        let Some((address, name)) = recipient.as_ref() else {
            let mut conn = self.store.write_conn().await?;
            lodge_store::mail::skip(&mut *conn, &sending, "the organization has no owner").await?;
            return Ok(());
        };
        let skip = skip.or_else(|| {
            address
                .parse::<lettre::Address>()
                .is_err()
                .then_some("the owner's address is not a valid e-mail address")
        });
        if let Some(why) = skip {
            let mut conn = self.store.write_conn().await?;
            lodge_store::mail::skip(&mut *conn, &sending, why).await?;
            return Ok(());
        }
        self.send_logged(m, &sending, address, name, &rendered)
            .await
            .map(drop)
    }

    /// Sends one message, its attempt and outcome recorded in `mail_log`.
    async fn send_logged(
        &self,
        m: &MailSettings,
        sending: &lodge_store::mail::Sending<'_>,
        address: &str,
        name: &str,
        rendered: &render::Rendered,
    ) -> Result<SendOutcome> {
        {
            // An attempt still `sending` within twice the timeout may be going on on another
            // worker (its lease lost to a slow round): it is left to end, and this job tried
            // again later, rather than a second copy sent at once.
            let window = i64::try_from(m.timeout.as_micros()).unwrap_or(i64::MAX / 4) * 2;
            let mut conn = self.store.write_conn().await?;
            if !lodge_store::mail::start_sending(&mut *conn, sending, sending.now - window).await? {
                return Err(ServiceError::Internal(format!(
                    "message {} is being sent by another worker; tried again later",
                    sending.message_id
                )));
            }
        }
        let date = self.clock.now();
        let result = send::send(m, sending.message_id, address, name, rendered, date).await;
        let now = self.now_us();
        let mut conn = self.store.write_conn().await?;
        match result {
            Ok(answer) => {
                lodge_store::mail::finish_sending(
                    &mut *conn,
                    sending.message_id,
                    "sent",
                    Some(&answer.response),
                    None,
                    now,
                )
                .await?;
                Ok(answer)
            }
            Err(e) => {
                let status = if e.answer_may_be_lost {
                    "unknown"
                } else {
                    "failed"
                };
                lodge_store::mail::finish_sending(
                    &mut *conn,
                    sending.message_id,
                    status,
                    None,
                    Some(&e.message),
                    now,
                )
                .await?;
                let message = format!("sending mail: {}", e.message);
                Err(if e.recipient_refused {
                    ServiceError::Refused(message)
                } else {
                    ServiceError::Internal(message)
                })
            }
        }
    }

    /// What a notice's templates see, its recipient, and why it is not sent (an invoice
    /// reminder or overdue warning whose invoice was paid or cancelled meanwhile).
    async fn notice_context(
        &self,
        m: &MailSettings,
        event: &lodge_store::events::EventRow,
        notice: Notice,
        data: &Value,
    ) -> Result<(Value, Option<(String, String)>, Option<&'static str>)> {
        let mut db = self.store.read_conn().await?;
        let recipient = lodge_store::mail::owner_address(&mut db, event.organization_id).await?;
        let org_name = lodge_store::mail::organization_name(&mut db, event.organization_id)
            .await?
            .unwrap_or_default();
        let currency = text(data, "currency").unwrap_or("USD").to_owned();
        let money = |field: &str| amount(int(data, field), &currency);
        let invoice_id = data.get("invoice_id").and_then(Value::as_i64);
        let invoice_row = match invoice_id {
            Some(id) => lodge_store::billing::invoice(&mut db, id).await?,
            None => None,
        };
        drop(db);
        // What payments brought in: a receipt says what went to credit beyond what was due
        // (found by the support-desk audit: 10.00 received on a 5.00 invoice was told as
        // "Payment received: 5.00").
        let received_minor = match (&invoice_row, notice) {
            (Some(i), Notice::InvoicePaid) => {
                // What its payments paid, and what they brought beyond it (the ledger's
                // overpayment entries): money recorded once it was paid (a customer who paid
                // twice, transfers recorded at the same moment) went to credit apart and is
                // not this receipt's (found by review and the recheck: counted as received).
                let mut db = self.store.read_conn().await?;
                let over = lodge_store::billing::ledger_sum_with_note(
                    &mut db,
                    i.organization_id,
                    i.id,
                    crate::billing::OVERPAYMENT_NOTE,
                )
                .await?;
                i.paid_minor.saturating_add(over)
            }
            _ => 0,
        };
        let mut skip = None;
        // Told as things are when it is sent, not when it was queued (found by the mail
        // audit: after an SMTP outage the invoice's notice, with its payment link, came
        // after the invoice was paid; the order's still said what was due). Settled since:
        // nothing is due, and no link to pay.
        let status_now = invoice_row.as_ref().map(|i| i.status);
        let settled = status_now.is_some_and(|s| s != InvoiceStatus::Unpaid);
        let (due, due_minor) = if settled {
            (amount(0, &currency), 0)
        } else {
            // The invoice as it is now: a part payment, a plan change's re-pricing or a
            // terminated account's line taken off since its event changed what is due
            // (found by the support-desk audit: an overdue warning said 15.00 due where the
            // invoice and its payment page said 10.00).
            let now = invoice_row
                .as_ref()
                .map_or(int(data, "amount_due_minor"), InvoiceRow::amount_due);
            (amount(now, &currency), now)
        };
        let invoice = invoice_row.as_ref().map(|i| {
            let to_credit = received_minor.saturating_sub(i.paid_minor).max(0);
            json!({
                "id": i.id,
                "number": i.number.clone().unwrap_or_else(|| format!("#{}", i.id)),
                "kind": i.kind.as_str(),
                "status": i.status.as_str(),
                "total": amount(i.total_minor, &currency),
                "total_minor": i.total_minor,
                "credit_applied": amount(i.credit_applied_minor, &currency),
                "credit_applied_minor": i.credit_applied_minor,
                "paid": amount(i.paid_minor, &currency),
                "paid_minor": i.paid_minor,
                "received": amount(received_minor, &currency),
                "received_minor": received_minor,
                "to_credit": amount(to_credit, &currency),
                "to_credit_minor": to_credit,
                "amount_due": &due,
                "amount_due_minor": due_minor,
                "due_date": i.due_date,
                "suspend_on": text(data, "suspend_on"),
                "pay_url": (!settled)
                    .then(|| format!("{}/pay/{}", m.base_url, self.payment_token(i))),
            })
        });
        let order = (notice == Notice::OrderCreated).then(|| {
            json!({
                "id": int(data, "order_id"),
                "number": text(data, "order_number"),
                "domain": text(data, "domain").map(display_domain),
                "billing_cycle": text(data, "billing_cycle"),
                "total": money("total_minor"),
                "total_minor": int(data, "total_minor"),
                "credit_applied": money("credit_applied_minor"),
                "credit_applied_minor": int(data, "credit_applied_minor"),
                "amount_due": &due,
                "amount_due_minor": due_minor,
            })
        });
        let mut hosting = json!({
            "id": text(data, "hosting_id"),
            "domain": text(data, "domain").map(display_domain),
            "note": text(data, "note"),
            "by": text(data, "by"),
        });
        let account = match text(data, "hosting_id").map(str::parse::<lodge_core::HostingId>) {
            Some(Ok(id)) if notice.is_about_an_account() => {
                lodge_store::hosting::hosting(self.store.reader(), id).await?
            }
            _ => None,
        };
        if let Some(h) = &account {
            // The account as it is now (its details for the welcome; whether what is told
            // still stands).
            let server = match h.server_id.as_deref().map(str::parse) {
                Some(Ok(s)) => lodge_store::servers::by_id(self.store.reader(), s).await?,
                _ => None,
            };
            let plan = self
                .catalog()
                .await?
                .plan(h.plan_id)
                .map(|p| p.row.name.clone());
            if let Some(o) = hosting.as_object_mut() {
                o.insert("username".into(), json!(h.username));
                o.insert("plan".into(), json!(plan));
                o.insert("billing_cycle".into(), json!(h.billing_cycle));
                o.insert("next_due_date".into(), json!(h.next_due_date));
                o.insert("status".into(), json!(h.status.as_str()));
                o.insert(
                    "server".into(),
                    json!(server.map(|s| json!({
                        "hostname": s.hostname, "ns1": s.ns1, "ns2": s.ns2,
                    }))),
                );
            }
        }
        if let Some(why) = self.no_longer_true(notice, data, event.created_at).await? {
            skip = Some(why);
        }
        let cancellation = (notice == Notice::HostingCancellationRequested).then(|| {
            json!({
                "type": text(data, "type"),
                "effective_date": text(data, "effective_date"),
            })
        });
        let refund = (notice == Notice::PaymentRefunded).then(|| {
            json!({
                "amount": money("amount_minor"),
                "amount_minor": int(data, "amount_minor"),
                "to": text(data, "to"),
            })
        });
        let ctx = json!({
            "installation": self.installation(m),
            "recipient": {
                "email": recipient.as_ref().map(|(a, _)| a.as_str()),
                "name": recipient.as_ref().map(|(_, n)| n.as_str()).filter(|n| !n.is_empty()),
            },
            "organization": { "id": event.organization_id.to_string(), "name": org_name },
            "event": { "id": event.id, "kind": event.kind, "data": data },
            "order": order,
            "invoice": invoice,
            "hosting": hosting,
            "cancellation": cancellation,
            "refund": refund,
        });
        Ok((ctx, recipient, skip))
    }

    /// Why what a notice tells is no longer so (it is then not sent, nor sent again by
    /// staff): an invoice it asks payment of was paid or cancelled since (an SMTP outage);
    /// the order it confirms was cancelled (one paid is still confirmed: found by review,
    /// one paid from credit had its only confirmation refused); the account ended before its welcome went out (an
    /// SMTP outage, a cancellation at once); the cancellation was withdrawn, or asked again
    /// since (found by review: cancel, withdraw and cancel again sent two confirmations);
    /// the refund to a card failed.
    async fn no_longer_true(
        &self,
        notice: Notice,
        data: &Value,
        told_at: i64,
    ) -> Result<Option<&'static str>> {
        let account = || async {
            match text(data, "hosting_id").map(str::parse::<lodge_core::HostingId>) {
                Some(Ok(id)) => Ok::<_, ServiceError>(
                    lodge_store::hosting::hosting(self.store.reader(), id).await?,
                ),
                _ => Ok(None),
            }
        };
        let invoice = || async {
            match data.get("invoice_id").and_then(Value::as_i64) {
                Some(id) => {
                    let mut db = self.store.read_conn().await?;
                    Ok::<_, ServiceError>(lodge_store::billing::invoice(&mut db, id).await?)
                }
                None => Ok(None),
            }
        };
        Ok(match notice {
            n if n.asks_for_payment() => invoice()
                .await?
                .filter(|i| i.status != InvoiceStatus::Unpaid)
                .map(|_| "its invoice is paid or cancelled now"),
            Notice::OrderCreated => invoice()
                .await?
                .filter(|i| i.status == InvoiceStatus::Cancelled)
                .map(|_| "its order is cancelled now"),
            Notice::HostingActive => account()
                .await?
                .filter(|h| h.status.is_closed())
                .map(|_| "the account ended before its notice was sent"),
            Notice::HostingCancellationRequested => match account().await? {
                Some(h) if h.cancel_kind().is_none() => {
                    Some("the cancellation was withdrawn before its notice was sent")
                }
                Some(h) if h.cancel_requested_at.is_some_and(|at| at > told_at) => {
                    Some("a later cancellation request replaced it, and that one is told")
                }
                // Ended before its confirmation went out (terminated by staff): a date to
                // come and a withdrawal would be false (found by the recheck). An immediate
                // cancellation's confirmation still goes: the end is what it tells.
                Some(h) if h.status.is_closed() && text(data, "type") != Some("immediate") => {
                    Some("the account ended before its notice was sent")
                }
                _ => None,
            },
            Notice::PaymentRefunded => {
                let refund = match data.get("refund_id").and_then(Value::as_i64) {
                    Some(id) => {
                        let mut db = self.store.read_conn().await?;
                        lodge_store::refunds::refund(&mut db, id).await?
                    }
                    None => None,
                };
                refund
                    .filter(|r| r.failed_at.is_some())
                    .map(|_| "the refund failed before its notice was sent")
            }
            _ => None,
        })
    }

    /// Whether the configured SMTP server answers (connects, TLS and login as sending
    /// would, then `NOOP`); `Ok` when mail is off. Checked when a node starts
    /// ([`Lodge::check_services`]), so that a wrong host, port or password is in the log at
    /// once, not when the first customer's mail fails.
    pub async fn check_smtp(&self) -> std::result::Result<(), String> {
        match &self.settings.mail {
            Some(m) => send::check(m).await,
            None => Ok(()),
        }
    }

    /// Sends one test message to `to` with the configured SMTP (`lodge mail test`): the
    /// server's answer, or why it failed.
    pub async fn send_test_mail(&self, to: &str) -> Result<SendOutcome> {
        let m = self.mail_settings()?;
        let templates =
            render::Templates::load(m.templates_dir.as_deref()).map_err(ServiceError::Internal)?;
        let ctx = json!({
            "installation": self.installation(m),
            "recipient": { "email": to, "name": null },
        });
        let rendered = templates
            .render("test", &ctx)
            .map_err(ServiceError::Internal)?;
        let id = format!("test_{}", crate::orders::random_token(16));
        let mid = message_id(&id, m);
        // The SMTP server's words (refused, timed out, rejected), not Lodge's internal error
        // (the command read "internal: … Connection error").
        send::send(m, &mid, to, "", &rendered, self.clock.now())
            .await
            .map_err(|e| ServiceError::Unavailable(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internationalized_domain_is_shown_in_its_own_letters() {
        assert_eq!(
            super::display_domain("xn--bcher-strae-46a18a.com"),
            "bücher-straße.com"
        );
        assert_eq!(super::display_domain("plain.example"), "plain.example");
    }

    #[test]
    fn which_events_are_notices() {
        let due = json!({ "amount_due_minor": 500 });
        let settled = json!({ "amount_due_minor": 0 });
        assert_eq!(
            Notice::for_event(EventKind::InvoiceCreated, &due),
            Some(Notice::InvoiceCreated)
        );
        assert_eq!(Notice::for_event(EventKind::InvoiceCreated, &settled), None);
        assert_eq!(
            Notice::for_event(EventKind::HostingActive, &due),
            Some(Notice::HostingActive)
        );
        assert_eq!(Notice::for_event(EventKind::PaymentFailed, &due), None);
        assert_eq!(
            Notice::for_event(EventKind::HostingCancellationWithdrawn, &due),
            None
        );
        let all: Vec<_> = EventKind::ALL
            .into_iter()
            .filter_map(|k| Notice::for_event(k, &due))
            .collect();
        assert_eq!(all.len(), 12);
        let names = render::TEMPLATES.map(|(n, _)| n);
        for n in all {
            assert!(names.contains(&format!("{}.txt", n.template()).as_str()));
            assert!(names.contains(&format!("{}.html", n.template()).as_str()));
        }
    }

    #[test]
    fn amounts_read_as_the_api_writes_them() {
        assert_eq!(amount(500, "USD"), "5.00 USD");
        assert_eq!(amount(1200, "JPY"), "1200 JPY");
    }
}
