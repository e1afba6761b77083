//! What an organization may still order: its quota of hosting accounts (those not ended,
//! pending orders included), its quota of domains (held, or being registered or
//! transferred) and the plans sold once per organization (trials). Checked when an order
//! is written, under the organization's lock, so orders placed at once cannot pass a quota
//! together ([`super::write::refusal`]); and when it is validated for an early answer
//! ([`super::DbChecks`]).

use lodge_store::{orgs, SqlConn};

use super::DomainPlan;
use crate::Result;

/// The refusals of an order of `plan` by its organization's quotas, given its quotas and
/// counts (read by the caller): `(field, message)`.
pub(crate) async fn refusals<C: SqlConn>(
    conn: &mut C,
    organization: lodge_core::OrganizationId,
    q: orgs::OrderQuotas,
    plan: &crate::catalog::Plan,
    domain: Option<&DomainPlan>,
) -> Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    if q.accounts >= q.instance_quota {
        out.push((
            "non_field_errors",
            format!(
                "This organization has reached its quota of {} hosting accounts (pending orders \
                 count): cancel one, or ask us to raise the quota.",
                q.instance_quota
            ),
        ));
    }
    let new_domain = matches!(
        domain,
        Some(DomainPlan::Register { .. } | DomainPlan::Transfer { .. })
    );
    if new_domain && q.domains >= q.domain_quota {
        out.push((
            "domain_name",
            format!(
                "This organization has reached its quota of {} domains.",
                q.domain_quota
            ),
        ));
    }
    if plan.row.once_per_organization == 1
        && orgs::accounts_of_plan(conn, organization, &plan.row.id.to_string()).await? > 0
    {
        out.push((
            "plan_id",
            format!(
                "The plan {:?} can be ordered once per organization, and this one has had it.",
                plan.row.name
            ),
        ));
    }
    Ok(out)
}
