//! Refunds of paid invoices: the `refunds` rows, and the invoice's running total and status
//! moved with each (migration 0010).

use lodge_core::{InvoiceEvent, InvoiceStatus, OrganizationId, RefundTo};
use sqlx::{Any, Executor, FromRow};

use crate::{vals, Result, SqlConn, StoreError, Val};

#[derive(Debug, Clone, FromRow)]
pub struct RefundRow {
    pub id: i64,
    pub invoice_id: i64,
    #[sqlx(try_from = "String")]
    pub organization_id: OrganizationId,
    pub amount_minor: i64,
    pub currency: String,
    #[sqlx(try_from = "String")]
    pub destination: RefundTo,
    pub reference: Option<String>,
    pub reason: String,
    pub actor: String,
    pub created_at: i64,
}

const REFUND_COLUMNS: &str = "id, invoice_id, organization_id, amount_minor, currency, destination, reference, reason, actor, created_at";

impl RefundRow {
    /// Reads a row fetched with [`REFUND_COLUMNS`].
    fn from_vals(row: Vec<Val>) -> Result<Self> {
        let mut c = crate::Cols::new(row);
        Ok(RefundRow {
            id: c.int()?,
            invoice_id: c.int()?,
            organization_id: c.parse()?,
            amount_minor: c.int()?,
            currency: c.text()?,
            destination: c.parse()?,
            reference: c.opt_text()?,
            reason: c.text()?,
            actor: c.text()?,
            created_at: c.int()?,
        })
    }
}

pub struct NewRefund<'a> {
    pub invoice_id: i64,
    pub organization_id: OrganizationId,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub destination: RefundTo,
    pub reference: Option<&'a str>,
    pub reason: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

/// Records a refund; its id, or `None` (and nothing written) when it is a cash refund whose
/// reference is recorded already (the unique index `refunds_cash_once`; a concurrent
/// recording of it waits for the first's commit).
pub async fn insert_refund<C: SqlConn>(conn: &mut C, r: &NewRefund<'_>) -> Result<Option<i64>> {
    conn.fetch_int(
        "INSERT INTO refunds (invoice_id, organization_id, amount_minor, currency, destination, reference, reason, actor, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING id",
        vals![
            r.invoice_id,
            r.organization_id.to_string(),
            r.amount_minor,
            r.currency,
            r.destination.as_str(),
            r.reference,
            r.reason,
            r.actor,
            r.now,
        ],
    )
    .await
}

/// A refund by id.
pub async fn refund<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<RefundRow>> {
    conn.fetch_row(
        &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1"),
        vals![id],
    )
    .await?
    .map(RefundRow::from_vals)
    .transpose()
}

/// The cash refund recorded under `reference`, if any.
pub async fn cash_refund_by_reference<C: SqlConn>(
    conn: &mut C,
    reference: &str,
) -> Result<Option<RefundRow>> {
    conn.fetch_row(
        &format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE reference = $1 AND destination = 'cash'"
        ),
        vals![reference],
    )
    .await?
    .map(RefundRow::from_vals)
    .transpose()
}

/// What went back of an invoice in cash so far.
pub async fn cash_refunded<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<i64> {
    Ok(conn
        .fetch_int(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM refunds
             WHERE invoice_id = $1 AND destination = 'cash'",
            vals![invoice],
        )
        .await?
        .unwrap_or(0))
}

/// The refunds of an invoice, oldest first.
pub async fn refunds_of_invoice<'e, E: Executor<'e, Database = Any>>(
    db: E,
    invoice: i64,
) -> Result<Vec<RefundRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {REFUND_COLUMNS} FROM refunds WHERE invoice_id = $1 ORDER BY id"
    ))
    .bind(invoice)
    .fetch_all(db)
    .await?)
}

/// Adds `amount` to what went back of an invoice and applies `event` (a refund of a part or
/// of the rest) to its status: one conditional update, `false` (and nothing written) when
/// its status does not accept the event ([`InvoiceStatus::next`]). The invoice's check
/// refuses a total above what it received.
pub async fn add_refunded<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    amount: i64,
    event: InvoiceEvent,
    now: i64,
) -> Result<bool> {
    if !matches!(event, InvoiceEvent::RefundPart | InvoiceEvent::RefundRest) {
        return Err(StoreError::Config(format!("{event:?} is not a refund")));
    }
    let sources = InvoiceStatus::sources(event);
    let Some(to) = sources.first().and_then(|s| s.next(event)) else {
        return Ok(false);
    };
    let mut args = vals![invoice, amount, to.as_str(), now];
    args.extend(sources.iter().map(|s| Val::from(s.as_str())));
    let list: Vec<String> = (5..5 + sources.len()).map(|i| format!("${i}")).collect();
    let changed = conn
        .exec(
            &format!(
                "UPDATE invoices SET refunded_minor = refunded_minor + $2, status = $3, modified_at = $4
                 WHERE id = $1 AND status IN ({})",
                list.join(", ")
            ),
            args,
        )
        .await?;
    Ok(changed == 1)
}
