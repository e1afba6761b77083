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
    /// When the gateway refused it (a refund to a card), and why: it counts nowhere.
    pub failed_at: Option<i64>,
    pub failure: Option<String>,
}

const REFUND_COLUMNS: &str = "id, invoice_id, organization_id, amount_minor, currency, destination, reference, reason, actor, created_at, failed_at, failure";

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
            failed_at: c.opt_int()?,
            failure: c.opt_text()?,
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

/// Whether anything of an invoice billing the service `service` (a hosting account's or a
/// domain's id) was given back (to credit or in cash, a card refund that failed aside) at
/// or after `since` (unix microseconds).
pub async fn service_refunded_since<C: SqlConn>(
    conn: &mut C,
    service: &str,
    since: i64,
) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM refunds
             WHERE failed_at IS NULL AND created_at >= $2
               AND invoice_id IN (SELECT invoice_id FROM invoice_lines WHERE service_id = $1)",
            vals![service, since],
        )
        .await?
        .unwrap_or(0)
        > 0)
}

/// What went back of an invoice in cash so far.
pub async fn cash_refunded<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<i64> {
    Ok(conn
        .fetch_int(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM refunds
             WHERE invoice_id = $1 AND destination = 'cash' AND failed_at IS NULL",
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

/// Replaces the placeholder reference of a cash refund sent through a gateway with the
/// gateway's own (once it answered); `false` when the refund no longer has `placeholder`.
pub async fn set_reference<C: SqlConn>(
    conn: &mut C,
    id: i64,
    placeholder: &str,
    reference: &str,
) -> Result<bool> {
    let n = conn
        .exec(
            "UPDATE refunds SET reference = $3 WHERE id = $1 AND reference = $2",
            vals![id, placeholder, reference],
        )
        .await?;
    Ok(n == 1)
}

/// Marks a refund the gateway refused as failed (`failure`: the gateway's words) and gives
/// its amount back to what the invoice has left to refund, its status moved to `to`
/// ([`InvoiceStatus::refund_returned`]): one statement each, in the caller's transaction.
/// `false` (nothing written) when the refund failed already or is no longer waiting for
/// the gateway (its placeholder reference, starting with `pending`, was replaced).
pub async fn fail_refund<C: SqlConn>(
    conn: &mut C,
    refund: &RefundRow,
    pending: &str,
    failure: &str,
    to: InvoiceStatus,
    now: i64,
) -> Result<bool> {
    let marked = conn
        .exec(
            "UPDATE refunds SET failed_at = $2, failure = $3 \
             WHERE id = $1 AND failed_at IS NULL AND reference LIKE $4",
            vals![refund.id, now, failure, format!("{pending}%")],
        )
        .await?;
    if marked != 1 {
        return Ok(false);
    }
    let n = conn
        .exec(
            "UPDATE invoices SET refunded_minor = refunded_minor - $2, status = $3, modified_at = $4 \
             WHERE id = $1 AND refunded_minor >= $2 AND status IN ('refunded', 'partially_refunded')",
            vals![refund.invoice_id, refund.amount_minor, to.as_str(), now],
        )
        .await?;
    if n != 1 {
        return Err(StoreError::Config(format!(
            "refund {} failed, but its invoice {} did not count it",
            refund.id, refund.invoice_id
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    /// Migration 0010 on a SQLite database made by the migrations before it, holding a paid
    /// invoice: whether the order tables were still as migration 0002 wrote them (`IN`
    /// lists) or already rebuilt by an earlier build (`status = … OR …`), the status check
    /// then accepts `partially_refunded` and still refuses anything else, the invoice keeps
    /// its row with nothing refunded, and the refunded total is bounded by what it received.
    #[tokio::test]
    async fn migration_0010_loosens_the_status_check_of_either_form() {
        for rebuilt in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
                .unwrap();
            db.execute_batch(
                "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                     installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                     checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
            )
            .unwrap();
            for m in crate::sqlite::MIGRATIONS.iter().filter(|m| m.version < 10) {
                db.execute_batch(&m.sql).unwrap();
                db.execute(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                     VALUES ($1, $2, TRUE, $3, 0)",
                    rusqlite::params![m.version, m.description.as_ref(), m.checksum.as_ref()],
                )
                .unwrap();
            }
            db.execute_batch(
                "INSERT INTO organizations (id, name, credit_balance_minor, created_at, modified_at) VALUES ('org', 'O', 0, 1, 1);
                 INSERT INTO invoices (id, number, organization_id, kind, status, currency, subtotal_minor, total_minor,
                         credit_applied_minor, paid_minor, payment_token, due_date, issued_at, paid_at, created_at, modified_at)
                     VALUES (4, 'INV-000001', 'org', 'manual', 'paid', 'USD', 100, 100, 40, 60, 't4', '2026-01-01', 1, 1, 1, 1);",
            )
            .unwrap();
            let definition = |db: &rusqlite::Connection| -> String {
                db.query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'invoices'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
            };
            if rebuilt {
                // The text an earlier build's one-time rebuild left (only the text matters
                // to the migration).
                let sql = crate::sqlite::expand_in_lists(&definition(&db));
                assert!(
                    sql.contains("status = 'paid' OR status = 'refunded'"),
                    "{sql}"
                );
                let version: i64 = db
                    .query_row("PRAGMA schema_version", [], |r| r.get(0))
                    .unwrap();
                db.execute_batch("PRAGMA writable_schema = ON;").unwrap();
                db.execute(
                    "UPDATE sqlite_master SET sql = $1 WHERE type = 'table' AND name = 'invoices'",
                    [&sql],
                )
                .unwrap();
                db.execute_batch(&format!(
                    "PRAGMA schema_version = {}; PRAGMA writable_schema = OFF;",
                    version + 1
                ))
                .unwrap();
            }
            drop(db);

            let store = crate::Store::open(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let w = store.writer();
            let row: (String, i64) =
                sqlx::query_as("SELECT status, refunded_minor FROM invoices WHERE id = 4")
                    .fetch_one(w)
                    .await
                    .unwrap();
            assert_eq!(row, ("paid".to_owned(), 0), "rebuilt: {rebuilt}");
            sqlx::query(
                "UPDATE invoices SET status = 'partially_refunded', refunded_minor = 70 WHERE id = 4",
            )
            .execute(w)
            .await
            .unwrap();
            for refused in [
                "UPDATE invoices SET status = 'bogus' WHERE id = 4",
                "UPDATE invoices SET refunded_minor = 101 WHERE id = 4",
                "UPDATE invoices SET refunded_minor = -1 WHERE id = 4",
            ] {
                assert!(
                    sqlx::query(refused).execute(w).await.is_err(),
                    "rebuilt: {rebuilt}: {refused}"
                );
            }
            sqlx::query(
                "UPDATE invoices SET status = 'refunded', refunded_minor = 100 WHERE id = 4",
            )
            .execute(w)
            .await
            .unwrap();
            store.close().await;

            let db = rusqlite::Connection::open(&path).unwrap();
            let sql = definition(&db);
            assert_eq!(
                sql.matches("'partially_refunded'").count(),
                1,
                "rebuilt: {rebuilt}: {sql}"
            );
            let check: String = db
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
        }
    }
}
