//! What the scheduler's renewal and overdue passes read and write (migration 0009).

use lodge_core::{DomainId, HostingId, HostingStatus, OrganizationId, PlanId};

use crate::conn::{Cols, SqlConn};
use crate::{vals, Result};

/// A service whose current period ends within the lead time and whose next period is not
/// billed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueService {
    pub legacy_id: i64,
    pub id: HostingId,
    pub organization_id: OrganizationId,
    pub plan_id: PlanId,
    pub domain_name: String,
    /// The end of the current period: the next period's start and the renewal's due date.
    pub next_due_date: String,
    /// The first period's start (`None`: unknown; the due date stands in for it).
    pub period_anchor: Option<String>,
    pub billing_cycle: String,
    pub renewal_months: Option<i64>,
    pub recurring_minor: i64,
    pub currency: String,
    pub status: HostingStatus,
}

impl DueService {
    fn from_vals(row: Vec<crate::conn::Val>) -> Result<Self> {
        let mut c = Cols::new(row);
        Ok(DueService {
            legacy_id: c.int()?,
            id: c.parse()?,
            organization_id: c.parse()?,
            plan_id: c.parse()?,
            domain_name: c.text()?,
            next_due_date: c.text()?,
            period_anchor: c.opt_text()?,
            billing_cycle: c.text()?,
            renewal_months: c.opt_int()?,
            recurring_minor: c.int()?,
            currency: c.text()?,
            status: c.parse()?,
        })
    }
}

const DUE_COLUMNS: &str =
    "h.legacy_id, h.id, h.organization_id, h.plan_id, h.domain_name, h.next_due_date, \
     h.period_anchor, h.billing_cycle, h.renewal_months, h.recurring_minor, h.currency, h.status";

/// The billable part of the renewal query: live, paid accounts on a recurring cycle with no
/// cancellation, whose next period has no plan line yet. Read through `hosting_renewal_due`.
const DUE_WHERE: &str = "h.next_due_date IS NOT NULL AND h.cancel_type IS NULL \
     AND (h.status = 'provisioning' OR h.status = 'active' OR h.status = 'suspended') \
     AND h.billing_cycle <> 'free' AND h.billing_cycle <> 'one_time' \
     AND NOT EXISTS (SELECT 1 FROM invoice_lines l \
         WHERE l.service_id = h.id AND l.period_start = h.next_due_date AND l.kind = 'plan')";

/// Up to `limit` services whose next period is due for billing by `horizon` (periods ending
/// on or before it), ordered by due date, organization and id, after the keyset `after`
/// (`(organization, due date, id)` of the last service read). An organization's services
/// due on one date come together, and earlier dates first.
pub async fn due<C: SqlConn>(
    conn: &mut C,
    horizon: &str,
    after: Option<&(String, String, i64)>,
    limit: i64,
) -> Result<Vec<DueService>> {
    let (org, date, id) = after
        .cloned()
        .unwrap_or_else(|| (String::new(), String::new(), i64::MIN));
    conn.fetch_rows(&DUE_PAGE, vals![horizon, org, date, id, limit])
        .await?
        .into_iter()
        .map(DueService::from_vals)
        .collect()
}

/// [`due`]'s page: a range of `hosting_renewal_due`, whose key is the page's order (migration
/// 0029), read from the keyset on and no further than the page. Ordered by organization
/// first (until 0029), each page read and sorted every due account of the horizon: 92 ms a
/// page with 50,000 due among 1,000,000 accounts, the pages one after the other.
pub(crate) static DUE_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {DUE_COLUMNS} FROM hosting h WHERE h.next_due_date <= $1 AND {DUE_WHERE} \
         AND (h.next_due_date, h.organization_id, h.legacy_id) > ($3, $2, $4) \
         ORDER BY h.next_due_date, h.organization_id, h.legacy_id LIMIT $5"
    )
});

/// One service of [`due`] again, inside the billing transaction (after its organization is
/// locked): `None` when it was billed, cancelled or changed meanwhile.
///
/// The date is compared with `IS NOT DISTINCT FROM` (the same as `=` for the non-null date
/// [`DUE_WHERE`] requires), which no index serves, so the account is found by its id alone.
/// With `=`, PostgreSQL's generic plan for this prepared statement (chosen after its fifth
/// run) read the account through `hosting_renewal_due` instead, every account due that day
/// filtered for the one id: 3 ms a service with 5,000 due on one day, nine tenths of the
/// renewal pass's time in the database (BENCHMARKS.md). The same holds for
/// [`advance_period`] and [`advance_domain`].
pub async fn due_again<C: SqlConn>(
    conn: &mut C,
    id: HostingId,
    next_due_date: &str,
) -> Result<Option<DueService>> {
    let sql = format!(
        "SELECT {DUE_COLUMNS} FROM hosting h WHERE h.id = $1 AND h.next_due_date IS NOT DISTINCT FROM $2 AND {DUE_WHERE}"
    );
    conn.fetch_row(&sql, vals![id.to_string(), next_due_date])
        .await?
        .map(DueService::from_vals)
        .transpose()
}

/// [`due_again`] of several services in one statement (a batch of the renewal pass, under
/// its organizations' locks): those still billable, whatever their due date, which the
/// caller compares with the one it bills. Found by their ids alone ([`keyed_then`]).
pub async fn due_again_all<C: SqlConn>(conn: &mut C, ids: &[HostingId]) -> Result<Vec<DueService>> {
    let keys = ids.iter().map(ToString::to_string).collect();
    keyed_then(
        conn,
        ("hosting", "h", "id"),
        DUE_COLUMNS,
        DUE_WHERE,
        "",
        keys,
    )
    .await?
    .into_iter()
    .map(DueService::from_vals)
    .collect()
}

/// `SELECT columns FROM table alias WHERE alias.key IN (keys) AND cond order`, the rows
/// found through `key`'s index alone. On PostgreSQL they are read in a subquery the
/// planner keeps apart (`OFFSET 0`) and filtered after: written as one query, the generic
/// plan of [`due_again_all`] ANDed the id index with the whole of `hosting_renewal_due`
/// (whose condition `cond` implies: every account due, 105,000 entries read for 64 ids),
/// 332 ms a batch, the whole renewal pass's time.
async fn keyed_then<C: SqlConn>(
    conn: &mut C,
    (table, alias, key): (&str, &str, &str),
    columns: &str,
    cond: &str,
    order: &str,
    keys: Vec<String>,
) -> Result<Vec<Vec<crate::conn::Val>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (sql, args) = if conn.is_postgres() {
        let sql = format!(
            "SELECT {columns} FROM (SELECT * FROM {table} WHERE {key} = ANY(ARRAY(\
             SELECT jsonb_array_elements_text($1::text::jsonb))) OFFSET 0) {alias} \
             WHERE {cond}{order}"
        );
        (sql, vals![serde_json::Value::from(keys).to_string()])
    } else {
        let sql = format!(
            "SELECT {columns} FROM {table} {alias} WHERE {alias}.{key} IN ($IDS) AND {cond}{order}"
        );
        match crate::conn::over_distinct_ids(&sql, keys) {
            Some(q) => q,
            None => return Ok(Vec::new()),
        }
    };
    conn.fetch_rows(&sql, args).await
}

/// How many services are due for billing by `horizon` (the preview's count).
pub async fn count_due<C: SqlConn>(conn: &mut C, horizon: &str) -> Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM hosting h WHERE h.next_due_date <= $1 AND {DUE_WHERE}");
    Ok(conn.fetch_int(&sql, vals![horizon]).await?.unwrap_or(0))
}

/// An unpaid renewal invoice, as the overdue pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpaidRenewal {
    pub invoice_id: i64,
    pub organization_id: OrganizationId,
    pub due_date: String,
    /// When the overdue pass first took its suspension step (unix microseconds).
    pub suspension_step_at: Option<i64>,
}

/// Records that the overdue pass took `invoice`'s suspension step at `now`, unless it was
/// recorded already (the first time counts).
pub async fn mark_suspension_step<C: SqlConn>(conn: &mut C, invoice: i64, now: i64) -> Result<()> {
    conn.exec(
        "UPDATE invoices SET suspension_step_at = $2 WHERE id = $1 AND suspension_step_at IS NULL",
        vals![invoice, now],
    )
    .await?;
    Ok(())
}

/// What the overdue pass enforces: renewals, and plan changes' differences for periods
/// paid at the old price, which complete a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    Renewals,
    Differences,
}

impl Owed {
    pub const BOTH: [Owed; 2] = [Owed::Renewals, Owed::Differences];

    /// The condition on an invoice `i` of this kind.
    fn condition(self) -> &'static str {
        match self {
            Owed::Renewals => "i.kind = 'renewal'",
            Owed::Differences => DIFFERENCE,
        }
    }
}

/// The condition on an invoice `i` of a plan change's difference for a period paid at the
/// old price: a `manual` invoice with a positive `adjustment` line of a service, and no plan
/// change of its own (an upgrade's invoice is one, and applies nothing until paid).
pub(crate) const DIFFERENCE: &str = "i.kind = 'manual' \
     AND EXISTS (SELECT 1 FROM invoice_lines d WHERE d.invoice_id = i.id \
                 AND d.kind = 'adjustment' AND d.amount_minor > 0 AND d.service_id IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM plan_changes c WHERE c.invoice_id = i.id)";

/// Unpaid invoices of `owed` due on or before `due_by`, oldest first, after invoice `after`.
pub async fn unpaid_due_by<C: SqlConn>(
    conn: &mut C,
    owed: Owed,
    due_by: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<UnpaidRenewal>> {
    conn.fetch_rows(
        &format!(
            "SELECT i.id, i.organization_id, i.due_date, i.suspension_step_at FROM invoices i \
             WHERE i.status = 'unpaid' AND i.due_date <= $1 AND i.id > $2 AND {} \
             ORDER BY i.id LIMIT $3",
            owed.condition()
        ),
        vals![due_by, after, limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok(UnpaidRenewal {
            invoice_id: c.int()?,
            organization_id: c.parse()?,
            due_date: c.text()?,
            suspension_step_at: c.opt_int()?,
        })
    })
    .collect()
}

/// The unpaid differences ([`DIFFERENCE`]) billing `service`: `(invoice, due date)`.
pub async fn unpaid_differences_of<C: SqlConn>(
    conn: &mut C,
    service: &str,
) -> Result<Vec<(i64, String)>> {
    conn.fetch_rows(
        &format!(
            "SELECT DISTINCT i.id, i.due_date FROM invoice_lines l \
             JOIN invoices i ON i.id = l.invoice_id \
             WHERE l.service_id = $1 AND l.kind = 'adjustment' AND l.amount_minor > 0 \
               AND i.status = 'unpaid' AND {DIFFERENCE} ORDER BY i.id"
        ),
        vals![service,],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.int()?, c.text()?))
    })
    .collect()
}

/// The last day of the period a plan change's difference ([`DIFFERENCE`]) completes: the
/// end of its `adjustment` lines' periods.
pub async fn difference_period_end<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
) -> Result<Option<String>> {
    let rows = conn
        .fetch_rows(
            "SELECT MAX(period_end) FROM invoice_lines \
             WHERE invoice_id = $1 AND kind = 'adjustment' AND amount_minor > 0",
            vals![invoice],
        )
        .await?;
    match rows.into_iter().next() {
        Some(row) => Cols::new(row).opt_text(),
        None => Ok(None),
    }
}

/// How many accounts an invoice renews (its `plan` lines), and how many of them are
/// cancelled for the end of their period.
pub async fn cancelling_lines<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<(i64, i64)> {
    let rows = conn
        .fetch_rows(
            "SELECT COUNT(*), \
                    CAST(COALESCE(SUM(CASE WHEN h.cancel_type = 'end_of_period' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM invoice_lines l JOIN hosting h ON h.id = l.service_id \
             WHERE l.invoice_id = $1 AND l.kind = 'plan'",
            vals![invoice],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok((0, 0));
    };
    let mut c = Cols::new(row);
    Ok((c.int()?, c.int()?))
}

/// The services an invoice bills a period of: its `plan` lines' and its positive
/// `adjustment` lines' (a difference), each once.
pub async fn services_billed<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<Vec<HostingId>> {
    conn.fetch_rows(
        "SELECT service_id FROM invoice_lines WHERE invoice_id = $1 AND service_id IS NOT NULL \
           AND (kind = 'plan' OR (kind = 'adjustment' AND amount_minor > 0)) \
         GROUP BY service_id ORDER BY MIN(position)",
        vals![invoice],
    )
    .await?
    .into_iter()
    .map(|row| Cols::new(row).parse())
    .collect()
}

/// A period a renewal invoice bills: its service, start and end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledPeriod {
    pub service: HostingId,
    pub start: String,
    pub end: String,
    pub amount_minor: i64,
}

/// The hosting periods an invoice bills (its `plan` lines with a service and a period).
pub async fn billed_periods<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<Vec<BilledPeriod>> {
    conn.fetch_rows(
        "SELECT service_id, period_start, period_end, amount_minor FROM invoice_lines \
         WHERE invoice_id = $1 AND kind = 'plan' AND service_id IS NOT NULL \
           AND period_start IS NOT NULL AND period_end IS NOT NULL ORDER BY position",
        vals![invoice],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok(BilledPeriod {
            service: c.parse()?,
            start: c.text()?,
            end: c.text()?,
            amount_minor: c.int()?,
        })
    })
    .collect()
}

/// Moves a service into its next period: `next_due_date` from `from` to `to`, only if it
/// is still `from` (a period is added once however often its payment is settled) and the
/// account has not ended (a terminated account's period came off its renewal: paying the
/// rest of that invoice serves it nothing). Sets the
/// anchor when the account has none, and moves a pending end-of-period cancellation
/// effective on `from` to `to` (the period from `from` to `to` was paid, and such an account
/// ends when its paid period does). The account's status when it moved, `None` when not.
pub async fn advance_period<C: SqlConn>(
    conn: &mut C,
    service: HostingId,
    from: &str,
    to: &str,
    anchor: &str,
    now: i64,
) -> Result<Option<HostingStatus>> {
    crate::dialect::update_returning(
        conn,
        "hosting",
        "UPDATE hosting SET next_due_date = $3, period_anchor = COALESCE(period_anchor, $4), \
         cancel_effective_date = CASE WHEN cancel_type = 'end_of_period' \
             AND cancel_effective_date = $2 THEN $3 ELSE cancel_effective_date END, \
         modified_at = $5 WHERE id = $1 AND next_due_date IS NOT DISTINCT FROM $2 \
           AND status NOT IN ('terminated', 'cancelled')",
        "status",
        vals![service.to_string(), from, to, anchor, now],
    )
    .await?
    .map(|row| Cols::new(row).parse())
    .transpose()
}

/// [`advance_period`] of several services, in one statement on PostgreSQL (a batch of the
/// renewal pass, after its last invoice): `(service, from, to)`, the anchor `from` where the
/// account has none. A service no longer at `from` is left as it is, as [`advance_period`]
/// leaves it.
pub async fn advance_periods<C: SqlConn>(
    conn: &mut C,
    moves: &[(HostingId, String, String)],
    now: i64,
) -> Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    if !conn.is_postgres() {
        for (service, from, to) in moves {
            advance_period(conn, *service, from, to, from, now).await?;
        }
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = moves
        .iter()
        .map(|(service, from, to)| serde_json::json!([service.to_string(), from, to]))
        .collect();
    conn.exec(
        ADVANCE_PERIODS_POSTGRES,
        vals![now, serde_json::Value::from(rows).to_string()],
    )
    .await?;
    Ok(())
}

/// [`advance_periods`] on PostgreSQL: `$1` the clock, `$2` the moves as a JSON list of
/// `[service, from, to]`; the accounts found by `id = ANY(ARRAY(…))`, an index scan whatever
/// the statistics say (as `billing::number_invoices`).
const ADVANCE_PERIODS_POSTGRES: &str = "UPDATE hosting AS h \
     SET next_due_date = r.v->>2, period_anchor = COALESCE(h.period_anchor, r.v->>1), \
         cancel_effective_date = CASE WHEN h.cancel_type = 'end_of_period' \
             AND h.cancel_effective_date = r.v->>1 THEN r.v->>2 ELSE h.cancel_effective_date END, \
         modified_at = $1 \
     FROM jsonb_array_elements($2::text::jsonb) AS r(v) \
     WHERE h.id = ANY(ARRAY(SELECT x.v->>0 FROM jsonb_array_elements($2::text::jsonb) AS x(v))) \
       AND h.id = r.v->>0 AND h.next_due_date IS NOT DISTINCT FROM r.v->>1 \
       AND h.status NOT IN ('terminated', 'cancelled')";

/// An account's status, if it exists.
pub async fn status_of<C: SqlConn>(
    conn: &mut C,
    service: HostingId,
) -> Result<Option<HostingStatus>> {
    conn.fetch_text(
        "SELECT status FROM hosting WHERE id = $1",
        vals![service.to_string()],
    )
    .await?
    .map(|s| crate::parse(&s))
    .transpose()
}

/// Who suspended an account last (`scheduler` for an overdue renewal), if it ever was:
/// the last move into `suspended`, or staff's suspension recorded over a renewal's
/// ("suspended by staff too"), not another note written while it was (a cancellation
/// asked for, a plan or password changed: found by review, a customer's note made the
/// customer its suspender, and paying the renewal no longer lifted it).
pub async fn last_suspended_by<C: SqlConn>(
    conn: &mut C,
    service: HostingId,
) -> Result<Option<String>> {
    conn.fetch_text(
        "SELECT actor FROM hosting_history WHERE hosting_id = $1 AND to_status = 'suspended' \
         AND (from_status IS NULL OR from_status <> 'suspended' \
              OR note LIKE 'suspended by staff%') \
         ORDER BY id DESC LIMIT 1",
        vals![service.to_string()],
    )
    .await
}

/// Takes `amount` off an unpaid invoice's total (a service dropped from it), returning to
/// the caller what no longer fits under the new total ([`move_unpaid_total`]; the caller
/// puts it back in the ledger). `None` when the invoice is not unpaid or the amount is more
/// than its subtotal.
pub async fn reduce_unpaid<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    amount: i64,
    now: i64,
) -> Result<Option<Returned>> {
    let Some(row) = conn
        .fetch_row(
            "SELECT subtotal_minor, total_minor, credit_applied_minor, paid_minor FROM invoices \
             WHERE id = $1 AND status = 'unpaid'",
            vals![invoice],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut c = Cols::new(row);
    let (subtotal, total, credit, paid) = (c.int()?, c.int()?, c.int()?, c.int()?);
    if amount < 0 || amount > subtotal {
        return Ok(None);
    }
    move_unpaid_total(conn, invoice, (total, credit, paid), -amount, now)
        .await
        .map(Some)
}

/// What came off an unpaid invoice whose total went down ([`move_unpaid_total`]), for the
/// caller's ledger entries: credit applied, and money received, beyond the new total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Returned {
    pub credit: i64,
    pub paid: i64,
}

/// Moves an unpaid invoice's subtotal and total by `delta` (its lines already changed by
/// the caller), `(total, credit applied, paid)` being its amounts before. Money received
/// stays on the invoice first; credit applied beyond the new total comes off it, then
/// money received beyond it (a renewal partly paid, then lighter: the invoice is never
/// overpaid), and both are returned for the caller's ledger entries.
pub async fn move_unpaid_total<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    (total, credit, paid): (i64, i64, i64),
    delta: i64,
    now: i64,
) -> Result<Returned> {
    let new_total = total + delta;
    let returned = Returned {
        credit: (credit + paid - new_total).clamp(0, credit),
        paid: (paid - new_total.max(0)).max(0),
    };
    conn.exec(
        "UPDATE invoices SET subtotal_minor = subtotal_minor + $2, total_minor = total_minor + $2, \
         credit_applied_minor = credit_applied_minor - $3, paid_minor = paid_minor - $4, \
         modified_at = $5 WHERE id = $1",
        vals![invoice, delta, returned.credit, returned.paid, now],
    )
    .await?;
    Ok(returned)
}

/// A suspended account: id, organization, domain.
pub async fn suspended<C: SqlConn>(
    conn: &mut C,
    limit: i64,
) -> Result<Vec<(HostingId, OrganizationId, String)>> {
    conn.fetch_rows(
        "SELECT id, organization_id, domain_name FROM hosting WHERE status = 'suspended' \
         ORDER BY legacy_id LIMIT $1",
        vals![limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.parse()?, c.parse()?, c.text()?))
    })
    .collect()
}

/// A hosting account's invoices: its order's, and the renewals billing it, oldest first.
pub async fn invoices_of_account<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    order_id: i64,
    service: HostingId,
) -> Result<Vec<crate::billing::InvoiceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {} FROM invoices WHERE order_id = $1 OR id IN \
         (SELECT invoice_id FROM invoice_lines WHERE service_id = $2) ORDER BY id",
        crate::billing::INVOICE_COLUMNS
    ))
    .bind(order_id)
    .bind(service.to_string())
    .fetch_all(db)
    .await?)
}

// ---- domains ----

/// A registered or transferred domain whose paid-through date falls within the lead time,
/// its next year not billed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDomain {
    pub legacy_id: i64,
    pub id: DomainId,
    pub organization_id: OrganizationId,
    pub name: String,
    pub tld: String,
    /// Paid through this date: the next year's start and its renewal's due date.
    pub next_billing_date: String,
}

impl DueDomain {
    fn from_vals(row: Vec<crate::conn::Val>) -> Result<Self> {
        let mut c = Cols::new(row);
        Ok(DueDomain {
            legacy_id: c.int()?,
            id: c.parse()?,
            organization_id: c.parse()?,
            name: c.text()?,
            tld: c.text()?,
            next_billing_date: c.text()?,
        })
    }
}

const DUE_DOMAIN_COLUMNS: &str =
    "d.legacy_id, d.id, d.organization_id, d.name, d.tld, d.next_billing_date";

/// Active domains renewing automatically whose next year has no renewal line yet.
const DUE_DOMAIN_WHERE: &str = "d.status = 'active' AND d.auto_renew = 1 \
     AND d.next_billing_date IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM invoice_lines l WHERE l.service_id = d.id \
         AND l.period_start = d.next_billing_date AND l.kind = 'domain_renewal')";

/// Up to `limit` domains due for billing by `horizon`, in the order and keyset of [`due`]
/// (by date, organization and id).
pub async fn domains_due<C: SqlConn>(
    conn: &mut C,
    horizon: &str,
    after: Option<&(String, String, i64)>,
    limit: i64,
) -> Result<Vec<DueDomain>> {
    let (org, date, id) = after
        .cloned()
        .unwrap_or_else(|| (String::new(), String::new(), i64::MIN));
    conn.fetch_rows(&DUE_DOMAIN_PAGE, vals![horizon, org, date, id, limit])
        .await?
        .into_iter()
        .map(DueDomain::from_vals)
        .collect()
}

/// [`domains_due`]'s page: a range of `domains_renewal_due` (migration 0030), as
/// [`DUE_PAGE`] is of the accounts' index.
pub(crate) static DUE_DOMAIN_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {DUE_DOMAIN_COLUMNS} FROM domains d WHERE d.next_billing_date <= $1 \
         AND {DUE_DOMAIN_WHERE} \
         AND (d.next_billing_date, d.organization_id, d.legacy_id) > ($3, $2, $4) \
         ORDER BY d.next_billing_date, d.organization_id, d.legacy_id LIMIT $5"
    )
});

/// An organization's domains due for billing on `date`, read inside the billing
/// transaction (so they join the invoice of its services due that day).
pub async fn domains_due_on<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    date: &str,
) -> Result<Vec<DueDomain>> {
    let sql = format!(
        "SELECT {DUE_DOMAIN_COLUMNS} FROM domains d WHERE d.organization_id = $1 \
         AND d.next_billing_date = $2 AND {DUE_DOMAIN_WHERE} ORDER BY d.legacy_id"
    );
    conn.fetch_rows(&sql, vals![org.to_string(), date])
        .await?
        .into_iter()
        .map(DueDomain::from_vals)
        .collect()
}

/// [`domains_due_on`] of several organizations in one statement, whatever the date (the
/// caller compares it with the one it bills), by organization and id; found through the
/// organizations' index alone ([`keyed_then`]).
pub async fn domains_due_of<C: SqlConn>(
    conn: &mut C,
    orgs: &[OrganizationId],
) -> Result<Vec<DueDomain>> {
    let keys = orgs.iter().map(ToString::to_string).collect();
    let table = ("domains", "d", "organization_id");
    let order = " ORDER BY d.organization_id, d.legacy_id";
    keyed_then(
        conn,
        table,
        DUE_DOMAIN_COLUMNS,
        DUE_DOMAIN_WHERE,
        order,
        keys,
    )
    .await?
    .into_iter()
    .map(DueDomain::from_vals)
    .collect()
}

/// A TLD's price to renew for one year, in minor units.
pub async fn renew_price<C: SqlConn>(conn: &mut C, tld: &str) -> Result<Option<i64>> {
    conn.fetch_int(
        "SELECT renew_minor FROM tld_prices WHERE tld = $1 AND years = 1",
        vals![tld],
    )
    .await
}

/// The domain years an invoice bills (its `domain_renewal` lines).
pub async fn billed_domains<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
) -> Result<Vec<(DomainId, String, String, i64)>> {
    conn.fetch_rows(
        "SELECT service_id, period_start, period_end, amount_minor FROM invoice_lines \
         WHERE invoice_id = $1 AND kind = 'domain_renewal' AND service_id IS NOT NULL \
           AND period_start IS NOT NULL AND period_end IS NOT NULL ORDER BY position",
        vals![invoice],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.parse()?, c.text()?, c.text()?, c.int()?))
    })
    .collect()
}

/// Moves a domain's paid-through date from `from` to `to` (once), unless the domain has
/// expired or left (its year came off the renewal, so paying the rest renews nothing).
/// Whether it moved: the registrar's renewal is queued only then.
pub async fn advance_domain<C: SqlConn>(
    conn: &mut C,
    id: DomainId,
    from: &str,
    to: &str,
    now: i64,
) -> Result<bool> {
    let changed = conn
        .exec(
            "UPDATE domains SET next_billing_date = $3, modified_at = $4 \
             WHERE id = $1 AND next_billing_date IS NOT DISTINCT FROM $2 \
               AND status NOT IN ('expired', 'transferred_away', 'cancelled')",
            vals![id.to_string(), from, to, now],
        )
        .await?;
    Ok(changed == 1)
}

/// Records the expiration date the registrar reports after a renewal.
pub async fn set_expiration<C: SqlConn>(
    conn: &mut C,
    id: DomainId,
    expiration: &str,
    now: i64,
) -> Result<()> {
    conn.exec(
        "UPDATE domains SET expiration_date = $2, modified_at = $3 WHERE id = $1",
        vals![id.to_string(), expiration, now],
    )
    .await?;
    Ok(())
}

/// Active domains not paid beyond their expiration date and past it: on `today` for those
/// the customer does not renew (`auto_renew` off); for the others, once the date they are
/// paid through (`next_billing_date`) is `renewed_by` or earlier (a date before today:
/// their renewal may still be paid until then). The paid-through date, not the registry's
/// expiry, which a registry's own auto-renewal moves a year on within that time (the daily
/// sync records it: found by review, such a domain never expired and was never billed
/// again). `(id, organization)`.
pub async fn domains_expired_by<C: SqlConn>(
    conn: &mut C,
    today: &str,
    renewed_by: &str,
    limit: i64,
) -> Result<Vec<(DomainId, OrganizationId)>> {
    conn.fetch_rows(
        "SELECT id, organization_id FROM domains WHERE status = 'active' \
         AND expiration_date IS NOT NULL \
         AND ((auto_renew = 0 AND expiration_date <= $1 \
               AND (next_billing_date IS NULL OR next_billing_date <= expiration_date)) \
           OR (auto_renew = 1 AND COALESCE(next_billing_date, expiration_date) <= $2)) \
         ORDER BY legacy_id LIMIT $3",
        vals![today, renewed_by, limit],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.parse()?, c.parse()?))
    })
    .collect()
}

/// The unpaid renewal invoices with a line of `kind` for `service` (a hosting account's or
/// a domain's id), with their due dates.
pub async fn unpaid_with_line<C: SqlConn>(
    conn: &mut C,
    service: &str,
    kind: &str,
) -> Result<Vec<(i64, String)>> {
    conn.fetch_rows(
        "SELECT DISTINCT i.id, i.due_date FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
         WHERE l.service_id = $1 AND l.kind = $2 AND i.kind = 'renewal' AND i.status = 'unpaid' \
         ORDER BY i.id",
        vals![service, kind],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.int()?, c.text()?))
    })
    .collect()
}

/// The lines of an invoice billing `service` as `kind`, `(start, end, amount)`, but for
/// those already taken off by a (negative) `adjustment` line of the same service and
/// period: releasing a service twice (its cancellation, then its termination job) takes
/// each line off once.
pub async fn unreleased_lines_of<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    service: &str,
    kind: &str,
) -> Result<Vec<(Option<String>, Option<String>, i64)>> {
    conn.fetch_rows(
        "SELECT l.period_start, l.period_end, l.amount_minor FROM invoice_lines l \
         WHERE l.invoice_id = $1 AND l.service_id = $2 AND l.kind = $3 \
           AND NOT EXISTS (SELECT 1 FROM invoice_lines a WHERE a.invoice_id = l.invoice_id \
             AND a.service_id = l.service_id AND a.kind = 'adjustment' AND a.amount_minor < 0 \
             AND (a.period_start = l.period_start \
                  OR (a.period_start IS NULL AND l.period_start IS NULL))) \
         ORDER BY l.position",
        vals![invoice, service, kind],
    )
    .await?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok((c.opt_text()?, c.opt_text()?, c.int()?))
    })
    .collect()
}

/// How many lines of an invoice bill something still live other than `except`: a hosting
/// account not closed, or an active domain.
pub async fn live_lines_besides<C: SqlConn>(
    conn: &mut C,
    invoice: i64,
    except: &str,
) -> Result<i64> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM invoice_lines l WHERE l.invoice_id = $1 AND l.service_id <> $2 AND ( \
               (l.kind = 'plan' AND EXISTS (SELECT 1 FROM hosting h WHERE h.id = l.service_id \
                  AND (h.status = 'provisioning' OR h.status = 'active' OR h.status = 'suspended' OR h.status = 'failed'))) \
               OR (l.kind = 'domain_renewal' AND EXISTS (SELECT 1 FROM domains d WHERE d.id = l.service_id \
                  AND d.status = 'active')))",
            vals![invoice, except],
        )
        .await?
        .unwrap_or(0))
}

/// Lines in an invoice (the next position).
pub async fn line_count<C: SqlConn>(conn: &mut C, invoice: i64) -> Result<i64> {
    Ok(conn
        .fetch_int(
            "SELECT COUNT(*) FROM invoice_lines WHERE invoice_id = $1",
            vals![invoice],
        )
        .await?
        .unwrap_or(0))
}
