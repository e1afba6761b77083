//! The catalog file format (`lodge catalog import`, `POST /v1/admin/catalog/import`).

use serde::Deserialize;

fn yes() -> bool {
    true
}

/// A catalog file (`lodge catalog import`, `POST /v1/admin/catalog/import`). Amounts are
/// decimal strings in the installation's currency (`"5.00"`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub plans: Vec<PlanSpec>,
    #[serde(default)]
    pub offers: Vec<OfferSpec>,
    #[serde(default)]
    pub coupons: Vec<CouponSpec>,
    #[serde(default)]
    pub tlds: Vec<TldSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
    #[serde(default)]
    pub name_fr: Option<String>,
    #[serde(default)]
    pub headline: String,
    #[serde(default)]
    pub headline_en: Option<String>,
    #[serde(default)]
    pub headline_fr: Option<String>,
    #[serde(default)]
    pub tagline: String,
    #[serde(default)]
    pub tagline_en: Option<String>,
    #[serde(default)]
    pub tagline_fr: Option<String>,
    #[serde(default)]
    pub display_order: i64,
    /// Absent: `true` for a new item; an existing item keeps its own (deactivating is
    /// never undone by an import that does not say so).
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub slug: String,
    #[serde(default)]
    pub legacy_id: Option<i64>,
    pub group: String,
    pub name: String,
    #[serde(default)]
    pub name_en: Option<String>,
    #[serde(default)]
    pub name_fr: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub description_en: Option<String>,
    #[serde(default)]
    pub description_fr: Option<String>,
    #[serde(default)]
    pub hosting_type: Option<String>,
    #[serde(default)]
    pub disk_space_mb: i64,
    #[serde(default)]
    pub bandwidth_mb: i64,
    #[serde(default)]
    pub max_email_accounts: i64,
    #[serde(default)]
    pub max_databases: i64,
    #[serde(default)]
    pub max_subdomains: i64,
    #[serde(default)]
    pub max_addon_domains: i64,
    #[serde(default)]
    pub max_parked_domains: i64,
    #[serde(default)]
    pub max_ftp_accounts: i64,
    #[serde(default)]
    pub max_accounts: i64,
    /// `/apiv2` `services_category` (panel family: 200 cPanel, 202 Plesk, 204 DirectAdmin).
    #[serde(default)]
    pub category: Option<String>,
    /// `/apiv2` `services_type`.
    #[serde(default)]
    pub type_id: Option<String>,
    #[serde(default)]
    pub field1: String,
    #[serde(default)]
    pub field2: String,
    /// Provisioning driver of the servers that host it (`nginx`, …).
    #[serde(default)]
    pub driver: Option<String>,
    /// The panel package per driver (`{ cpanel = "reseller_starter", directadmin = "starter" }`);
    /// a driver not listed gets `field2`, else the slug.
    #[serde(default)]
    pub packages: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub html: String,
    #[serde(default)]
    pub moreinfo_url: String,
    #[serde(default = "yes")]
    pub buyable: bool,
    /// Sold once per organization (a trial): a second order is refused.
    #[serde(default)]
    pub once_per_organization: bool,
    /// Absent: `false` for a new plan; an existing plan keeps its own.
    #[serde(default)]
    pub hidden: Option<bool>,
    /// Absent: `true` for a new item; an existing item keeps its own (deactivating is
    /// never undone by an import that does not say so).
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub display_order: i64,
    pub pricing: Vec<PriceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub billing_cycle: String,
    pub price: String,
    #[serde(default)]
    pub setup_fee: Option<String>,
    #[serde(default)]
    pub is_default: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferSpec {
    #[serde(default)]
    pub legacy_id: Option<i64>,
    pub plan: String,
    /// Total for the first `intro_months`.
    pub intro_total: String,
    pub intro_months: i64,
    pub renewal: String,
    pub renewal_months: i64,
    #[serde(default = "yes")]
    pub allow_coupon: bool,
    /// Absent: `true` for a new item; an existing item keeps its own (deactivating is
    /// never undone by an import that does not say so).
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponSpec {
    pub code: String,
    /// `percent` (1), `fixed_amount` (2) or `fixed_price` (3).
    pub kind: String,
    /// A percentage (`"10"`, `"12.5"`) or an amount (`"5.00"`).
    pub value: String,
    #[serde(default)]
    pub recurring: bool,
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub max_uses: Option<i64>,
    /// RFC 3339 instant.
    #[serde(default)]
    pub expires: Option<String>,
    /// Absent: `true` for a new item; an existing item keeps its own (deactivating is
    /// never undone by an import that does not say so).
    #[serde(default)]
    pub is_active: Option<bool>,
    /// The billing cycles it applies to (`["monthly"]` for a "first month for 1.00"
    /// coupon); absent: every cycle. An order on another cycle is refused with the coupon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TldSpec {
    pub tld: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "yes")]
    pub register_open: bool,
    #[serde(default = "yes")]
    pub transfer_open: bool,
    #[serde(default)]
    pub min_years: Option<i64>,
    #[serde(default)]
    pub max_years: Option<i64>,
    /// Absent: `true` for a new item; an existing item keeps its own (deactivating is
    /// never undone by an import that does not say so).
    #[serde(default)]
    pub is_active: Option<bool>,
    pub prices: Vec<TldPriceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TldPriceSpec {
    pub years: i64,
    pub register: String,
    pub renew: String,
    pub transfer: String,
}
