//! Card payments through a gateway: the PaymentIntents Lodge created for invoices, their
//! last-seen status and failure reason (migration 0012). The money is a `payments` row.

use lodge_core::OrganizationId;

use crate::{vals, Result, SqlConn, Val};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPaymentRow {
    pub id: i64,
    pub gateway: String,
    pub intent_id: String,
    pub invoice_id: i64,
    pub organization_id: OrganizationId,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub modified_at: i64,
}

const COLUMNS: &str = "id, gateway, intent_id, invoice_id, organization_id, amount_minor, currency, status, failure_reason, created_at, modified_at";

impl CardPaymentRow {
    fn from_vals(row: Vec<Val>) -> Result<Self> {
        let mut c = crate::Cols::new(row);
        Ok(CardPaymentRow {
            id: c.int()?,
            gateway: c.text()?,
            intent_id: c.text()?,
            invoice_id: c.int()?,
            organization_id: c.parse()?,
            amount_minor: c.int()?,
            currency: c.text()?,
            status: c.text()?,
            failure_reason: c.opt_text()?,
            created_at: c.int()?,
            modified_at: c.int()?,
        })
    }
}

pub struct NewCardPayment<'a> {
    pub gateway: &'a str,
    pub intent_id: &'a str,
    pub invoice_id: i64,
    pub organization_id: OrganizationId,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub now: i64,
}

/// Records an intent; `false` (and nothing written) when this intent, or another open one
/// of the same invoice and amount, is recorded already.
pub async fn insert<C: SqlConn>(conn: &mut C, p: &NewCardPayment<'_>) -> Result<bool> {
    let n = conn
        .exec(
            "INSERT INTO card_payments (gateway, intent_id, invoice_id, organization_id, amount_minor, currency, status, created_at, modified_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT DO NOTHING",
            vals![
                p.gateway,
                p.intent_id,
                p.invoice_id,
                p.organization_id.to_string(),
                p.amount_minor,
                p.currency,
                p.status,
                p.now,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// The open intent (neither succeeded nor canceled) of an invoice for this amount.
pub async fn open_for<C: SqlConn>(
    conn: &mut C,
    gateway: &str,
    invoice: i64,
    amount_minor: i64,
) -> Result<Option<CardPaymentRow>> {
    conn.fetch_row(
        &format!(
            "SELECT {COLUMNS} FROM card_payments WHERE gateway = $1 AND invoice_id = $2
             AND amount_minor = $3 AND status <> 'succeeded' AND status <> 'canceled'"
        ),
        vals![gateway, invoice, amount_minor],
    )
    .await?
    .map(CardPaymentRow::from_vals)
    .transpose()
}

/// An intent by its gateway's id.
pub async fn by_intent<C: SqlConn>(
    conn: &mut C,
    gateway: &str,
    intent_id: &str,
) -> Result<Option<CardPaymentRow>> {
    conn.fetch_row(
        &format!("SELECT {COLUMNS} FROM card_payments WHERE gateway = $1 AND intent_id = $2"),
        vals![gateway, intent_id],
    )
    .await?
    .map(CardPaymentRow::from_vals)
    .transpose()
}

/// The intents of an invoice, newest first.
pub async fn of_invoice<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<Vec<CardPaymentRow>> {
    conn.fetch_rows(
        &format!("SELECT {COLUMNS} FROM card_payments WHERE invoice_id = $1 ORDER BY id DESC"),
        vals![invoice],
    )
    .await?
    .into_iter()
    .map(CardPaymentRow::from_vals)
    .collect()
}

/// Sets an intent's status as the gateway reported it, and the reason of a failure (`None`
/// keeps the last one unless the intent succeeded). `false` when the intent is unknown.
/// A succeeded, credited or cancelled intent stays so (events may arrive out of order; at
/// Stripe all three are final).
pub async fn set_status<C: SqlConn>(
    conn: &mut C,
    gateway: &str,
    intent_id: &str,
    status: &str,
    failure_reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    let n = conn
        .exec(
            "UPDATE card_payments SET
                 status = CASE WHEN status = 'succeeded' OR status = 'credited'
                                    OR (status = 'canceled' AND $3 <> 'succeeded') THEN status
                               ELSE $3 END,
                 failure_reason = CASE WHEN $3 = 'succeeded' OR status = 'succeeded'
                                            OR status = 'credited' THEN NULL
                                       ELSE COALESCE($4, failure_reason) END,
                 modified_at = $5
             WHERE gateway = $1 AND intent_id = $2",
            vals![gateway, intent_id, status, failure_reason, now],
        )
        .await?;
    Ok(n >= 1)
}

/// Marks a succeeded intent whose invoice could no longer take it as credited to the
/// organization's account: `true` once (the caller then writes the deposit in the same
/// transaction), `false` when it was already.
pub async fn mark_credited<C: SqlConn>(
    conn: &mut C,
    gateway: &str,
    intent_id: &str,
    now: i64,
) -> Result<bool> {
    let n = conn
        .exec(
            "UPDATE card_payments SET status = 'credited', failure_reason = NULL, modified_at = $3
             WHERE gateway = $1 AND intent_id = $2 AND status <> 'credited'",
            vals![gateway, intent_id, now],
        )
        .await?;
    Ok(n == 1)
}

/// Open intents (neither succeeded, cancelled nor credited) whose invoice no longer asks for
/// their amount: paid, cancelled or refunded otherwise, or its amount due changed since. A
/// card form of one left open in a browser could still charge the card. At most `limit`,
/// oldest first. The partial index `card_payments_open` holds exactly the open ones.
pub async fn superseded<C: SqlConn>(
    conn: &mut C,
    gateway: &str,
    limit: i64,
) -> Result<Vec<CardPaymentRow>> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    conn.fetch_rows(
        &format!(
            "SELECT {cols} FROM card_payments c JOIN invoices i ON i.id = c.invoice_id
             WHERE c.gateway = $1 AND c.status <> 'succeeded' AND c.status <> 'canceled'
               AND c.status <> 'credited'
               AND (i.status <> 'unpaid'
                    OR c.amount_minor <> i.total_minor - i.credit_applied_minor - i.paid_minor)
             ORDER BY c.id LIMIT $2"
        ),
        vals![gateway, limit],
    )
    .await?
    .into_iter()
    .map(CardPaymentRow::from_vals)
    .collect()
}
