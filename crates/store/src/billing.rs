//! Orders, invoices and their lines, payments, and the account-credit ledger.

use lodge_core::{
    InvoiceKind, InvoiceStatus, OrderEvent, OrderStatus, OrderUuid, OrganizationId, PaymentId,
    ProjectId,
};
use sqlx::{Any, AnyConnection, Executor, FromRow};

use crate::{dialect, vals, Cols, Result, SqlConn, StoreError, Val};

// ---- orders ----

#[derive(Debug, Clone, FromRow)]
pub struct OrderRow {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub uuid: OrderUuid,
    #[sqlx(try_from = "String")]
    pub organization_id: OrganizationId,
    #[sqlx(try_from = "String")]
    pub project_id: ProjectId,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    pub source: String,
    pub currency: String,
    pub coupon_id: Option<String>,
    pub created_at: i64,
    pub modified_at: i64,
}

const ORDER_COLUMNS: &str = "id, uuid, organization_id, project_id, status, source, currency, coupon_id, created_at, modified_at";

pub struct NewOrder<'a> {
    pub uuid: OrderUuid,
    pub organization_id: OrganizationId,
    pub project_id: ProjectId,
    pub status: OrderStatus,
    pub source: &'a str,
    pub currency: &'a str,
    pub coupon_id: Option<String>,
    pub actor: &'a str,
    pub now: i64,
}

const INSERT_ORDER: &str =
    "INSERT INTO orders (uuid, organization_id, project_id, status, source, currency, coupon_id, actor, created_at, modified_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)";

/// [`INSERT_ORDER`] with its id given (reserved, [`reserve_order_keys`]).
pub(crate) static INSERT_ORDER_KEYED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::deferred::with_key_column(INSERT_ORDER, "id"));

fn order_args(o: &NewOrder<'_>) -> Vec<Val> {
    vals![
        o.uuid.to_string(),
        o.organization_id.to_string(),
        o.project_id.to_string(),
        o.status.as_str(),
        o.source,
        o.currency,
        o.coupon_id.clone(),
        o.actor,
        o.now,
    ]
}

/// Inserts an order; returns its integer id (from the database).
pub async fn insert_order<C: SqlConn>(conn: &mut C, o: &NewOrder<'_>) -> Result<i64> {
    conn.insert_key(INSERT_ORDER, "id", order_args(o)).await
}

/// [`insert_order`], or with the id reserved for it ([`reserve_order_keys`]) as a row
/// written later ([`insert_keyed`]). Returns its id.
pub async fn insert_order_keyed<C: SqlConn>(
    conn: &mut C,
    o: &NewOrder<'_>,
    reserved: Option<i64>,
) -> Result<i64> {
    let sql = (INSERT_ORDER, INSERT_ORDER_KEYED.as_str());
    insert_keyed(conn, sql, "id", order_args(o), reserved).await
}

/// Inserts a row of `sql.0`, a one-row insert whose key the database assigns to
/// `key_column`, and returns its key; with a key reserved for it ([`reserve_order_keys`]),
/// inserts it with that key instead (`sql.1`, [`crate::deferred::with_key_column`] of
/// `sql.0`) as a row nothing reads before the commit ([`SqlConn::insert_later`]).
pub(crate) async fn insert_keyed<C: SqlConn>(
    conn: &mut C,
    sql: (&str, &'static str),
    key_column: &str,
    mut args: Vec<Val>,
    reserved: Option<i64>,
) -> Result<i64> {
    let Some(key) = reserved else {
        return conn.insert_key(sql.0, key_column, args).await;
    };
    args.push(Val::from(key));
    conn.insert_later(sql.1, args).await?;
    Ok(key)
}

/// The keys of a placed order's rows, taken before they are written: its order id, its
/// invoice id and its hosting account's legacy id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderKeys {
    pub order: i64,
    pub invoice: i64,
    pub hosting: i64,
}

/// Reserves the keys of `n` orders from PostgreSQL's sequences in one statement, so their
/// rows can be written together later (a batch's orders, invoices and accounts in a few
/// multi-row statements instead of three round trips an order). A key reserved and not
/// used is a gap in the ids, as a rolled-back insert leaves; invoice numbers are apart.
/// Empty on SQLite, where an insert returns its key without a round trip.
pub async fn reserve_order_keys<C: SqlConn>(conn: &mut C, n: usize) -> Result<Vec<OrderKeys>> {
    if !conn.is_postgres() || n == 0 {
        return Ok(Vec::new());
    }
    let rows = conn
        .fetch_rows(
            "SELECT nextval(pg_get_serial_sequence('orders', 'id')), \
             nextval(pg_get_serial_sequence('invoices', 'id')), \
             nextval(pg_get_serial_sequence('hosting', 'legacy_id')) \
             FROM generate_series(1, $1)",
            vals![i64::try_from(n).unwrap_or(i64::MAX)],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            let mut c = Cols::new(row);
            Ok(OrderKeys {
                order: c.int()?,
                invoice: c.int()?,
                hosting: c.int()?,
            })
        })
        .collect()
}

/// Reserves `n` invoice ids from PostgreSQL's sequence in one statement, as
/// [`reserve_order_keys`] does for orders (a batch of renewal invoices written together
/// later). Empty on SQLite.
pub async fn reserve_invoice_keys<C: SqlConn>(conn: &mut C, n: usize) -> Result<Vec<i64>> {
    if !conn.is_postgres() || n == 0 {
        return Ok(Vec::new());
    }
    let rows = conn
        .fetch_rows(
            "SELECT nextval(pg_get_serial_sequence('invoices', 'id')) FROM generate_series(1, $1)",
            vals![i64::try_from(n).unwrap_or(i64::MAX)],
        )
        .await?;
    rows.into_iter().map(|row| Cols::new(row).int()).collect()
}

pub async fn order<'e, E: Executor<'e, Database = Any>>(
    db: E,
    id: i64,
) -> Result<Option<OrderRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Locks an order for the rest of the transaction (a no-op update: PostgreSQL's row lock,
/// SQLite's write lock), for a transaction that must hold it before the accounts it locks
/// next (the lock order, docs/architecture.md).
pub async fn lock_order<C: SqlConn>(conn: &mut C, id: i64) -> Result<()> {
    conn.exec(
        "UPDATE orders SET modified_at = modified_at WHERE id = $1",
        vals![id],
    )
    .await?;
    Ok(())
}

/// Applies `event` to an order: one conditional update, so of racing changes one wins;
/// `false` (and nothing written) when its status does not accept the event
/// ([`OrderStatus::next`]).
pub async fn transition_order<C: SqlConn>(
    conn: &mut C,
    id: i64,
    event: OrderEvent,
    now: i64,
) -> Result<bool> {
    let sources = OrderStatus::sources(event);
    let Some(to) = sources.first().and_then(|s| s.next(event)) else {
        return Ok(false);
    };
    let mut args = vals![id, to.as_str(), now];
    args.extend(sources.iter().map(|s| Val::from(s.as_str())));
    let list: Vec<String> = (4..4 + sources.len()).map(|i| format!("${i}")).collect();
    let changed = conn
        .exec(
            &format!(
                "UPDATE orders SET status = $2, modified_at = $3 WHERE id = $1 AND status IN ({})",
                list.join(", ")
            ),
            args,
        )
        .await?;
    Ok(changed == 1)
}

// ---- invoices ----

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct InvoiceRow {
    pub id: i64,
    pub number: Option<String>,
    #[sqlx(try_from = "String")]
    pub organization_id: OrganizationId,
    pub order_id: Option<i64>,
    #[sqlx(try_from = "String")]
    pub kind: InvoiceKind,
    #[sqlx(try_from = "String")]
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    pub credit_applied_minor: i64,
    pub paid_minor: i64,
    /// What the payment page's token is derived from (with a key the store never sees:
    /// `lodge_services::crypto::PaymentTokens`); not a secret. The token itself is not
    /// stored, only its digest (`payment_token_digest`, not read into the row).
    pub payment_token_salt: String,
    pub due_date: String,
    pub issued_at: i64,
    pub paid_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub created_at: i64,
    pub modified_at: i64,
    /// Refunded so far, to credit and in cash (`crate::refunds`).
    pub refunded_minor: i64,
}

impl InvoiceRow {
    /// Reads a row fetched with [`INVOICE_COLUMNS`].
    fn from_vals(row: Vec<Val>) -> Result<Self> {
        let mut c = crate::Cols::new(row);
        Ok(InvoiceRow {
            id: c.int()?,
            number: c.opt_text()?,
            organization_id: c.parse()?,
            order_id: c.opt_int()?,
            kind: c.parse()?,
            status: c.parse()?,
            currency: c.text()?,
            subtotal_minor: c.int()?,
            tax_minor: c.int()?,
            total_minor: c.int()?,
            credit_applied_minor: c.int()?,
            paid_minor: c.int()?,
            payment_token_salt: c.text()?,
            due_date: c.text()?,
            issued_at: c.int()?,
            paid_at: c.opt_int()?,
            cancelled_at: c.opt_int()?,
            created_at: c.int()?,
            modified_at: c.int()?,
            refunded_minor: c.int()?,
        })
    }

    /// What is still to pay.
    pub fn amount_due(&self) -> i64 {
        self.total_minor - self.credit_applied_minor - self.paid_minor
    }
}

pub(crate) const INVOICE_COLUMNS: &str = "id, number, organization_id, order_id, kind, status, currency, subtotal_minor, tax_minor, total_minor, credit_applied_minor, paid_minor, payment_token_salt, due_date, issued_at, paid_at, cancelled_at, created_at, modified_at, refunded_minor";

pub struct NewInvoice<'a> {
    /// `None`: numbered later in the transaction ([`number_invoice`]).
    pub number: Option<&'a str>,
    pub organization_id: OrganizationId,
    pub order_id: Option<i64>,
    pub kind: InvoiceKind,
    pub currency: &'a str,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    /// The payment token's salt and digest (the token itself is never stored).
    pub payment_token: PaymentTokenKey<'a>,
    pub due_date: &'a str,
    /// Account credit applied as it is issued (its ledger entry is the caller's).
    pub credit_applied_minor: i64,
    /// Issued already paid (credit covered it).
    pub paid: bool,
    pub now: i64,
}

const INSERT_INVOICE: &str =
    "INSERT INTO invoices (number, organization_id, order_id, kind, status, currency, subtotal_minor, tax_minor,
         total_minor, credit_applied_minor, payment_token_salt, payment_token_digest, due_date, issued_at, paid_at,
         created_at, modified_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $14, $14)";

/// [`INSERT_INVOICE`] with its id given (reserved, [`reserve_order_keys`]).
pub(crate) static INSERT_INVOICE_KEYED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::deferred::with_key_column(INSERT_INVOICE, "id"));

fn invoice_args(i: &NewInvoice<'_>) -> Vec<Val> {
    vals![
        i.number,
        i.organization_id.to_string(),
        i.order_id,
        i.kind.as_str(),
        if i.paid {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Unpaid
        }
        .as_str(),
        i.currency,
        i.subtotal_minor,
        i.tax_minor,
        i.subtotal_minor + i.tax_minor,
        i.credit_applied_minor,
        i.payment_token.salt,
        i.payment_token.digest,
        i.due_date,
        i.now,
        i.paid.then_some(i.now),
    ]
}

/// Issues an invoice (`unpaid`, or `paid` when credit covered it); returns its id.
pub async fn insert_invoice<C: SqlConn>(conn: &mut C, i: &NewInvoice<'_>) -> Result<i64> {
    conn.insert_key(INSERT_INVOICE, "id", invoice_args(i)).await
}

/// [`insert_invoice`], or with the id reserved for it ([`reserve_order_keys`]) as a row
/// written later ([`insert_keyed`]). Returns its id.
pub async fn insert_invoice_keyed<C: SqlConn>(
    conn: &mut C,
    i: &NewInvoice<'_>,
    reserved: Option<i64>,
) -> Result<i64> {
    let sql = (INSERT_INVOICE, INSERT_INVOICE_KEYED.as_str());
    insert_keyed(conn, sql, "id", invoice_args(i), reserved).await
}

/// The invoice whose payment token has this digest: a token it was issued with, or one
/// from before tokens were stored as digests (`legacy_token_digest`, migration 0023).
pub async fn invoice_by_token_digest<'e, E: Executor<'e, Database = Any>>(
    db: E,
    digest: &str,
) -> Result<Option<InvoiceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE payment_token_digest = $1 OR legacy_token_digest = $1"
    ))
    .bind(digest)
    .fetch_optional(db)
    .await?)
}

/// An invoice's payment token as stored: what it is derived from and its digest.
#[derive(Debug, Clone, Copy)]
pub struct PaymentTokenKey<'a> {
    pub salt: &'a str,
    pub digest: &'a str,
}

/// Invoices still holding a plaintext payment token (written before migration 0023 and
/// not converted yet: no salt), by id: `(id, token)`. At most `limit`.
pub async fn plaintext_payment_tokens<C: SqlConn>(
    conn: &mut C,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    let rows = conn
        .fetch_rows(
            "SELECT id, payment_token_digest FROM invoices WHERE payment_token_salt = '' ORDER BY id LIMIT $1",
            vals![limit],
        )
        .await?;
    rows.into_iter()
        .map(|row| {
            let mut c = crate::Cols::new(row);
            Ok((c.int()?, c.text()?))
        })
        .collect()
}

/// Replaces an invoice's plaintext payment token with `key`, keeping the old token's
/// digest as `legacy_digest`; only while it is still unconverted. Whether it was.
pub async fn convert_payment_token<C: SqlConn>(
    conn: &mut C,
    id: i64,
    key: &PaymentTokenKey<'_>,
    legacy_digest: &str,
) -> Result<bool> {
    let n = conn
        .exec(
            "UPDATE invoices SET payment_token_salt = $2, payment_token_digest = $3, legacy_token_digest = $4
             WHERE id = $1 AND payment_token_salt = ''",
            vals![id, key.salt, key.digest, legacy_digest],
        )
        .await?;
    Ok(n > 0)
}

/// The invoice, locked for the rest of the transaction: a no-op update takes PostgreSQL's
/// row lock (and a deferred SQLite transaction's write lock); SQLite's batch writer holds
/// the database's write lock from `BEGIN`, and reads it.
pub async fn lock_invoice<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<InvoiceRow>> {
    let sql = dialect::lock_invoice(conn.dialect());
    conn.fetch_row(sql, vals![id])
        .await?
        .map(InvoiceRow::from_vals)
        .transpose()
}

/// Several invoices by id, locked ([`lock_invoice`] each) in one statement and in the order
/// of their ids; those that do not exist are missing. For a batch of payments, whose
/// organizations are locked first.
pub async fn lock_invoices<C: SqlConn>(conn: &mut C, ids: &[i64]) -> Result<Vec<InvoiceRow>> {
    let lock = if conn.dialect().locks_rows() {
        " ORDER BY id FOR NO KEY UPDATE"
    } else {
        ""
    };
    let sql = format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id IN ($IDS){lock}");
    let Some((sql, args)) = crate::conn::over_distinct_ids(&sql, ids.iter().copied()) else {
        return Ok(Vec::new());
    };
    conn.fetch_rows(&sql, args)
        .await?
        .into_iter()
        .map(InvoiceRow::from_vals)
        .collect()
}

/// An invoice.
pub async fn invoice<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<InvoiceRow>> {
    conn.fetch_row(
        &format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1"),
        vals![id],
    )
    .await?
    .map(InvoiceRow::from_vals)
    .transpose()
}

/// An invoice of `org` and that organization's credit balance, in one read (what a payment
/// from credit decides what it pays with); `None` when `org` has no such invoice.
pub async fn invoice_and_credit<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    id: i64,
) -> Result<Option<(InvoiceRow, i64)>> {
    let Some(mut row) = conn
        .fetch_row(
            &format!(
                "SELECT {INVOICE_COLUMNS}, \
                 (SELECT o.credit_balance_minor FROM organizations o WHERE o.id = $2) \
                 FROM invoices WHERE id = $1 AND organization_id = $2"
            ),
            vals![id, org.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    let credit = row
        .pop()
        .and_then(|v| v.int().transpose())
        .transpose()?
        .ok_or_else(|| StoreError::Corrupt(format!("invoice {id} without its organization")))?;
    Ok(Some((InvoiceRow::from_vals(row)?, credit)))
}

pub async fn invoices_page(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    order_id: Option<i64>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<InvoiceRow>, i64)> {
    let filter = "organization_id = $1 AND ($2 IS NULL OR order_id = $2)";
    let rows = sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE {filter} ORDER BY id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(org.to_string())
    .bind(order_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM invoices WHERE {filter}"))
        .bind(org.to_string())
        .bind(order_id)
        .fetch_one(db)
        .await?;
    Ok((rows, count))
}

/// An organization's unpaid invoices, oldest first (its cart: not its whole history).
pub async fn unpaid_invoices(db: &sqlx::AnyPool, org: OrganizationId) -> Result<Vec<InvoiceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE organization_id = $1 AND status = 'unpaid' \
         ORDER BY id"
    ))
    .bind(org.to_string())
    .fetch_all(db)
    .await?)
}

/// The invoices of the orders that created some hosting accounts (by order id).
pub async fn invoices_of_order<'e, E: Executor<'e, Database = Any>>(
    db: E,
    order_id: i64,
) -> Result<Vec<InvoiceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE order_id = $1 ORDER BY id"
    ))
    .bind(order_id)
    .fetch_all(db)
    .await?)
}

pub async fn add_credit_applied<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    amount: i64,
    now: i64,
) -> Result<()> {
    conn.exec(
        "UPDATE invoices SET credit_applied_minor = credit_applied_minor + $2, modified_at = $3 WHERE id = $1",
        vals![invoice, amount, now],
    )
    .await?;
    Ok(())
}

/// An unpaid invoice that `$2` more credit covers (`$2` may be 0) gets that credit and is
/// marked paid (at `$3`).
pub(crate) const PAY_IN_FULL: &str =
    "UPDATE invoices SET credit_applied_minor = credit_applied_minor + $2,
         status = 'paid', paid_at = $3, modified_at = $3
     WHERE id = $1 AND status = 'unpaid' AND credit_applied_minor + $2 + paid_minor >= total_minor";

/// Applies `amount` of credit to an unpaid invoice that it covers in full and marks it
/// paid, in one statement: the invoice as it is now, or `None` (and nothing written) when it
/// was not unpaid or `amount` does not cover what is due. Call with its organization's row
/// locked ([`lock_credit`]) and the ledger entry for `amount` in the same transaction.
pub async fn apply_credit_in_full<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    amount: i64,
    now: i64,
) -> Result<Option<InvoiceRow>> {
    let args = vals![invoice, amount, now];
    dialect::update_returning(conn, "invoices", PAY_IN_FULL, INVOICE_COLUMNS, args)
        .await?
        .map(InvoiceRow::from_vals)
        .transpose()
}

pub async fn add_paid(conn: &mut AnyConnection, invoice: i64, amount: i64, now: i64) -> Result<()> {
    sqlx::query("UPDATE invoices SET paid_minor = paid_minor + $2, modified_at = $3 WHERE id = $1")
        .bind(invoice)
        .bind(amount)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// `unpaid` → `paid` when nothing is left due; `false` if it was not unpaid or not covered
/// (so a payment activates the order exactly once).
pub async fn mark_paid<C: SqlConn>(conn: &mut C, invoice: i64, now: i64) -> Result<bool> {
    let changed = conn.exec(PAY_IN_FULL, vals![invoice, 0, now]).await?;
    Ok(changed == 1)
}

pub async fn cancel_invoice(conn: &mut AnyConnection, invoice: i64, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE invoices SET status = 'cancelled', cancelled_at = $2, modified_at = $2
         WHERE id = $1 AND status = 'unpaid'",
    )
    .bind(invoice)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, Clone, FromRow)]
pub struct LineRow {
    pub id: i64,
    pub invoice_id: i64,
    pub position: i64,
    pub kind: String,
    pub description: String,
    pub service_id: Option<String>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub amount_minor: i64,
    pub tax_rate_bp: i64,
    pub tax_minor: i64,
}

pub struct NewLine<'a> {
    pub position: i64,
    pub kind: &'a str,
    pub description: &'a str,
    pub service_id: Option<String>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub amount_minor: i64,
}

pub(crate) const INSERT_LINE: &str =
    "INSERT INTO invoice_lines (invoice_id, position, kind, description, service_id, period_start, period_end, amount_minor)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub async fn insert_line<C: SqlConn>(conn: &mut C, invoice: i64, l: &NewLine<'_>) -> Result<()> {
    conn.insert_later(
        INSERT_LINE,
        vals![
            invoice,
            l.position,
            l.kind,
            l.description,
            l.service_id.clone(),
            l.period_start.clone(),
            l.period_end.clone(),
            l.amount_minor,
        ],
    )
    .await
}

pub async fn lines<'e, E: Executor<'e, Database = Any>>(
    db: E,
    invoice: i64,
) -> Result<Vec<LineRow>> {
    Ok(sqlx::query_as(
        "SELECT id, invoice_id, position, kind, description, service_id, period_start, period_end, amount_minor, tax_rate_bp, tax_minor
         FROM invoice_lines WHERE invoice_id = $1 ORDER BY position, id",
    )
    .bind(invoice)
    .fetch_all(db)
    .await?)
}

/// Moves the first period of a service's plan line to start on the day it was paid. Not in
/// the transaction that inserts the line: on PostgreSQL an order batch writes its lines
/// after its last order ([`crate::deferred`]).
pub async fn set_line_period<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    service_id: &str,
    start: &str,
    end: &str,
) -> Result<()> {
    conn.exec(
        "UPDATE invoice_lines SET period_start = $3, period_end = $4
         WHERE invoice_id = $1 AND service_id = $2 AND kind = 'plan'",
        vals![invoice, service_id, start, end],
    )
    .await?;
    Ok(())
}

/// Gives invoices their gapless numbers, in the order given, with one step of the shared
/// counter: a group commit numbers all its orders' invoices at its end, so the counter row
/// (which every issuing transaction must lock) is locked once, just before the commit.
///
/// A higher number is never issued earlier: the invoices are issued at the later of `now()`
/// and the counter's stamp (the latest time a step of it was taken at), on PostgreSQL in the
/// statement that takes the step.
/// An invoice its batch paid (from credit) before numbering it is paid when it is issued.
pub async fn number_invoices<C: SqlConn>(
    conn: &mut C,
    invoices: &[i64],
    now: impl FnOnce() -> i64 + Send,
) -> Result<()> {
    let Ok(count) = i64::try_from(invoices.len()) else {
        return Err(StoreError::Config(
            "too many invoices to number at once".into(),
        ));
    };
    if count == 0 {
        return Ok(());
    }
    if conn.is_postgres() {
        // One statement from the counter's step to the numbers: from that step to the
        // commit every other batch waits for this one, so each round trip here is paid by
        // all of them. Issued at the later of this clock (read before the wait) and the
        // counter's stamp, the latest time a step was taken at.
        let ids: Vec<serde_json::Value> = invoices.iter().map(|id| (*id).into()).collect();
        let numbered = conn
            .exec(
                NUMBER_INVOICES_POSTGRES,
                vals![
                    "invoice_number",
                    count,
                    now(),
                    serde_json::Value::from(ids).to_string()
                ],
            )
            .await?;
        if numbered != count.unsigned_abs() {
            return Err(StoreError::Corrupt(format!(
                "numbered {numbered} of {count} invoices"
            )));
        }
        return Ok(());
    }
    let last = crate::next_counter_by(conn, "invoice_number", count).await?;
    // At the later of the clock and the counter's stamp, as on PostgreSQL: one machine's
    // clock stepped back (NTP, `date -s`) does not date a higher number earlier (found by
    // the fault audit).
    let now = now();
    let issued = conn
        .fetch_int(
            "UPDATE counters SET stamp = MAX(stamp, $2) WHERE name = $1 RETURNING stamp",
            vals!["invoice_number", now],
        )
        .await?
        .unwrap_or(now);
    for (n, id) in (last - count + 1..).zip(invoices) {
        conn.exec(
            "UPDATE invoices SET number = $2, issued_at = $3,
                 paid_at = CASE WHEN paid_at < $3 THEN $3 ELSE paid_at END
             WHERE id = $1",
            vals![*id, invoice_number(n), issued],
        )
        .await?;
    }
    Ok(())
}

/// The number of the `n`th invoice: `INV-000042` (six digits at least).
pub fn invoice_number(n: i64) -> String {
    format!("INV-{n:06}")
}

/// [`number_invoices`] on PostgreSQL: `$1` the counter, `$2` how many, `$3` the clock, `$4`
/// the invoices' ids as a JSON list, numbered in its order as [`invoice_number`] writes them.
/// The invoices are found by `id = ANY(ARRAY(…))`, an index scan over the list whatever the
/// planner thinks of the table's size: joined to the list's rows instead, a table whose
/// statistics lagged a burst of orders was read whole, under the counter's lock, and every
/// batch waited (a pay_credit run after the order scenarios fell to 81/s).
const NUMBER_INVOICES_POSTGRES: &str =
    "WITH c AS (UPDATE counters SET value = value + $2, stamp = GREATEST(stamp, $3)
                WHERE name = $1 RETURNING value - $2 AS before, stamp)
     UPDATE invoices AS i
     SET number = 'INV-' || lpad(
             (c.before + array_position(ARRAY(SELECT value::int8 FROM jsonb_array_elements_text($4::text::jsonb)), i.id))::text,
             GREATEST(6, length((c.before + array_position(ARRAY(SELECT value::int8 FROM jsonb_array_elements_text($4::text::jsonb)), i.id))::text)),
             '0'),
         issued_at = c.stamp,
         paid_at = CASE WHEN i.paid_at < c.stamp THEN c.stamp ELSE i.paid_at END
     FROM c
     WHERE i.id = ANY(ARRAY(SELECT value::int8 FROM jsonb_array_elements_text($4::text::jsonb)))";

/// Locks the rows of several organizations for the rest of the transaction, in one
/// statement and one order shared by every caller (PostgreSQL; SQLite has a single
/// writer). A group commit takes its organizations' locks this way before placing any
/// order, so two batches never hold one organization each while waiting for the other's.
pub async fn lock_organizations<C: SqlConn>(conn: &mut C, orgs: &[OrganizationId]) -> Result<()> {
    let ids: std::collections::BTreeSet<String> = orgs.iter().map(ToString::to_string).collect();
    lock_in_one_statement(conn, ids, dialect::lock_organizations).await
}

/// [`lock_organizations`] of the organizations the invoices belong to, in one statement
/// (PostgreSQL; SQLite has a single writer). Invoices that do not exist lock nothing.
pub async fn lock_organizations_of_invoices<C: SqlConn>(
    conn: &mut C,
    invoices: &[i64],
) -> Result<()> {
    let ids: std::collections::BTreeSet<i64> = invoices.iter().copied().collect();
    lock_in_one_statement(conn, ids, dialect::lock_organizations_of_invoices).await
}

/// Runs `sql` over the ids, where the dialect locks rows: the list padded to a power of two
/// (repeating its last id), so a few statement texts serve every batch size from sqlx's
/// per-connection statement cache.
async fn lock_in_one_statement<C: SqlConn, T: Into<Val>>(
    conn: &mut C,
    ids: std::collections::BTreeSet<T>,
    sql: fn(usize) -> String,
) -> Result<()> {
    if !conn.dialect().locks_rows() || ids.is_empty() {
        return Ok(());
    }
    let mut args: Vec<Val> = ids.into_iter().map(Into::into).collect();
    crate::conn::pad_to_power_of_two(&mut args);
    conn.exec(&sql(args.len()), args).await?;
    Ok(())
}

// ---- payments ----

#[derive(Debug, Clone, FromRow)]
pub struct PaymentRow {
    #[sqlx(try_from = "String")]
    pub id: PaymentId,
    pub invoice_id: i64,
    pub method: String,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub actor: String,
    pub created_at: i64,
}

const PAYMENT_COLUMNS: &str =
    "id, invoice_id, method, reference, amount_minor, currency, actor, created_at";

pub struct NewPayment<'a> {
    pub id: PaymentId,
    pub invoice_id: i64,
    pub organization_id: OrganizationId,
    pub method: &'a str,
    pub reference: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

/// Records a payment; `false` (and nothing written) if `(method, reference)` already exists.
pub async fn insert_payment(conn: &mut AnyConnection, p: &NewPayment<'_>) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO payments (id, invoice_id, organization_id, method, reference, amount_minor, currency, actor, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (method, reference) DO NOTHING",
    )
    .bind(p.id.to_string())
    .bind(p.invoice_id)
    .bind(p.organization_id.to_string())
    .bind(p.method)
    .bind(p.reference)
    .bind(p.amount_minor)
    .bind(p.currency)
    .bind(p.actor)
    .bind(p.now)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn payment_by_reference<'e, E: Executor<'e, Database = Any>>(
    db: E,
    method: &str,
    reference: &str,
) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE method = $1 AND reference = $2"
    ))
    .bind(method)
    .bind(reference)
    .fetch_optional(db)
    .await?)
}

pub async fn payments<'e, E: Executor<'e, Database = Any>>(
    db: E,
    invoice: i64,
) -> Result<Vec<PaymentRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE invoice_id = $1 ORDER BY created_at, id"
    ))
    .bind(invoice)
    .fetch_all(db)
    .await?)
}

// ---- account credit ----

#[derive(Debug, Clone, FromRow)]
pub struct LedgerRow {
    pub id: i64,
    pub kind: String,
    pub amount_minor: i64,
    pub balance_after_minor: i64,
    pub currency: String,
    pub invoice_id: Option<i64>,
    pub note: String,
    pub actor: String,
    pub created_at: i64,
}

/// Locks the organization's row for the rest of the transaction and returns its credit
/// balance. On PostgreSQL `FOR NO KEY UPDATE`: the lock an update of the balance takes,
/// which does not hold up foreign-key checks of rows inserted meanwhile. On SQLite a no-op
/// update takes the database's write lock at once (a deferred transaction would otherwise
/// read a balance another writer could change before it writes), except on the batch
/// writer, which holds that lock from `BEGIN`.
pub async fn lock_credit<C: SqlConn>(conn: &mut C, org: OrganizationId) -> Result<Option<i64>> {
    let sql = dialect::lock_credit(conn.dialect());
    conn.fetch_int(sql, vals![org.to_string()]).await
}

/// Whether the organization's ledger has an entry for the invoice with exactly this note
/// (an entry recorded once per outside reference written into its note).
pub async fn ledger_has_note<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    invoice: i64,
    note: &str,
) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM credit_ledger
             WHERE organization_id = $1 AND invoice_id = $2 AND note = $3",
            vals![org.to_string(), invoice, note],
        )
        .await?
        .unwrap_or(0)
        > 0)
}

/// The sum of the organization's ledger entries on `invoice` with exactly `note` (0 when
/// there is none).
pub async fn ledger_sum_with_note<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    invoice: i64,
    note: &str,
) -> Result<i64> {
    Ok(conn
        .fetch_int(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM credit_ledger
             WHERE organization_id = $1 AND invoice_id = $2 AND note = $3",
            vals![org.to_string(), invoice, note],
        )
        .await?
        .unwrap_or(0))
}

pub struct NewLedgerEntry<'a> {
    pub organization_id: OrganizationId,
    pub kind: &'a str,
    /// Signed: deposits positive, applications negative.
    pub amount_minor: i64,
    pub currency: &'a str,
    pub invoice_id: Option<i64>,
    pub note: &'a str,
    pub actor: &'a str,
    pub now: i64,
}

pub(crate) const INSERT_LEDGER: &str =
    "INSERT INTO credit_ledger (organization_id, kind, amount_minor, balance_after_minor, currency, invoice_id, note, actor, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Appends a ledger entry and moves the balance with it; the balance's CHECK refuses any
/// entry that would make it negative. Call with the row locked (`lock_credit`).
pub async fn append_ledger<C: SqlConn>(conn: &mut C, e: &NewLedgerEntry<'_>) -> Result<i64> {
    let org = e.organization_id.to_string();
    let balance = dialect::add_to_balance(conn, &org, e.amount_minor, e.now)
        .await?
        .ok_or(StoreError::NotFound)?;
    conn.insert_later(
        INSERT_LEDGER,
        vals![
            org,
            e.kind,
            e.amount_minor,
            balance,
            e.currency,
            e.invoice_id,
            e.note,
            e.actor,
            e.now,
        ],
    )
    .await?;
    Ok(balance)
}

/// [`append_ledger`] where the caller moves the balance itself, later and once for several
/// entries ([`PendingMoves`]): the entry with the balance it leaves, `balance_after`,
/// written with the rows nothing reads before the commit ([`SqlConn::insert_later`]).
async fn append_ledger_at<C: SqlConn>(
    conn: &mut C,
    e: &NewLedgerEntry<'_>,
    balance_after: i64,
) -> Result<()> {
    conn.insert_later(
        INSERT_LEDGER,
        vals![
            e.organization_id.to_string(),
            e.kind,
            e.amount_minor,
            balance_after,
            e.currency,
            e.invoice_id,
            e.note,
            e.actor,
            e.now,
        ],
    )
    .await
}

/// Ledger entries a batch wrote ([`append_ledger_at`], each with the balance it leaves, the
/// batch following its organizations' balances in memory) whose balances have not moved
/// yet: [`PendingMoves::write`] moves them, once per organization, after the batch's last
/// unit.
#[derive(Debug, Default)]
pub struct PendingMoves {
    /// Per organization, the sum of its entries' amounts.
    moves: std::collections::HashMap<OrganizationId, i64>,
    /// The latest entry's time.
    now: i64,
}

impl PendingMoves {
    /// Writes the entry (leaving `balance_after`), its balance to move later.
    pub async fn append<C: SqlConn>(
        &mut self,
        conn: &mut C,
        e: &NewLedgerEntry<'_>,
        balance_after: i64,
    ) -> Result<()> {
        append_ledger_at(conn, e, balance_after).await?;
        *self.moves.entry(e.organization_id).or_insert(0) += e.amount_minor;
        self.now = self.now.max(e.now);
        Ok(())
    }

    /// Moves one organization's balance now by its entries so far: what is read or
    /// written of it next in the transaction (a ledger entry's `balance_after`) starts
    /// from the balance the batch followed in memory.
    pub async fn flush<C: SqlConn>(&mut self, conn: &mut C, org: OrganizationId) -> Result<()> {
        if let Some(amount) = self.moves.remove(&org).filter(|a| *a != 0) {
            dialect::add_to_balance(conn, &org.to_string(), amount, self.now)
                .await?
                .ok_or(StoreError::NotFound)?;
        }
        Ok(())
    }

    /// Moves the balances by the entries' amounts ([`add_to_balances`]).
    pub async fn write<C: SqlConn>(self, conn: &mut C) -> Result<()> {
        let moves: Vec<(OrganizationId, i64)> = self.moves.into_iter().collect();
        add_to_balances(conn, &moves, self.now).await
    }
}

/// An order and its accounts, with what activating them on payment needs
/// ([`orders_to_activate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderToActivate {
    pub id: i64,
    pub status: OrderStatus,
    /// In the order they were created.
    pub accounts: Vec<AccountToActivate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountToActivate {
    pub id: lodge_core::HostingId,
    pub status: lodge_core::HostingStatus,
    pub first_period_months: Option<i64>,
    pub domain_id: Option<lodge_core::DomainId>,
    /// The status of that domain object if the order brought it.
    pub domain_status: Option<lodge_core::DomainStatus>,
}

/// Orders with their accounts (and the domain objects they brought) in one statement, by
/// id; those that do not exist are missing.
pub async fn orders_to_activate<C: SqlConn>(
    conn: &mut C,
    orders: &[i64],
) -> Result<Vec<OrderToActivate>> {
    let sql =
        "SELECT o.id, o.status, h.id, h.status, h.first_period_months, h.domain_id, d.status \
         FROM orders o LEFT JOIN hosting h ON h.order_id = o.id \
         LEFT JOIN domains d ON d.id = h.domain_id AND d.order_id = o.id \
         WHERE o.id IN ($IDS) ORDER BY o.id, h.legacy_id";
    let Some((sql, args)) = crate::conn::over_distinct_ids(sql, orders.iter().copied()) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<OrderToActivate> = Vec::new();
    for row in conn.fetch_rows(&sql, args).await? {
        let mut c = Cols::new(row);
        let id = c.int()?;
        let status = c.parse()?;
        let account: Option<String> = c.opt_text()?;
        if out.last().is_none_or(|o| o.id != id) {
            out.push(OrderToActivate {
                id,
                status,
                accounts: Vec::new(),
            });
        }
        let (Some(account), Some(order)) = (account, out.last_mut()) else {
            continue; // an order without accounts
        };
        order.accounts.push(AccountToActivate {
            id: crate::parse(&account)?,
            status: c.parse()?,
            first_period_months: c.opt_int()?,
            domain_id: c.opt_text()?.map(|d| crate::parse(&d)).transpose()?,
            domain_status: c.opt_text()?.map(|d| crate::parse(&d)).transpose()?,
        });
    }
    Ok(out)
}

/// An account's move: `(account, from, to, (anchor, next due date))`.
type AccountMove = (
    lodge_core::HostingId,
    lodge_core::HostingStatus,
    lodge_core::HostingStatus,
    Option<(String, String)>,
);

/// First invoices, orders and accounts a batch of payments moved in memory (from the
/// statuses it read), written after its last payment, each kind in one statement on
/// PostgreSQL; each move only from the status it was decided from. If one no longer is,
/// [`Self::write`] fails and the batch must run again a payment at a time.
#[derive(Debug, Default)]
pub struct PendingActivations {
    /// `(order, from, to)`.
    orders: Vec<(i64, OrderStatus, OrderStatus)>,
    /// `(account, from, to, (anchor, next due date))`.
    accounts: Vec<AccountMove>,
    /// `(invoice, account, start, end)`: the plan line's first period.
    lines: Vec<(i64, lodge_core::HostingId, String, String)>,
    /// `(invoice, credit applied)`: first invoices paid in full from credit ([`PAY_IN_FULL`]).
    paid: Vec<(i64, i64)>,
    now: i64,
}

impl PendingActivations {
    pub fn order(&mut self, id: i64, from: OrderStatus, to: OrderStatus, now: i64) {
        self.orders.push((id, from, to));
        self.now = self.now.max(now);
    }

    pub fn account(
        &mut self,
        id: lodge_core::HostingId,
        (from, to): (lodge_core::HostingStatus, lodge_core::HostingStatus),
        period: Option<(String, String)>,
        now: i64,
    ) {
        self.accounts.push((id, from, to, period));
        self.now = self.now.max(now);
    }

    pub fn line_period(
        &mut self,
        invoice: i64,
        account: lodge_core::HostingId,
        start: &str,
        end: &str,
    ) {
        self.lines
            .push((invoice, account, start.to_owned(), end.to_owned()));
    }

    /// An unpaid invoice the batch read, locked, pays in full with `credit` of account
    /// credit: what [`apply_credit_in_full`] does, written with the batch's other moves, and
    /// the invoice as that leaves it.
    pub fn pay_in_full(&mut self, invoice: &InvoiceRow, credit: i64, now: i64) -> InvoiceRow {
        self.paid.push((invoice.id, credit));
        self.now = self.now.max(now);
        InvoiceRow {
            credit_applied_minor: invoice.credit_applied_minor + credit,
            status: InvoiceStatus::Paid,
            paid_at: Some(now),
            modified_at: now,
            ..invoice.clone()
        }
    }

    /// Writes the moves: every one, or an error.
    pub async fn write<C: SqlConn>(self, conn: &mut C) -> Result<()> {
        if !conn.is_postgres() {
            return self.write_one_by_one(conn).await;
        }
        let json = |rows: Vec<serde_json::Value>| serde_json::Value::from(rows).to_string();
        if !self.paid.is_empty() {
            let rows: Vec<serde_json::Value> = self
                .paid
                .iter()
                .map(|(id, credit)| serde_json::json!([id, credit]))
                .collect();
            let n = conn
                .exec(PAY_IN_FULL_POSTGRES, vals![self.now, json(rows)])
                .await?;
            moved_all(n, self.paid.len(), "invoices")?;
        }
        let orders = self
            .orders
            .iter()
            .map(|(id, from, to)| serde_json::json!([id, from.as_str(), to.as_str()]));
        let accounts = self.accounts.iter().map(|(id, from, to, period)| {
            let (anchor, due) = period.clone().unzip();
            serde_json::json!([id.to_string(), from.as_str(), to.as_str(), anchor, due])
        });
        for (sql, rows, what) in [
            (
                ACTIVATE_ORDERS_POSTGRES,
                orders.collect::<Vec<_>>(),
                "orders",
            ),
            (ACTIVATE_ACCOUNTS_POSTGRES, accounts.collect(), "accounts"),
        ] {
            if !rows.is_empty() {
                let len = rows.len();
                let n = conn.exec(sql, vals![self.now, json(rows)]).await?;
                moved_all(n, len, what)?;
            }
        }
        if !self.lines.is_empty() {
            let rows = self
                .lines
                .iter()
                .map(|(invoice, id, start, end)| {
                    serde_json::json!([invoice, id.to_string(), start, end])
                })
                .collect();
            conn.exec(SET_LINE_PERIODS_POSTGRES, vals![json(rows)])
                .await?;
        }
        Ok(())
    }

    /// [`Self::write`] a statement a row (SQLite, where a statement is no round trip).
    async fn write_one_by_one<C: SqlConn>(self, conn: &mut C) -> Result<()> {
        for (id, credit) in &self.paid {
            let n = conn
                .exec(PAY_IN_FULL, vals![*id, *credit, self.now])
                .await?;
            moved_all(n, 1, "an invoice")?;
        }
        for (id, from, to) in &self.orders {
            let n = conn
                .exec(
                    "UPDATE orders SET status = $2, modified_at = $3 WHERE id = $1 AND status = $4",
                    vals![*id, to.as_str(), self.now, from.as_str()],
                )
                .await?;
            moved_all(n, 1, "an order")?;
        }
        for (id, from, to, period) in &self.accounts {
            let (anchor, due) = period.clone().unzip();
            let n = conn
                .exec(
                    "UPDATE hosting SET status = $2, modified_at = $3, \
                     period_anchor = COALESCE($4, period_anchor), \
                     next_due_date = COALESCE($5, next_due_date) WHERE id = $1 AND status = $6",
                    vals![
                        id.to_string(),
                        to.as_str(),
                        self.now,
                        anchor,
                        due,
                        from.as_str()
                    ],
                )
                .await?;
            moved_all(n, 1, "an account")?;
        }
        for (invoice, id, start, end) in &self.lines {
            set_line_period(conn, *invoice, &id.to_string(), start, end).await?;
        }
        Ok(())
    }
}

/// Whether `n` rows moved of the `len` a batch decided to move.
fn moved_all(n: u64, len: usize, what: &str) -> Result<()> {
    if u64::try_from(len).ok() == Some(n) {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "{what} moved meanwhile: {n} of {len} as the batch read them"
        )))
    }
}

/// [`PendingActivations::write`]'s orders: `$1` the clock, `$2` `[[id, from, to], …]`; the
/// rows found by `id = ANY(ARRAY(…))`, an index scan whatever the statistics say.
const ACTIVATE_ORDERS_POSTGRES: &str = "UPDATE orders AS o SET status = r.v->>2, modified_at = $1 \
     FROM jsonb_array_elements($2::text::jsonb) AS r(v) \
     WHERE o.id = ANY(ARRAY(SELECT (x.v->>0)::int8 FROM jsonb_array_elements($2::text::jsonb) AS x(v))) \
       AND o.id = (r.v->>0)::int8 AND o.status = r.v->>1";

/// [`PendingActivations::write`]'s accounts: `$2` `[[id, from, to, anchor, due], …]` (the
/// period's two `null` when there is none: the account keeps its own).
const ACTIVATE_ACCOUNTS_POSTGRES: &str =
    "UPDATE hosting AS h SET status = r.v->>2, modified_at = $1, \
         period_anchor = COALESCE(r.v->>3, h.period_anchor), \
         next_due_date = COALESCE(r.v->>4, h.next_due_date) \
     FROM jsonb_array_elements($2::text::jsonb) AS r(v) \
     WHERE h.id = ANY(ARRAY(SELECT x.v->>0 FROM jsonb_array_elements($2::text::jsonb) AS x(v))) \
       AND h.id = r.v->>0 AND h.status = r.v->>1";

/// [`PendingActivations::write`]'s invoices: `$1` the clock, `$2` `[[id, credit], …]`;
/// [`PAY_IN_FULL`] for each (only from unpaid, only when covered), the rows found by
/// `id = ANY(ARRAY(…))` as the orders' are (and, as PAY_IN_FULL, not through
/// `invoices_unpaid`, whose `kind IS NOT NULL` this does not imply).
pub(crate) const PAY_IN_FULL_POSTGRES: &str = "UPDATE invoices AS i \
     SET credit_applied_minor = i.credit_applied_minor + (r.v->>1)::int8, \
         status = 'paid', paid_at = $1, modified_at = $1 \
     FROM jsonb_array_elements($2::text::jsonb) AS r(v) \
     WHERE i.id = ANY(ARRAY(SELECT (x.v->>0)::int8 FROM jsonb_array_elements($2::text::jsonb) AS x(v))) \
       AND i.id = (r.v->>0)::int8 AND i.status = 'unpaid' \
       AND i.credit_applied_minor + (r.v->>1)::int8 + i.paid_minor >= i.total_minor";

/// [`PendingActivations::write`]'s plan lines: `$1` `[[invoice, account, start, end], …]`.
const SET_LINE_PERIODS_POSTGRES: &str = "UPDATE invoice_lines AS l \
     SET period_start = r.v->>2, period_end = r.v->>3 \
     FROM jsonb_array_elements($1::text::jsonb) AS r(v) \
     WHERE l.invoice_id = ANY(ARRAY(SELECT (x.v->>0)::int8 FROM jsonb_array_elements($1::text::jsonb) AS x(v))) \
       AND l.invoice_id = (r.v->>0)::int8 AND l.service_id = r.v->>1 AND l.kind = 'plan'";

/// Moves several organizations' balances by the amounts given (the entries
/// [`append_ledger_at`] wrote), in one statement on PostgreSQL. The balance's CHECK refuses
/// a move that would make one negative. Call with their rows locked.
pub async fn add_to_balances<C: SqlConn>(
    conn: &mut C,
    moves: &[(OrganizationId, i64)],
    now: i64,
) -> Result<()> {
    let moves: Vec<_> = moves.iter().filter(|(_, amount)| *amount != 0).collect();
    if moves.len() > 1 && conn.is_postgres() {
        let rows: Vec<serde_json::Value> = moves
            .iter()
            .map(|(org, amount)| serde_json::json!([org.to_string(), amount]))
            .collect();
        let moved = conn
            .exec(
                ADD_TO_BALANCES_POSTGRES,
                vals![now, serde_json::Value::from(rows).to_string()],
            )
            .await?;
        if u64::try_from(moves.len()).ok() != Some(moved) {
            return Err(StoreError::NotFound);
        }
        return Ok(());
    }
    for (org, amount) in moves {
        dialect::add_to_balance(conn, &org.to_string(), *amount, now)
            .await?
            .ok_or(StoreError::NotFound)?;
    }
    Ok(())
}

/// [`add_to_balances`] on PostgreSQL: the moves as a JSON list of `[organization, amount]`,
/// the organizations found by `id = ANY(ARRAY(…))` (an index scan, [`number_invoices`]).
const ADD_TO_BALANCES_POSTGRES: &str =
    "UPDATE organizations AS o
     SET credit_balance_minor = o.credit_balance_minor
           + (SELECT sum((r.v->>1)::int8) FROM jsonb_array_elements($2::text::jsonb) AS r(v) WHERE r.v->>0 = o.id),
         modified_at = $1
     WHERE o.id = ANY(ARRAY(SELECT r.v->>0 FROM jsonb_array_elements($2::text::jsonb) AS r(v)))";

pub async fn ledger_page(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<LedgerRow>, i64)> {
    let rows = sqlx::query_as(
        "SELECT id, kind, amount_minor, balance_after_minor, currency, invoice_id, note, actor, created_at
         FROM credit_ledger WHERE organization_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
    )
    .bind(org.to_string())
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM credit_ledger WHERE organization_id = $1")
        .bind(org.to_string())
        .fetch_one(db)
        .await?;
    Ok((rows, count))
}

/// The ledger entries of one invoice of `org`, oldest first: the credit applied to it
/// (negative `applied` entries), what went back to credit from it (`refund`: a refund to
/// credit, a cancellation's return) and what a payment brought beyond it (`deposit`). `org`
/// lets the organization's index find them.
pub async fn ledger_of_invoice<'e, E: Executor<'e, Database = Any>>(
    db: E,
    org: OrganizationId,
    invoice: i64,
) -> Result<Vec<LedgerRow>> {
    Ok(sqlx::query_as(
        "SELECT id, kind, amount_minor, balance_after_minor, currency, invoice_id, note, actor, created_at
         FROM credit_ledger WHERE organization_id = $1 AND invoice_id = $2 ORDER BY id",
    )
    .bind(org.to_string())
    .bind(invoice)
    .fetch_all(db)
    .await?)
}

/// Read through the partial index `invoices_unpaid`, which holds only unpaid invoices.
pub(crate) const EXPIRED_FIRST_INVOICES: &str =
    "SELECT order_id FROM invoices WHERE kind = 'first' AND status = 'unpaid'
     AND issued_at < $1 AND order_id IS NOT NULL ORDER BY id";

/// Orders whose first invoice is still unpaid and was issued before `issued_before`.
pub async fn expired_first_invoices<'e, E: Executor<'e, Database = Any>>(
    db: E,
    issued_before: i64,
) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(EXPIRED_FIRST_INVOICES)
        .bind(issued_before)
        .fetch_all(db)
        .await?)
}

/// The currency of the newest invoice and of the newest credit ledger entry (each by its
/// primary key: two index reads), what the installation has been selling in.
pub async fn currencies_in_use<C: SqlConn>(conn: &mut C) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT currency FROM invoices ORDER BY id DESC LIMIT 1",
        "SELECT currency FROM credit_ledger ORDER BY id DESC LIMIT 1",
    ] {
        if let Some(c) = conn.fetch_text(sql, vals![]).await? {
            out.push(c);
        }
    }
    Ok(out)
}
