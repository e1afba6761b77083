//! The customer's own account as InterServer's client edits it (its billing address and
//! name), and the few counts and lookups its storefront pages show.

use lodge_core::{OrganizationId, UserId};

use crate::hosting::{LIVE_DOMAIN, LIVE_HOSTING};
use crate::{Result, SqlConn};

/// A change of an organization's billing address: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AddressChange<'a> {
    pub company_name: Option<&'a str>,
    pub address_1: Option<&'a str>,
    pub address_2: Option<&'a str>,
    pub city: Option<&'a str>,
    pub state: Option<&'a str>,
    pub postcode: Option<&'a str>,
    pub country: Option<&'a str>,
    pub phone: Option<&'a str>,
}

/// Changes an organization's billing address; `false` when it does not exist.
pub async fn update_address<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    c: &AddressChange<'_>,
    now: i64,
) -> Result<bool> {
    Ok(conn
        .exec(
            "UPDATE organizations SET company_name = COALESCE($2, company_name), \
             address_1 = COALESCE($3, address_1), address_2 = COALESCE($4, address_2), \
             city = COALESCE($5, city), state = COALESCE($6, state), \
             postcode = COALESCE($7, postcode), country = COALESCE($8, country), \
             phone = COALESCE($9, phone), modified_at = $10 WHERE id = $1",
            crate::vals![
                org.to_string(),
                c.company_name,
                c.address_1,
                c.address_2,
                c.city,
                c.state,
                c.postcode,
                c.country,
                c.phone,
                now
            ],
        )
        .await?
        == 1)
}

/// Changes a user's display name; `false` when the user does not exist.
pub async fn set_user_name<C: SqlConn>(
    conn: &mut C,
    user: UserId,
    name: &str,
    now: i64,
) -> Result<bool> {
    Ok(conn
        .exec(
            "UPDATE users SET name = $2, modified_at = $3 WHERE id = $1",
            crate::vals![user.to_string(), name, now],
        )
        .await?
        == 1)
}

/// Whether the organization has a live hosting account for this name.
pub async fn org_hosts_name<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    name: &str,
) -> Result<bool> {
    let sql = format!(
        "SELECT COUNT(*) FROM hosting WHERE organization_id = $1 AND domain_name = $2 \
         AND status IN {}",
        *LIVE_HOSTING
    );
    Ok(conn
        .fetch_int(&sql, crate::vals![org.to_string(), name])
        .await?
        .unwrap_or(0)
        > 0)
}

/// Whether the organization holds a live domain of this name.
pub async fn org_holds_domain<C: SqlConn>(
    conn: &mut C,
    org: OrganizationId,
    name: &str,
) -> Result<bool> {
    let sql = format!(
        "SELECT COUNT(*) FROM domains WHERE organization_id = $1 AND name = $2 \
         AND status IN {}",
        *LIVE_DOMAIN
    );
    Ok(conn
        .fetch_int(&sql, crate::vals![org.to_string(), name])
        .await?
        .unwrap_or(0)
        > 0)
}

/// How many hosting accounts were ever ordered (the login page's public count).
pub async fn hosting_count<C: SqlConn>(conn: &mut C) -> Result<i64> {
    Ok(conn
        .fetch_int("SELECT COUNT(*) FROM hosting", vec![])
        .await?
        .unwrap_or(0))
}

/// The lines of an organization's invoices (only its unpaid ones with `unpaid_only`), in
/// one statement, ordered by invoice, position and id.
pub async fn org_invoice_lines(
    db: &sqlx::AnyPool,
    org: OrganizationId,
    unpaid_only: bool,
) -> Result<Vec<crate::billing::LineRow>> {
    Ok(sqlx::query_as(
        "SELECT l.id, l.invoice_id, l.position, l.kind, l.description, l.service_id, \
         l.period_start, l.period_end, l.amount_minor, l.tax_rate_bp, l.tax_minor \
         FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id \
         WHERE i.organization_id = $1 AND ($2 = 0 OR i.status = 'unpaid') \
         ORDER BY l.invoice_id, l.position, l.id",
    )
    .bind(org.to_string())
    .bind(i64::from(unpaid_only))
    .fetch_all(db)
    .await?)
}

/// The payments of an organization's invoices, in one statement, oldest first.
pub async fn org_payments(
    db: &sqlx::AnyPool,
    org: OrganizationId,
) -> Result<Vec<crate::billing::PaymentRow>> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.invoice_id, p.method, p.reference, p.amount_minor, p.currency, \
         p.actor, p.created_at \
         FROM payments p JOIN invoices i ON i.id = p.invoice_id \
         WHERE i.organization_id = $1 ORDER BY p.created_at, p.id",
    )
    .bind(org.to_string())
    .fetch_all(db)
    .await?)
}
