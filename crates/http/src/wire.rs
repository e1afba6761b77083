//! `/v1` wire shapes (OnetSolutions-compatible) and their conversion from Lodge's types.
//! Money is a two-decimal string here; timestamps RFC 3339 UTC.

use lodge_core::{Currency, Money};
use lodge_services::catalog::{Catalog, Plan, Tld};
use lodge_services::model::{
    ApiKeyRow, DomainRow, GroupRow, HistoryRow, HostingRow, InvoiceRow, LedgerRow, LineRow, OrgRow,
    PaymentRow, ProjectRow, ServerRow,
};
use lodge_services::queries::HostingView;
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
    /// Account credit (Lodge addition), a decimal string; absent for a guest, which does
    /// not see the organization's billing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_balance: Option<String>,
}

impl Organization {
    /// The organization as its member sees it: a guest, which sees neither the
    /// organization's billing nor its account, gets its billing details blank and no credit
    /// (found by the attacker's audit: `/apiv2/account` refused them, `/v1` showed them).
    pub fn from_row(o: OrgRow) -> Self {
        let cur = Currency::parse(&o.currency).unwrap_or(Currency::USD);
        let guest = o.member_role.as_deref() == Some("guest");
        let billing = |s: String| if guest { String::new() } else { s };
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
            company_name: billing(o.company_name),
            address_1: billing(o.address_1),
            address_2: billing(o.address_2),
            city: billing(o.city),
            state: billing(o.state),
            postcode: billing(o.postcode),
            country: billing(o.country),
            phone: billing(o.phone),
            vat_number: billing(o.vat_number),
            is_active: o.is_active == 1,
            credit_balance: (!guest).then(|| money_str(o.credit_balance_minor, cur)),
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
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
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
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
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
    #[schema(format = DateTime)]
    pub expires: Option<String>,
    pub last_used: Option<String>,
    pub revoked: Option<String>,
    pub is_active: bool,
    #[schema(format = DateTime)]
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

/// A money amount as a JSON number with exactly its currency's decimals (`12.50`), written
/// from the integer, never through a float.
pub fn money_number(minor: i64, cur: Currency) -> Box<serde_json::value::RawValue> {
    // A decimal string such as "12.50" or "-0.50" is always a valid JSON number.
    serde_json::value::RawValue::from_string(Money::new(minor, cur).format_decimal())
        .unwrap_or_default()
}

/// Like [`money_number`], but a whole amount is written as an integer (`36`, `54.5` stays
/// `54.50`), as InterServer's offer costs are.
pub fn money_number_compact(minor: i64, cur: Currency) -> Box<serde_json::value::RawValue> {
    let unit = 10_i64.pow(cur.minor_units());
    if minor % unit == 0 {
        serde_json::value::RawValue::from_string((minor / unit).to_string()).unwrap_or_default()
    } else {
        money_number(minor, cur)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancellation {
    /// `immediate` or `end_of_period`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    #[schema(format = DateTime)]
    pub requested: Option<String>,
    #[schema(format = Date)]
    pub effective_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub ns1: String,
    pub ns2: String,
    pub is_active: bool,
}

impl From<&ServerRow> for ServerInfo {
    fn from(s: &ServerRow) -> Self {
        ServerInfo {
            id: s.id.to_string(),
            name: s.name.clone(),
            hostname: s.hostname.clone(),
            ns1: s.ns1.clone(),
            ns2: s.ns2.clone(),
            is_active: s.is_active == 1,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub from_status: Option<String>,
    pub to_status: String,
    pub note: String,
    pub actor: String,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Hosting {
    pub id: String,
    pub legacy_id: i64,
    pub organization_id: String,
    pub project_id: String,
    pub project_name: String,
    /// The domain name the account serves.
    pub domain: String,
    pub plan: Option<HostingPlan>,
    pub server: Option<ServerInfo>,
    pub website_preview: Option<String>,
    /// `pending`, `provisioning`, `active`, `suspended`, `terminated`, `failed`, `cancelled`.
    pub status: String,
    pub billing_cycle: String,
    /// The recurring charge per renewal, a decimal string.
    pub price: String,
    #[schema(format = Date)]
    pub next_due_date: Option<String>,
    pub username: Option<String>,
    pub cancellation: Option<Cancellation>,
    /// That the last step on the account failed, when it did (Lodge addition; the
    /// server's own words are shown to staff only).
    pub last_error: Option<String>,
    /// A one-time link into the account's control panel (detail of a live account on a
    /// DirectAdmin, cPanel or Plesk server, for a caller who may change it; Lodge addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// The site's TLS certificate from the ACME CA (detail of an account on an nginx
    /// server when ACME is configured; Lodge addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCertificate>,
    /// Status changes, oldest first (Lodge addition; on the detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub modified: String,
}

/// A hosting account's TLS certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct TlsCertificate {
    /// `pending` (being issued), `issued` (installed), `failed` (the last attempt failed;
    /// retried), `removed` (the account was terminated).
    pub status: String,
    /// When the installed certificate expires (renewed 30 days before).
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Why the last attempt failed (kept while an installed certificate still serves).
    pub error: Option<String>,
}

impl From<lodge_services::tls::CertificateStatus> for TlsCertificate {
    fn from(c: lodge_services::tls::CertificateStatus) -> Self {
        TlsCertificate {
            status: c.status,
            expires_at: ts_opt(c.not_after),
            error: c.error,
        }
    }
}

/// What a customer is told of a failed step on its account.
pub const CUSTOMER_ERROR: &str =
    "The server could not complete the last step on this account; our staff can see why and will retry it.";

impl Hosting {
    /// A hosting account as the services show it: with its server, and its history on the
    /// detail.
    pub fn from_view(v: HostingView, catalog: &Catalog) -> Self {
        let server = v.server.as_ref().map(ServerInfo::from);
        let mut view = Hosting::new(v.hosting, catalog, v.history);
        view.server = server;
        view
    }

    /// The account as its customer sees it: a failure is said, not told. The panel's or
    /// the server's own words (another customer's account and domain on a shared panel,
    /// server paths, a command's output) are for staff, who see them on
    /// `/v1/admin/hosting/{id}` (found by the panels audit).
    pub fn for_customer(mut self) -> Self {
        if self.last_error.is_some() {
            self.last_error = Some(CUSTOMER_ERROR.to_owned());
        }
        for h in self.history.iter_mut().flatten() {
            if h.actor.starts_with("job:") {
                h.note = CUSTOMER_ERROR.to_owned();
            }
            // Which staff member acted is for staff: a customer sees `staff` (found by the
            // secrets audit: a staff user's id, the subject of its login tokens, was shown).
            if h.actor.starts_with("staff:") {
                h.actor = "staff".to_owned();
            }
        }
        self
    }

    pub fn new(h: HostingRow, catalog: &Catalog, history: Option<Vec<HistoryRow>>) -> Self {
        let cur = Currency::parse(&h.currency).unwrap_or(catalog.currency);
        Hosting {
            id: h.id.to_string(),
            legacy_id: h.legacy_id,
            organization_id: h.organization_id.to_string(),
            project_id: h.project_id.to_string(),
            project_name: h.project_name,
            domain: h.domain_name,
            plan: catalog.plan(h.plan_id).map(HostingPlan::from),
            server: None,
            website_preview: None,
            status: h.status.as_str().to_owned(),
            billing_cycle: h.billing_cycle,
            price: money_str(h.recurring_minor, cur),
            next_due_date: h.next_due_date,
            username: h.username,
            cancellation: h.cancel_type.map(|kind| Cancellation {
                kind,
                reason: h.cancel_reason.unwrap_or_default(),
                requested: ts_opt(h.cancel_requested_at),
                effective_date: h.cancel_effective_date,
            }),
            last_error: h.last_error,
            login_url: None,
            tls: None,
            history: history.map(|rows| {
                rows.into_iter()
                    .map(|r| HistoryEntry {
                        from_status: r.from_status,
                        to_status: r.to_status,
                        note: r.note,
                        actor: r.actor,
                        at: ts(r.created_at),
                    })
                    .collect()
            }),
            created: ts(h.created_at),
            modified: ts(h.modified_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Domain {
    pub id: String,
    pub legacy_id: i64,
    pub name: String,
    pub sld: String,
    pub tld: String,
    pub tld_info: Option<TldInfo>,
    /// `pending_registration`, `pending_transfer`, `active`, `expired`, `transferred_away`,
    /// `cancelled`.
    pub status: String,
    /// When the registry created it (`YYYY-MM-DD`); null until it is active.
    #[schema(format = Date)]
    pub registration_date: Option<String>,
    /// When its registration runs out at the registry (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub expiration_date: Option<String>,
    pub auto_renew: bool,
    pub is_locked: bool,
    pub nameservers: Vec<String>,
    /// When its renewal is billed (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub next_billing_date: Option<String>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub modified: String,
}

impl Domain {
    pub fn new(d: DomainRow, catalog: &Catalog) -> Self {
        let tld_info = catalog
            .tlds
            .iter()
            .find(|t| t.row.tld == d.tld)
            .map(|t| TldInfo::new(t, catalog.currency));
        Domain {
            id: d.id.to_string(),
            legacy_id: d.legacy_id,
            name: d.name,
            sld: d.sld,
            tld: d.tld,
            tld_info,
            status: d.status.as_str().to_owned(),
            registration_date: d.registration_date,
            expiration_date: d.expiration_date,
            auto_renew: d.auto_renew == 1,
            is_locked: d.is_locked == 1,
            nameservers: serde_json::from_str(&d.nameservers).unwrap_or_default(),
            next_billing_date: d.next_billing_date,
            created: ts(d.created_at),
            modified: ts(d.modified_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLine {
    pub description: String,
    /// `plan`, `setup_fee`, `domain_registration`, `domain_transfer`, `domain_renewal`,
    /// `discount`, `adjustment`.
    pub kind: String,
    pub service_id: Option<String>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub amount: String,
    /// Tax rate in percent.
    pub tax_rate: String,
    pub tax: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    pub id: String,
    pub method: String,
    pub reference: String,
    pub amount: String,
    #[schema(format = DateTime)]
    pub created: String,
}

impl Payment {
    pub fn new(p: &PaymentRow) -> Self {
        let cur = Currency::parse(&p.currency).unwrap_or(Currency::USD);
        Payment {
            id: p.id.to_string(),
            method: p.method.clone(),
            reference: p.reference.clone(),
            amount: money_str(p.amount_minor, cur),
            created: ts(p.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invoice {
    pub id: i64,
    pub number: Option<String>,
    /// `first` (of an order), `renewal`, `manual`.
    pub kind: String,
    /// `draft`, `unpaid`, `paid`, `partially_refunded`, `refunded`, `cancelled`.
    pub status: String,
    pub order_id: Option<i64>,
    pub currency: String,
    pub subtotal: String,
    pub tax: String,
    pub total: String,
    pub credit_applied: String,
    pub amount_paid: String,
    /// Refunded so far (to account credit or in cash).
    pub amount_refunded: String,
    pub amount_due: String,
    #[schema(format = Date)]
    pub due_date: String,
    pub issued: String,
    pub paid: Option<String>,
    /// The hosted payment page while something is due.
    pub payment_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<InvoiceLine>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments: Option<Vec<Payment>>,
    /// Why the last card payment of this unpaid invoice failed (the detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_payment_failure: Option<String>,
}

impl Invoice {
    /// The invoice as `/v1` shows it; its payment link is derived with `tokens` (the
    /// database holds no token).
    pub fn new(
        i: &InvoiceRow,
        base_url: &str,
        tokens: &lodge_services::payment_tokens::PaymentTokens,
        detail: Option<(&[LineRow], &[PaymentRow])>,
    ) -> Self {
        let cur = Currency::parse(&i.currency).unwrap_or(Currency::USD);
        let m = |x: i64| money_str(x, cur);
        Invoice {
            id: i.id,
            number: i.number.clone(),
            kind: i.kind.as_str().to_owned(),
            status: i.status.as_str().to_owned(),
            order_id: i.order_id,
            currency: i.currency.clone(),
            subtotal: m(i.subtotal_minor),
            tax: m(i.tax_minor),
            total: m(i.total_minor),
            credit_applied: m(i.credit_applied_minor),
            amount_paid: m(i.paid_minor),
            amount_refunded: m(i.refunded_minor),
            amount_due: m(if i.status.is_payable() {
                i.amount_due()
            } else {
                0
            }),
            due_date: i.due_date.clone(),
            issued: ts(i.issued_at),
            paid: ts_opt(i.paid_at),
            payment_url: (i.status.is_payable() && i.amount_due() > 0)
                .then(|| payment_url(base_url, &tokens.of(i))),
            lines: detail.map(|(lines, _)| {
                lines
                    .iter()
                    .map(|l| InvoiceLine {
                        description: l.description.clone(),
                        kind: l.kind.clone(),
                        service_id: l.service_id.clone(),
                        period_start: l.period_start.clone(),
                        period_end: l.period_end.clone(),
                        amount: m(l.amount_minor),
                        tax_rate: format!("{}.{:02}", l.tax_rate_bp / 100, l.tax_rate_bp % 100),
                        tax: m(l.tax_minor),
                    })
                    .collect()
            }),
            payments: detail.map(|(_, p)| p.iter().map(Payment::new).collect()),
            card_payment_failure: None,
        }
    }
}

impl Invoice {
    /// An invoice with its lines, payments and last card failure, as one invoice's route
    /// answers it.
    pub fn detailed(
        d: lodge_services::billing::InvoiceDetail,
        base_url: &str,
        tokens: &lodge_services::payment_tokens::PaymentTokens,
    ) -> Self {
        let mut invoice = Invoice::new(&d.invoice, base_url, tokens, Some((&d.lines, &d.payments)));
        invoice.card_payment_failure = d.card_failure;
        invoice
    }
}

/// The hosted payment page of an invoice.
pub fn payment_url(base_url: &str, token: &str) -> String {
    format!("{base_url}/pay/{token}")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: i64,
    /// `deposit`, `applied`, `refund`, `adjustment`.
    pub kind: String,
    /// Signed: deposits positive, credit applied to invoices negative.
    pub amount: String,
    pub balance_after: String,
    pub invoice_id: Option<i64>,
    pub note: String,
    #[schema(format = DateTime)]
    pub created: String,
}

impl LedgerEntry {
    pub fn new(e: &LedgerRow) -> Self {
        let cur = Currency::parse(&e.currency).unwrap_or(Currency::USD);
        LedgerEntry {
            id: e.id,
            kind: e.kind.clone(),
            amount: money_str(e.amount_minor, cur),
            balance_after: money_str(e.balance_after_minor, cur),
            invoice_id: e.invoice_id,
            note: e.note.clone(),
            created: ts(e.created_at),
        }
    }
}
