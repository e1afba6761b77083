//! `/v1` wire shapes (OnetSolutions-compatible) and their conversion from Lodge's types.
//! Money is a two-decimal string here; timestamps RFC 3339 UTC.

use lodge_core::{Currency, Money};
use lodge_services::catalog::{Catalog, Plan, Tld};
use lodge_store::catalog::GroupRow;
use lodge_store::keys::ApiKeyRow;
use lodge_store::orgs::{OrgRow, ProjectRow};
use serde::Serialize;
use utoipa::ToSchema;

/// RFC 3339 UTC from stored unix microseconds.
pub fn ts(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

pub fn ts_opt(us: Option<i64>) -> Option<String> {
    us.map(ts)
}

pub fn money_str(minor: i64, cur: Currency) -> String {
    Money::new(minor, cur).format_decimal()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Organization {
    pub id: String,
    pub legacy_id: i64,
    pub name: String,
    pub project_count: i64,
    pub modules: Vec<String>,
    /// `personal` or `professional`.
    pub organization_type: String,
    /// `basic`, `advanced` or `business`.
    pub support_plan: String,
    pub user_quota: i64,
    pub project_quota: i64,
    pub instance_quota: i64,
    pub domain_quota: i64,
    pub logo: Option<String>,
    pub company_name: String,
    pub address_1: String,
    pub address_2: String,
    pub city: String,
    pub state: String,
    pub postcode: String,
    pub country: String,
    pub phone: String,
    pub vat_number: String,
    pub is_active: bool,
    /// Account credit (Lodge addition), a decimal string.
    pub credit_balance: String,
}

impl Organization {
    pub fn from_row(o: OrgRow) -> Self {
        let cur = Currency::parse(&o.currency).unwrap_or(Currency::USD);
        Organization {
            id: o.id.to_string(),
            legacy_id: o.legacy_id,
            name: o.name,
            project_count: o.project_count,
            modules: serde_json::from_str(&o.modules).unwrap_or_default(),
            organization_type: o.organization_type,
            support_plan: o.support_plan,
            user_quota: o.user_quota,
            project_quota: o.project_quota,
            instance_quota: o.instance_quota,
            domain_quota: o.domain_quota,
            logo: o.logo,
            company_name: o.company_name,
            address_1: o.address_1,
            address_2: o.address_2,
            city: o.city,
            state: o.state,
            postcode: o.postcode,
            country: o.country,
            phone: o.phone,
            vat_number: o.vat_number,
            is_active: o.is_active == 1,
            credit_balance: money_str(o.credit_balance_minor, cur),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub legacy_id: i64,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub is_default: bool,
    pub created: String,
    pub modified: String,
}

impl From<ProjectRow> for Project {
    fn from(p: ProjectRow) -> Self {
        Project {
            id: p.id.to_string(),
            legacy_id: p.legacy_id,
            organization_id: p.organization_id.to_string(),
            name: p.name,
            description: p.description,
            is_default: p.is_default == 1,
            created: ts(p.created_at),
            modified: ts(p.modified_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanGroup {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub name_en: String,
    pub name_fr: String,
    pub headline: String,
    pub headline_en: String,
    pub headline_fr: String,
    pub tagline: String,
    pub tagline_en: String,
    pub tagline_fr: String,
    pub display_order: i64,
    pub is_active: bool,
}

impl From<&GroupRow> for PlanGroup {
    fn from(g: &GroupRow) -> Self {
        PlanGroup {
            id: g.id.to_string(),
            name: g.name.clone(),
            slug: g.slug.clone(),
            name_en: g.name_en.clone(),
            name_fr: g.name_fr.clone(),
            headline: g.headline.clone(),
            headline_en: g.headline_en.clone(),
            headline_fr: g.headline_fr.clone(),
            tagline: g.tagline.clone(),
            tagline_en: g.tagline_en.clone(),
            tagline_fr: g.tagline_fr.clone(),
            display_order: g.display_order,
            is_active: g.is_active == 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanPricing {
    /// `free`, `one_time`, `monthly`, `quarterly`, `semi_annually`, `annually`, `biennially`
    /// or `triennially`.
    pub billing_cycle: String,
    /// Price for the whole cycle, a decimal string.
    pub price: String,
    /// Saving against paying monthly for the same months, in whole percent.
    pub discount_percent: i64,
    pub is_default: bool,
    /// One-time setup fee charged with the first invoice (Lodge addition).
    pub setup_fee: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostingPlan {
    pub id: String,
    pub legacy_id: i64,
    pub name: String,
    pub name_en: String,
    pub name_fr: String,
    pub slug: String,
    pub description: String,
    pub description_en: String,
    pub description_fr: String,
    pub group: PlanGroup,
    pub pricing: Vec<PlanPricing>,
    /// `hostingaccount` or `reselleraccount`.
    pub hosting_type: String,
    pub disk_space_mb: i64,
    pub bandwidth_mb: i64,
    pub max_email_accounts: i64,
    pub max_databases: i64,
    pub max_subdomains: i64,
    pub max_addon_domains: i64,
    pub max_parked_domains: i64,
    pub max_ftp_accounts: i64,
    pub max_accounts: i64,
    pub is_active: bool,
    pub created: String,
    pub modified: String,
}

impl From<&Plan> for HostingPlan {
    fn from(p: &Plan) -> Self {
        let r = &p.row;
        HostingPlan {
            id: r.id.to_string(),
            legacy_id: r.legacy_id,
            name: r.name.clone(),
            name_en: r.name_en.clone(),
            name_fr: r.name_fr.clone(),
            slug: r.slug.clone(),
            description: r.description.clone(),
            description_en: r.description_en.clone(),
            description_fr: r.description_fr.clone(),
            group: PlanGroup::from(&p.group),
            pricing: p
                .prices
                .iter()
                .map(|pr| PlanPricing {
                    billing_cycle: pr.cycle.as_str().to_owned(),
                    price: pr.price.format_decimal(),
                    discount_percent: p.discount_percent(pr),
                    is_default: pr.is_default,
                    setup_fee: pr.setup_fee.format_decimal(),
                })
                .collect(),
            hosting_type: r.hosting_type.clone(),
            disk_space_mb: r.disk_space_mb,
            bandwidth_mb: r.bandwidth_mb,
            max_email_accounts: r.max_email_accounts,
            max_databases: r.max_databases,
            max_subdomains: r.max_subdomains,
            max_addon_domains: r.max_addon_domains,
            max_parked_domains: r.max_parked_domains,
            max_ftp_accounts: r.max_ftp_accounts,
            max_accounts: r.max_accounts,
            is_active: r.is_active == 1,
            created: ts(r.created_at),
            modified: ts(r.modified_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TldPricing {
    pub years: i64,
    pub registration_price: String,
    pub renewal_price: String,
    pub transfer_price: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TldInfo {
    pub tld: String,
    pub display_name: String,
    pub category: String,
    pub pricing: Vec<TldPricing>,
    pub is_registration_available: bool,
    pub is_transfer_available: bool,
    pub min_registration_years: i64,
    pub max_registration_years: i64,
}

impl TldInfo {
    pub fn new(t: &Tld, cur: Currency) -> Self {
        TldInfo {
            tld: t.row.tld.clone(),
            display_name: t.row.display_name.clone(),
            category: t.row.category.clone(),
            pricing: t
                .prices
                .iter()
                .map(|p| TldPricing {
                    years: p.years,
                    registration_price: money_str(p.register_minor, cur),
                    renewal_price: money_str(p.renew_minor, cur),
                    transfer_price: money_str(p.transfer_minor, cur),
                })
                .collect(),
            is_registration_available: t.row.register_open == 1 && t.row.is_active == 1,
            is_transfer_available: t.row.transfer_open == 1 && t.row.is_active == 1,
            min_registration_years: t.row.min_years,
            max_registration_years: t.row.max_years,
        }
    }
}

/// Every TLD of the catalog in `/v1`'s shape.
pub fn tlds(c: &Catalog) -> Vec<TldInfo> {
    c.tlds.iter().map(|t| TldInfo::new(t, c.currency)).collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub organization_id: Option<String>,
    pub expires: Option<String>,
    pub last_used: Option<String>,
    pub revoked: Option<String>,
    pub is_active: bool,
    pub created: String,
}

impl ApiKey {
    pub fn from_row(k: &ApiKeyRow, now_us: i64) -> Self {
        ApiKey {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.display_prefix.clone(),
            scopes: k.scopes.split_whitespace().map(str::to_owned).collect(),
            organization_id: k.organization_id.clone(),
            expires: ts_opt(k.expires_at),
            last_used: ts_opt(k.last_used_at),
            revoked: ts_opt(k.revoked_at),
            is_active: k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now_us),
            created: ts(k.created_at),
        }
    }
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret. Store it now: it is never shown again.
    pub key_secret: String,
}
