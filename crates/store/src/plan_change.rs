//! Plan changes of hosting accounts: their rows, and the few statements on accounts and
//! invoice lines a change needs. Generic over [`SqlConn`]: an upgrade's invoice may be paid
//! on SQLite's batch writer ([`crate::BatchConn`]), whose settlement applies the change.

use lodge_core::{HostingId, HostingStatus, OrganizationId, PlanId};

use crate::{vals, Cols, Result, SqlConn, Val};

/// A change waits for its invoice to be paid.
pub const AWAITING_PAYMENT: &str = "awaiting_payment";
/// A change took effect: the account is on the new plan.
pub const APPLIED: &str = "applied";
/// A change that will not take effect (its account ended before its invoice was paid).
pub const CANCELLED: &str = "cancelled";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChangeRow {
    pub id: i64,
    pub hosting_id: HostingId,
    pub organization_id: OrganizationId,
    pub from_plan_id: PlanId,
    pub to_plan_id: PlanId,
    /// `"Starter → Business"`.
    pub summary: String,
    pub old_price_minor: i64,
    pub new_price_minor: i64,
    pub period_start: String,
    pub period_end: String,
    pub days_left: i64,
    pub days_in_period: i64,
    pub charge_minor: i64,
    pub invoice_id: Option<i64>,
    /// [`AWAITING_PAYMENT`], [`APPLIED`] or [`CANCELLED`].
    pub status: String,
    pub actor: String,
    pub created_at: i64,
    pub applied_at: Option<i64>,
    pub package_changed_at: Option<i64>,
}

const COLUMNS: &str =
    "id, hosting_id, organization_id, from_plan_id, to_plan_id, summary, old_price_minor,
    new_price_minor, period_start, period_end, days_left, days_in_period, charge_minor, invoice_id,
    status, actor, created_at, applied_at, package_changed_at";

impl PlanChangeRow {
    fn from_vals(row: Vec<Val>) -> Result<Self> {
        let mut c = Cols::new(row);
        Ok(PlanChangeRow {
            id: c.int()?,
            hosting_id: c.parse()?,
            organization_id: c.parse()?,
            from_plan_id: c.parse()?,
            to_plan_id: c.parse()?,
            summary: c.text()?,
            old_price_minor: c.int()?,
            new_price_minor: c.int()?,
            period_start: c.text()?,
            period_end: c.text()?,
            days_left: c.int()?,
            days_in_period: c.int()?,
            charge_minor: c.int()?,
            invoice_id: c.opt_int()?,
            status: c.text()?,
            actor: c.text()?,
            created_at: c.int()?,
            applied_at: c.opt_int()?,
            package_changed_at: c.opt_int()?,
        })
    }
}

pub struct NewPlanChange<'a> {
    pub hosting_id: HostingId,
    pub organization_id: OrganizationId,
    pub from_plan_id: PlanId,
    pub to_plan_id: PlanId,
    pub summary: &'a str,
    pub old_price_minor: i64,
    pub new_price_minor: i64,
    pub period_start: &'a str,
    pub period_end: &'a str,
    pub days_left: i64,
    pub days_in_period: i64,
    pub charge_minor: i64,
    pub invoice_id: Option<i64>,
    /// Applied at once (`now`), or waiting for the invoice.
    pub applied: bool,
    pub actor: &'a str,
    pub now: i64,
}

/// Records a change; returns its id.
pub async fn insert_change<C: SqlConn>(conn: &mut C, c: &NewPlanChange<'_>) -> Result<i64> {
    conn.insert_key(
        "INSERT INTO plan_changes (hosting_id, organization_id, from_plan_id, to_plan_id, summary, old_price_minor,
             new_price_minor, period_start, period_end, days_left, days_in_period, charge_minor, invoice_id,
             status, actor, created_at, applied_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        "id",
        vals![
            c.hosting_id.to_string(),
            c.organization_id.to_string(),
            c.from_plan_id.to_string(),
            c.to_plan_id.to_string(),
            c.summary,
            c.old_price_minor,
            c.new_price_minor,
            c.period_start,
            c.period_end,
            c.days_left,
            c.days_in_period,
            c.charge_minor,
            c.invoice_id,
            if c.applied { APPLIED } else { AWAITING_PAYMENT },
            c.actor,
            c.now,
            c.applied.then_some(c.now),
        ],
    )
    .await
}

/// A change by id.
pub async fn change<C: SqlConn>(conn: &mut C, id: i64) -> Result<Option<PlanChangeRow>> {
    conn.fetch_row(
        &format!("SELECT {COLUMNS} FROM plan_changes WHERE id = $1"),
        vals![id],
    )
    .await?
    .map(PlanChangeRow::from_vals)
    .transpose()
}

/// The change an invoice pays for, if it pays for one.
pub async fn change_of_invoice<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
) -> Result<Option<PlanChangeRow>> {
    conn.fetch_row(
        &format!("SELECT {COLUMNS} FROM plan_changes WHERE invoice_id = $1"),
        vals![invoice],
    )
    .await?
    .map(PlanChangeRow::from_vals)
    .transpose()
}

/// The service periods an invoice bills: its `plan` lines and positive `adjustment` lines
/// (`(service, kind, period start, period end, amount)`), in line order.
pub async fn invoice_periods<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
) -> Result<Vec<(HostingId, String, String, String, i64)>> {
    conn.fetch_rows(
        "SELECT service_id, kind, period_start, period_end, amount_minor FROM invoice_lines \
         WHERE invoice_id = $1 AND service_id IS NOT NULL AND period_start IS NOT NULL \
           AND period_end IS NOT NULL \
           AND (kind = 'plan' OR (kind = 'adjustment' AND amount_minor > 0)) \
         ORDER BY position",
        vals![invoice],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.parse()?, c.text()?, c.text()?, c.text()?, c.int()?))
    })
    .collect()
}

/// The paid differences for the service's period from `start` (a plan change's, for a
/// period paid at the old price: [`crate::renewals::DIFFERENCE`]), oldest first:
/// `(invoice, amount)`.
pub async fn differences_in_period<C: SqlConn>(
    conn: &mut C,
    service: HostingId,
    start: &str,
) -> Result<Vec<(i64, i64)>> {
    conn.fetch_rows(
        &format!(
            "SELECT i.id, l.amount_minor FROM invoice_lines l \
             JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.service_id = $1 AND l.period_start = $2 AND l.kind = 'adjustment' \
               AND l.amount_minor > 0 AND i.status IN ('paid', 'partially_refunded', 'refunded') \
               AND {} ORDER BY i.id",
            crate::renewals::DIFFERENCE
        ),
        vals![service.to_string(), start],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.int()?, c.int()?))
    })
    .collect()
}

/// A plan change applied in a period, as [`applied_in_period`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedChange {
    pub id: i64,
    pub invoice_id: Option<i64>,
    pub charge_minor: i64,
    /// Its invoice's total and what was refunded of it (0 and 0 without an invoice).
    pub invoice_total_minor: i64,
    pub invoice_refunded_minor: i64,
}

/// The plan changes applied to the service in its period `[start, end)`, in the order they
/// were made.
pub async fn applied_in_period<C: SqlConn>(
    conn: &mut C,
    service: HostingId,
    start: &str,
    end: &str,
) -> Result<Vec<AppliedChange>> {
    conn.fetch_rows(
        "SELECT c.id, c.invoice_id, c.charge_minor, COALESCE(i.total_minor, 0), \
                COALESCE(i.refunded_minor, 0) \
         FROM plan_changes c LEFT JOIN invoices i ON i.id = c.invoice_id \
         WHERE c.hosting_id = $1 AND c.period_start = $2 AND c.period_end = $3 \
           AND c.status = 'applied' \
         ORDER BY c.id",
        vals![service.to_string(), start, end],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok(AppliedChange {
            id: c.int()?,
            invoice_id: c.opt_int()?,
            charge_minor: c.int()?,
            invoice_total_minor: c.int()?,
            invoice_refunded_minor: c.int()?,
        })
    })
    .collect()
}

/// The number (or id) of an unpaid invoice charging the account a plan change's
/// difference for a period it had paid at the old price
/// ([`crate::renewals::unpaid_differences_of`]), if any.
pub async fn unpaid_difference<C: SqlConn>(
    conn: &mut C,
    hosting: HostingId,
) -> Result<Option<String>> {
    conn.fetch_text(
        &format!(
            "SELECT COALESCE(i.number, CAST(i.id AS TEXT)) FROM invoices i \
             JOIN invoice_lines l ON l.invoice_id = i.id \
             WHERE l.service_id = $1 AND l.kind = 'adjustment' AND l.amount_minor > 0 \
               AND i.status = 'unpaid' AND {} ORDER BY i.id LIMIT 1",
            crate::renewals::DIFFERENCE
        ),
        vals![hosting.to_string()],
    )
    .await
}

/// Changes still waiting for their invoice when the period they were priced for has ended
/// (`period_end` on or before `today`) or asked for before `asked_before` (unix
/// microseconds), oldest first: `(organization, account)`.
pub async fn stale_awaiting<C: SqlConn>(
    conn: &mut C,
    today: &str,
    asked_before: i64,
    limit: i64,
) -> Result<Vec<(OrganizationId, HostingId)>> {
    conn.fetch_rows(
        "SELECT organization_id, hosting_id FROM plan_changes \
         WHERE status = 'awaiting_payment' AND (period_end <= $1 OR created_at <= $2) \
         ORDER BY id LIMIT $3",
        vals![today, asked_before, limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.parse()?, c.parse()?))
    })
    .collect()
}

/// The account's change waiting for its invoice to be paid, if any (at most one).
pub async fn awaiting_change<C: SqlConn>(
    conn: &mut C,
    hosting: HostingId,
) -> Result<Option<PlanChangeRow>> {
    conn.fetch_row(
        &format!(
            "SELECT {COLUMNS} FROM plan_changes WHERE hosting_id = $1 AND status = 'awaiting_payment'"
        ),
        vals![hosting.to_string()],
    )
    .await?
    .map(PlanChangeRow::from_vals)
    .transpose()
}

/// The changes of an account, oldest first.
pub async fn changes_of<C: SqlConn>(
    conn: &mut C,
    hosting: HostingId,
) -> Result<Vec<PlanChangeRow>> {
    conn.fetch_rows(
        &format!("SELECT {COLUMNS} FROM plan_changes WHERE hosting_id = $1 ORDER BY id"),
        vals![hosting.to_string()],
    )
    .await?
    .into_iter()
    .map(PlanChangeRow::from_vals)
    .collect()
}

/// A waiting change's move to `$2` (applied or cancelled) at `$3`; only an applied one has
/// an `applied_at` (a cancelled one carried the time it was given up, as if applied then:
/// found by the billing simulation).
pub(crate) const SETTLE_AWAITING: &str = "UPDATE plan_changes SET status = $2,
       applied_at = CASE WHEN $2 = 'applied' THEN $3 ELSE applied_at END
     WHERE id = $1 AND status = 'awaiting_payment'";

/// `awaiting_payment` → `status` (applied or cancelled) at `now`; `false` when it was not
/// waiting (so a paid invoice applies its change once).
pub async fn settle_change<C: SqlConn>(
    conn: &mut C,
    id: i64,
    status: &str,
    now: i64,
) -> Result<bool> {
    let changed = conn.exec(SETTLE_AWAITING, vals![id, status, now]).await?;
    Ok(changed == 1)
}

/// Records that the driver was told; `false` when it already was (once per change).
pub async fn mark_package_changed<C: SqlConn>(conn: &mut C, id: i64, now: i64) -> Result<bool> {
    let changed = conn
        .exec(
            "UPDATE plan_changes SET package_changed_at = $2
             WHERE id = $1 AND package_changed_at IS NULL",
            vals![id, now],
        )
        .await?;
    Ok(changed == 1)
}

/// Locks a hosting account for the rest of the transaction (as
/// [`crate::hosting::transition`] does) and returns its status, plan and recurring price;
/// `None` when it does not exist.
pub async fn lock_account<C: SqlConn>(
    conn: &mut C,
    id: HostingId,
) -> Result<Option<(HostingStatus, PlanId, i64)>> {
    let sql = crate::dialect::lock_hosting_status(conn.dialect());
    if conn.fetch_text(sql, vals![id.to_string()]).await?.is_none() {
        return Ok(None);
    }
    let Some(row) = conn
        .fetch_row(
            "SELECT status, plan_id, recurring_minor FROM hosting WHERE id = $1",
            vals![id.to_string()],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    Ok(Some((c.parse()?, c.parse()?, c.int()?)))
}

/// Moves an account to another plan and recurring price (its next renewals are billed at
/// it), recording the change in its history (status unchanged). Call with the account
/// locked.
#[allow(clippy::too_many_arguments)]
pub async fn set_plan<C: SqlConn>(
    conn: &mut C,
    id: HostingId,
    status: HostingStatus,
    plan: PlanId,
    recurring_minor: i64,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<()> {
    conn.exec(
        "UPDATE hosting SET plan_id = $2, recurring_minor = $3, modified_at = $4 WHERE id = $1",
        vals![id.to_string(), plan.to_string(), recurring_minor, now],
    )
    .await?;
    crate::hosting::record_history(conn, id, Some(status), status, note, actor, now).await
}

/// Records a history entry without a change of status (the package the driver applied).
pub async fn note_history<C: SqlConn>(
    conn: &mut C,
    id: HostingId,
    status: HostingStatus,
    note: &str,
    actor: &str,
    now: i64,
) -> Result<()> {
    crate::hosting::record_history(conn, id, Some(status), status, note, actor, now).await
}

/// The start of the service's plan period that ends on `period_end` (its first invoice's
/// plan line, moved to the day it was paid, or a renewal's), if one was billed.
pub async fn period_start_ending<C: SqlConn>(
    conn: &mut C,
    service_id: HostingId,
    period_end: &str,
) -> Result<Option<String>> {
    conn.fetch_text(
        "SELECT l.period_start FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
         WHERE l.service_id = $1 AND l.kind = 'plan' AND l.period_end = $2
           AND l.period_start IS NOT NULL AND i.status <> 'cancelled'
         ORDER BY l.id DESC LIMIT 1",
        vals![service_id.to_string(), period_end],
    )
    .await
}

/// What the service's period starting on `period_start` was billed at, net: its plan line,
/// the coupon (`discount`) of the invoice that billed it (written on the order's day, which
/// may be before the period's start when the order was paid later) and a plan change's
/// "paid at the old price" difference (`adjustment`), on invoices paid (even partly
/// refunded since); `None` when no plan line bills that period. A plan change prorates
/// from it, not from the list price, when no change was applied in the period yet
/// ([`last_change_in_period`]).
pub async fn period_billed_net<C: SqlConn>(
    conn: &mut C,
    service_id: HostingId,
    period_start: &str,
) -> Result<Option<i64>> {
    // Each line's kept share is worked out in Rust ([`lodge_core::money::kept_share`]):
    // `amount × kept / total` in SQL overflowed 64 bits (found by the code review:
    // PostgreSQL refused the plan change of a 30 M IDR plan as "bigint out of range", SQLite
    // went to floating point).
    let rows = conn
        .fetch_rows(
            "SELECT l.amount_minor, i.total_minor, i.refunded_minor, \
                    CASE WHEN i.status IN ('paid', 'partially_refunded', 'refunded') \
                         THEN 1 ELSE 0 END, \
                    CASE WHEN l.kind = 'plan' THEN 1 ELSE 0 END \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.service_id = $1 AND i.status <> 'cancelled' \
               AND ((l.period_start = $2 AND l.kind IN ('plan', 'adjustment')) \
                 OR (l.kind = 'discount' AND l.invoice_id IN (SELECT p.invoice_id \
                     FROM invoice_lines p WHERE p.service_id = $1 AND p.kind = 'plan' \
                     AND p.period_start = $2)))",
            vals![service_id.to_string(), period_start],
        )
        .await?;
    let (mut net, mut plans) = (0i64, 0);
    for row in rows {
        let mut c = Cols::new(row);
        let (amount, total, refunded, paid, plan) =
            (c.int()?, c.int()?, c.int()?, c.int()?, c.int()?);
        plans += plan;
        if paid == 1 {
            net = net.saturating_add(lodge_core::money::kept_share(amount, total, refunded));
        }
    }
    Ok((plans > 0).then_some(net))
}

/// What is kept of the money paid for the service's period `[start, end)` (its invoices'
/// lines, each for the share of its invoice not refunded: the period's own, from
/// [`period_billed_net`], and the plan changes' within it), and what downgrades in it gave
/// back already: `None` when no plan line bills the period.
pub async fn period_kept_and_credited<C: SqlConn>(
    conn: &mut C,
    service_id: HostingId,
    start: &str,
    end: &str,
) -> Result<Option<(i64, i64)>> {
    let Some(own) = period_billed_net(conn, service_id, start).await? else {
        return Ok(None);
    };
    let mut changes = 0i64;
    for row in conn
        .fetch_rows(
            "SELECT l.amount_minor, i.total_minor, i.refunded_minor \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.service_id = $1 AND l.kind = 'adjustment' AND l.amount_minor > 0 \
               AND l.period_start > $2 AND l.period_start < $3 \
               AND i.status IN ('paid', 'partially_refunded', 'refunded')",
            vals![service_id.to_string(), start, end],
        )
        .await?
    {
        let mut c = Cols::new(row);
        let (amount, total, refunded) = (c.int()?, c.int()?, c.int()?);
        changes = changes.saturating_add(lodge_core::money::kept_share(amount, total, refunded));
    }
    let credited = conn
        .fetch_int(
            "SELECT CAST(COALESCE(SUM(-charge_minor), 0) AS BIGINT) FROM plan_changes \
             WHERE hosting_id = $1 AND period_start = $2 AND period_end = $3 \
               AND status = 'applied' AND charge_minor < 0",
            vals![service_id.to_string(), start, end],
        )
        .await?
        .unwrap_or(0);
    Ok(Some((own + changes, credited)))
}

/// The last plan change of the service applied in its period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastChange {
    pub old_price_minor: i64,
    pub new_price_minor: i64,
    pub charge_minor: i64,
    /// Its invoice's total and what was refunded of it (0 and 0 without an invoice).
    pub invoice_total_minor: i64,
    pub invoice_refunded_minor: i64,
}

/// The last plan change of the service applied in its period `[start, end)`: the rest of
/// the period is paid at the new price, or at the lower of the two when the change charged
/// nothing (a move to a plan listed no dearer from a period paid below it), less what was
/// refunded of its invoice.
pub async fn last_change_in_period<C: SqlConn>(
    conn: &mut C,
    service_id: HostingId,
    period_start: &str,
    period_end: &str,
) -> Result<Option<LastChange>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT c.old_price_minor, c.new_price_minor, c.charge_minor, \
                    COALESCE(i.total_minor, 0), COALESCE(i.refunded_minor, 0) \
             FROM plan_changes c LEFT JOIN invoices i ON i.id = c.invoice_id \
             WHERE c.hosting_id = $1 AND c.period_start = $2 AND c.period_end = $3 \
             AND c.status = 'applied' ORDER BY c.id DESC LIMIT 1",
            vals![service_id.to_string(), period_start, period_end],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    Ok(Some(LastChange {
        old_price_minor: c.int()?,
        new_price_minor: c.int()?,
        charge_minor: c.int()?,
        invoice_total_minor: c.int()?,
        invoice_refunded_minor: c.int()?,
    }))
}

/// Whether the service already has a line of `kind` starting on `period_start` (the
/// unique key `invoice_lines_once` would refuse another).
pub async fn line_exists<C: SqlConn>(
    conn: &mut C,
    service_id: HostingId,
    period_start: &str,
    kind: &str,
) -> Result<bool> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM invoice_lines WHERE service_id = $1 AND period_start = $2 AND kind = $3",
            vals![service_id.to_string(), period_start, kind],
        )
        .await?
        .unwrap_or(0)
        > 0)
}

/// A plan line already billing a service's period: its invoice and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledPeriod {
    pub invoice_id: i64,
    pub invoice_status: String,
    pub line_id: i64,
    pub period_end: Option<String>,
    pub amount_minor: i64,
}

/// The plan lines (of invoices not cancelled) billing `service` for the period starting on
/// `start`: the renewal issued before a plan change took effect.
pub async fn billed_from<C: SqlConn>(
    conn: &mut C,
    service: HostingId,
    start: &str,
) -> Result<Vec<BilledPeriod>> {
    conn.fetch_rows(
        "SELECT i.id, i.status, l.id, l.period_end, l.amount_minor \
         FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
         WHERE l.service_id = $1 AND l.kind = 'plan' AND l.period_start = $2 \
           AND i.status <> 'cancelled' ORDER BY i.id",
        vals![service.to_string(), start],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok(BilledPeriod {
            invoice_id: c.int()?,
            invoice_status: c.text()?,
            line_id: c.int()?,
            period_end: c.opt_text()?,
            amount_minor: c.int()?,
        })
    })
    .collect()
}

/// Re-prices one line of an unpaid invoice to `amount` (and its description): the invoice's
/// subtotal and total move by the difference, and credit applied beyond the new total is
/// taken off it. Returns that credit (for the caller's ledger entry), `None` when the
/// invoice is no longer unpaid or the line is not its own. Call with the invoice locked.
pub async fn reprice_unpaid_line<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    line: i64,
    amount: i64,
    description: &str,
    now: i64,
) -> Result<Option<crate::renewals::Returned>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT l.amount_minor, i.total_minor, i.credit_applied_minor, i.paid_minor \
             FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.id = $1 AND i.id = $2 AND i.status = 'unpaid'",
            vals![line, invoice],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    let (old, total, credit, paid) = (c.int()?, c.int()?, c.int()?, c.int()?);
    let delta = amount - old;
    if amount < 0 || total + delta < 0 {
        return Ok(None);
    }
    conn.exec(
        "UPDATE invoice_lines SET amount_minor = $2, description = $3 WHERE id = $1",
        vals![line, amount, description],
    )
    .await?;
    crate::renewals::move_unpaid_total(conn, invoice, (total, credit, paid), delta, now)
        .await
        .map(Some)
}
