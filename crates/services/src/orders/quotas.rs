//! What an organization may still order: its quota of hosting accounts (those not ended,
//! pending orders included), its quota of domains (held, or being registered or
//! transferred) and the plans sold once per organization (trials). Checked when an order
//! is written, under the organization's lock, so orders placed at once cannot pass a quota
//! together ([`super::write::refusal`]); and when it is validated for an early answer
//! ([`super::DbChecks`]).

use lodge_store::{orgs, SqlConn};

use super::DomainPlan;
use crate::{FieldCode, Result};

/// The refusals of an order of `plan` by its organization's quotas, given its quotas and
/// counts (read by the caller): `(field, code, message)`.
pub(crate) async fn refusals<C: SqlConn>(
    conn: &mut C,
    organization: lodge_core::OrganizationId,
    q: orgs::OrderQuotas,
    plan: &crate::catalog::Plan,
    domain: Option<&DomainPlan>,
) -> Result<Vec<(&'static str, FieldCode, String)>> {
    let mut out = Vec::new();
    if q.accounts >= q.instance_quota {
        out.push((
            "non_field_errors",
            FieldCode::Invalid,
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
            FieldCode::Invalid,
            format!(
                "This organization has reached its quota of {} domains.",
                q.domain_quota
            ),
        ));
    }
    if let Some(why) = once_per_organization_refusal(conn, organization, plan).await? {
        out.push(("plan_id", FieldCode::OncePerOrganization, why));
    }
    Ok(out)
}

/// Why `plan` cannot be had again by the organization, when it is sold once per
/// organization (a trial) and the organization has had it: ordered, or reached by a plan
/// change ([`orgs::accounts_of_plan`]). For an order and for a plan change alike.
pub(crate) async fn once_per_organization_refusal<C: SqlConn>(
    conn: &mut C,
    organization: lodge_core::OrganizationId,
    plan: &crate::catalog::Plan,
) -> Result<Option<String>> {
    if plan.row.once_per_organization != 1
        || orgs::accounts_of_plan(conn, organization, &plan.row.id.to_string()).await? == 0
    {
        return Ok(None);
    }
    Ok(Some(had_once(&plan.row.name)))
}

/// The refusal of a plan sold once per organization that the organization has had.
pub(crate) fn had_once(plan_name: &str) -> String {
    format!("The plan {plan_name:?} can be had once per organization, and this one has had it.")
}
