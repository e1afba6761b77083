//! Consistency checks of the commit path (`lodge bench crash`): an order the API
//! acknowledged must exist whole, and nothing may exist half-written.

use sqlx::AnyPool;

use crate::Result;

/// What the API answered `201` with.
#[derive(Debug, Clone)]
pub struct AcknowledgedOrder {
    pub order_id: i64,
    pub hosting_id: String,
    pub invoice_id: Option<i64>,
    /// Credit was applied to its invoice.
    pub credit_applied: bool,
}

async fn count(pool: &AnyPool, sql: &str, ints: &[i64], text: Option<&str>) -> Result<i64> {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for i in ints {
        q = q.bind(*i);
    }
    if let Some(t) = text {
        q = q.bind(t.to_owned());
    }
    Ok(q.fetch_one(pool).await?)
}

pub async fn order_count(pool: &AnyPool) -> Result<i64> {
    count(pool, "SELECT COUNT(*) FROM orders", &[], None).await
}

/// What is missing of an acknowledged order (nothing: an empty list).
pub async fn order_problems(pool: &AnyPool, o: &AcknowledgedOrder) -> Result<Vec<String>> {
    let id = o.order_id;
    let mut problems = vec![];
    if count(
        pool,
        "SELECT COUNT(*) FROM orders WHERE id = $1",
        &[id],
        None,
    )
    .await?
        != 1
    {
        problems.push(format!("order {id} answered 201 but is missing"));
        return Ok(problems);
    }
    let hosting = count(
        pool,
        "SELECT COUNT(*) FROM hosting WHERE order_id = $1 AND id = $2",
        &[id],
        Some(&o.hosting_id),
    )
    .await?;
    if hosting != 1 {
        problems.push(format!("order {id}: hosting {} missing", o.hosting_id));
    }
    if let Some(iid) = o.invoice_id {
        let invoice = count(
            pool,
            "SELECT COUNT(*) FROM invoices WHERE id = $1 AND order_id = $2",
            &[iid, id],
            None,
        )
        .await?;
        let lines = count(
            pool,
            "SELECT COUNT(*) FROM invoice_lines WHERE invoice_id = $1",
            &[iid],
            None,
        )
        .await?;
        if invoice != 1 || lines == 0 {
            problems.push(format!("order {id}: invoice {iid} or its lines missing"));
        }
        if o.credit_applied {
            let entries = count(
                pool,
                "SELECT COUNT(*) FROM credit_ledger WHERE invoice_id = $1 AND kind = 'applied'",
                &[iid],
                None,
            )
            .await?;
            if entries != 1 {
                problems.push(format!(
                    "order {id}: credit applied without its ledger entry"
                ));
            }
        }
    }
    Ok(problems)
}

/// Whole-database invariants that no crash may break.
pub async fn consistency_problems(pool: &AnyPool) -> Result<Vec<String>> {
    let checks = [
        ("invoices whose lines do not add up", "SELECT COUNT(*) FROM invoices i WHERE i.subtotal_minor <> (SELECT CAST(COALESCE(SUM(l.amount_minor), 0) AS BIGINT) FROM invoice_lines l WHERE l.invoice_id = i.id)"),
        ("orders without a hosting account", "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM hosting h WHERE h.order_id = o.id)"),
        ("first invoices without their order", "SELECT COUNT(*) FROM invoices i WHERE i.kind = 'first' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)"),
        ("ledger entries for missing invoices", "SELECT COUNT(*) FROM credit_ledger c WHERE c.invoice_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.id = c.invoice_id)"),
        ("credit applied that the invoice does not show", "SELECT COUNT(*) FROM invoices i WHERE i.credit_applied_minor <> -(SELECT CAST(COALESCE(SUM(c.amount_minor), 0) AS BIGINT) FROM credit_ledger c WHERE c.invoice_id = i.id AND c.kind = 'applied')"),
        ("invoices without a number", "SELECT COUNT(*) FROM invoices WHERE number IS NULL"),
        ("invoice numbers missing below the highest (gapless numbering)", "SELECT COALESCE(MAX(CAST(SUBSTR(number, 5) AS BIGINT)), 0) - COUNT(*) FROM invoices WHERE number LIKE 'INV-%'"),
        ("invoices whose refunded total their refunds do not add up to", "SELECT COUNT(*) FROM invoices i WHERE i.refunded_minor <> (SELECT CAST(COALESCE(SUM(r.amount_minor), 0) AS BIGINT) FROM refunds r WHERE r.invoice_id = i.id AND r.failed_at IS NULL)"),
        ("refunds to credit the ledger does not show", "SELECT COUNT(*) FROM invoices i WHERE i.refunded_minor > 0 AND (SELECT CAST(COALESCE(SUM(r.amount_minor), 0) AS BIGINT) FROM refunds r WHERE r.invoice_id = i.id AND r.destination = 'credit') <> (SELECT CAST(COALESCE(SUM(c.amount_minor), 0) AS BIGINT) FROM credit_ledger c WHERE c.invoice_id = i.id AND c.kind = 'refund')"),
        ("organizations whose ledger does not sum to the balance", "SELECT COUNT(*) FROM organizations o WHERE o.credit_balance_minor <> (SELECT CAST(COALESCE(SUM(c.amount_minor), 0) AS BIGINT) FROM credit_ledger c WHERE c.organization_id = o.id)"),
    ];
    // The counts the triggers keep (migration 0027) against the rows, live as core says.
    let counted = [
        ("accounts", "hosting", &*crate::hosting::LIVE_HOSTING),
        ("domains", "domains", &*crate::hosting::LIVE_DOMAIN),
    ]
    .map(|(what, table, live)| {
        (
            format!(
                "organizations whose count of live {what} (organization_counts) is not their live {what}"
            ),
            format!(
                "SELECT COUNT(*) FROM organizations o WHERE COALESCE((SELECT c.live_{what} FROM organization_counts c \
                 WHERE c.organization_id = o.id), 0) <> (SELECT COUNT(*) FROM {table} t \
                 WHERE t.organization_id = o.id AND t.status IN {live})"
            ),
        )
    });
    let counted = counted.iter().map(|(w, s)| (w.as_str(), s.as_str()));
    let mut problems = vec![];
    for (what, sql) in checks.into_iter().chain(counted) {
        let n = count(pool, sql, &[], None).await?;
        if n != 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    Ok(problems)
}
