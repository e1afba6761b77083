//! Placing an order: the one use case both dialects call. Validation and pricing first (no
//! writes), then one transaction writes the order, invoice and lines, hosting account,
//! domain, applies account credit and — when nothing is left due — activates the order and
//! enqueues provisioning. Any failure leaves nothing behind.

use lodge_core::pricing::{self, CouponKind, LineKind, Offer, Quote, QuoteInput};
use lodge_core::{
    BillingCycle, DomainId, DomainName, DomainStatus, HostingId, HostingStatus, InvoiceKind,
    OrderStatus, OrderUuid, OrganizationId, PlanId, ProjectId,
};
use lodge_store::catalog::{CouponRow, OfferRow};
use lodge_store::hosting::DomainRow;
use lodge_store::{billing, hosting, orgs, Conflict, StoreError};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::sync::Arc;

use crate::auth::Access;
use crate::catalog::{Catalog, Plan, Tld};
use crate::idempotency::IdempotencyKey;
use crate::registrar::Availability;
use crate::{FieldCode, Lodge, Result, ServiceError, Validator};

/// Which dialect placed the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSource {
    V1,
    Apiv2,
}

impl OrderSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSource::V1 => "v1",
            OrderSource::Apiv2 => "apiv2",
        }
    }
}

/// An order as received, before validation. Field names follow `/v1`; `/apiv2` fills the
/// same form (plan by legacy id, offer, coupon, password).
#[derive(Debug, Clone, Default)]
pub struct OrderForm {
    pub plan_id: Option<String>,
    pub plan_legacy_id: Option<i64>,
    pub domain_source: Option<String>,
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub epp_code: Option<String>,
    pub billing_cycle: Option<String>,
    pub offer_legacy_id: Option<i64>,
    pub coupon: Option<String>,
    pub password: Option<String>,
    /// A free-form note kept on the hosting account (`/apiv2` `comment`).
    pub comment: Option<String>,
}

/// Where the order's domain comes from.
#[derive(Debug, Clone)]
pub enum DomainPlan {
    Register {
        name: DomainName,
        tld: String,
        price_minor: i64,
    },
    Transfer {
        name: DomainName,
        tld: String,
        epp_code: String,
        price_minor: i64,
    },
    Existing {
        row: Box<DomainRow>,
    },
    External {
        name: DomainName,
    },
}

impl ValidOrder {
    /// The cycle the account renews on: an offer's renewal frequency, else the chosen one.
    pub fn hosting_cycle(&self) -> BillingCycle {
        self.offer
            .as_ref()
            .and_then(|o| BillingCycle::from_months(months_u32(o.renewal_months)))
            .unwrap_or(self.cycle)
    }
}

impl DomainPlan {
    /// The name the hosting account serves (ASCII form).
    pub fn name(&self) -> &str {
        match self {
            DomainPlan::Register { name, .. }
            | DomainPlan::Transfer { name, .. }
            | DomainPlan::External { name } => name.as_str(),
            DomainPlan::Existing { row } => &row.name,
        }
    }
}

/// A validated, priced order, ready to place (or to show as a quote).
#[derive(Debug, Clone)]
pub struct ValidOrder {
    pub organization: OrganizationId,
    pub project: ProjectId,
    pub plan: Plan,
    pub cycle: BillingCycle,
    pub domain: DomainPlan,
    pub offer: Option<OfferRow>,
    pub coupon: Option<CouponRow>,
    /// The first invoice, as priced.
    pub quote: Quote,
    /// The hosting account's password: given, or generated when blank.
    pub password: Option<String>,
    pub comment: String,
    pub source: OrderSource,
    /// The caller's `Idempotency-Key`, claimed in the order's own transaction before its
    /// first write, its outcome stored before it commits ([`crate::idempotency`]).
    pub idempotency: Option<Arc<IdempotencyKey>>,
}

/// What placing an order produced (stored as the answer of its `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderOutcome {
    pub order_id: i64,
    pub order_number: String,
    pub local_order_id: OrderUuid,
    pub invoice_id: Option<i64>,
    pub total_minor: i64,
    pub amount_due_minor: i64,
    pub credit_applied_minor: i64,
    pub status: OrderStatus,
    pub payment_token: Option<String>,
    pub hosting_id: HostingId,
    pub hosting_legacy_id: i64,
    pub hosting_status: HostingStatus,
    pub domain_id: Option<DomainId>,
    pub domain_name: String,
}

/// Why an order cannot be placed when no server has room (InterServer's wording).
pub const SERVERS_FULL: &str = "All webhosting servers are currently full.";

/// The display number of an order.
pub fn order_number(id: i64) -> String {
    format!("ORD-{id:06}")
}

pub(crate) fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// An invoice's payment token: the time it was made (microseconds, 11 base-36 digits, so
/// tokens sort in the order they were made, on SQLite's byte order and PostgreSQL's
/// collations alike) and 32 random letters and digits (190 bits). The unique index on
/// tokens then grows at its end, as the other indexes of an order do, instead of at a
/// random leaf page per order, and a group commit writes one page for it, not one per
/// order. That an invoice was issued at that moment is not a secret of its payer's.
pub(crate) fn new_payment_token(now_us: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut t = u64::try_from(now_us).unwrap_or(0);
    let mut time = [b'0'; 11];
    for d in time.iter_mut().rev() {
        *d = DIGITS[(t % 36) as usize];
        t /= 36;
    }
    let mut token: String = time.iter().map(|&b| char::from(b)).collect();
    token.push_str(&random_token(32));
    token
}

/// A password for a hosting account when the customer left it blank.
pub fn generate_password() -> String {
    random_token(20)
}

/// The catalog TLD a name is registrable under (the longest matching suffix).
pub fn tld_for<'c>(catalog: &'c Catalog, name: &DomainName) -> Option<&'c Tld> {
    catalog
        .tlds
        .iter()
        .filter(|t| t.row.is_active == 1 && name.split_registrable(&t.row.tld).is_some())
        .max_by_key(|t| t.row.tld.len())
}

fn coupon_kind(c: &CouponRow) -> CouponKind {
    match c.kind {
        1 => CouponKind::Percent {
            basis_points: c.value,
        },
        2 => CouponKind::FixedAmount { minor: c.value },
        _ => CouponKind::FixedPrice { minor: c.value },
    }
}

fn months_u32(m: i64) -> u32 {
    u32::try_from(m).unwrap_or(0)
}

impl Lodge {
    /// Validates and prices an order without writing anything. Every field error is
    /// reported at once, keyed by `/v1` field names. `project` is the caller's, as read by
    /// its access check (a project of another organization is not found).
    pub async fn validate_order(
        &self,
        access: &Access,
        project: &orgs::ProjectRow,
        form: &OrderForm,
        source: OrderSource,
    ) -> Result<ValidOrder> {
        access.require_write()?;
        let org = access.organization;
        if project.organization_id != org {
            return Err(ServiceError::NotFound);
        }
        let catalog = self.catalog().await?;
        let mut v = Validator::new();

        // The plan and its cycle.
        let plan = match (&form.plan_id, form.plan_legacy_id) {
            (Some(id), _) => match id.parse::<PlanId>() {
                Ok(id) => catalog.plan(id),
                Err(_) => {
                    v.add("plan_id", "Must be a valid UUID.");
                    None
                }
            },
            (None, Some(legacy)) => catalog.plan_by_legacy(legacy),
            (None, None) => {
                v.required("plan_id");
                None
            }
        };
        let plan = match plan {
            Some(p) if p.orderable() => Some(p),
            Some(_) => {
                v.add("plan_id", "This plan is not available for ordering.");
                None
            }
            None => {
                if !v.has("plan_id") {
                    v.add("plan_id", "No such plan.");
                }
                None
            }
        };
        let cycle = match form
            .billing_cycle
            .as_deref()
            .unwrap_or("monthly")
            .parse::<BillingCycle>()
        {
            Ok(c) => Some(c),
            Err(_) => {
                v.add(
                    "billing_cycle",
                    "Must be one of free, one_time, monthly, quarterly, semi_annually, annually, biennially, triennially.",
                );
                None
            }
        };
        let price = match (plan, cycle) {
            (Some(p), Some(c)) => match p.price(c) {
                Some(pr) => Some(pr.clone()),
                None => {
                    v.add(
                        "billing_cycle",
                        format!("The plan {:?} is not sold with the {c} cycle.", p.row.name),
                    );
                    None
                }
            },
            _ => None,
        };

        // The domain.
        let domain = self.validate_domain(&catalog, org, form, &mut v).await?;
        if let Some(d) = &domain {
            let mut db = self.store.read_conn().await?;
            if hosting::live_hosting_for_name(&mut db, d.name()).await? {
                v.add(
                    "domain_name",
                    format!("{} already has a hosting account.", d.name()),
                );
            }
        }

        // Offer and coupon (the /apiv2 form).
        let offer = match (form.offer_legacy_id, plan) {
            (None | Some(0), _) => None,
            (Some(legacy), Some(p)) => {
                let o = catalog
                    .offers_for(p.row.id)
                    .find(|o| o.legacy_id == legacy)
                    .cloned();
                if o.is_none() {
                    v.add("offer", "No such offer for this plan.");
                }
                o
            }
            (Some(_), None) => None,
        };
        let coupon = match form.coupon.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(code) => {
                let now = self.now_us();
                match catalog.coupon(code) {
                    Some(c)
                        if c.is_active == 1
                            && c.expires_at.is_none_or(|e| e > now)
                            && c.max_uses.is_none_or(|m| c.uses < m)
                            && (c.plan_id.is_none()
                                || plan.is_some_and(|p| {
                                    c.plan_id.as_deref() == Some(&p.row.id.to_string())
                                })) =>
                    {
                        if offer.as_ref().is_some_and(|o| o.allow_coupon == 0) {
                            v.add("coupon", "This offer cannot be combined with a coupon.");
                        }
                        Some(c.clone())
                    }
                    _ => {
                        v.add("coupon", "Invalid coupon.");
                        None
                    }
                }
            }
        };
        if let Some(p) = plan {
            if !v.has("plan_id") && !self.has_room(&p.row.driver, p.row.id).await? {
                v.add_coded("plan_id", FieldCode::ServersFull, SERVERS_FULL);
            }
        }
        v.finish()?;
        let (Some(plan), Some(cycle), Some(price), Some(domain)) = (plan, cycle, price, domain)
        else {
            return Err(ServiceError::Internal(
                "validation passed without a plan".into(),
            ));
        };

        let domain_line = match &domain {
            DomainPlan::Register {
                name, price_minor, ..
            } => Some((
                LineKind::DomainRegistration,
                format!("Domain registration: {name} (1 year)"),
                *price_minor,
            )),
            DomainPlan::Transfer {
                name, price_minor, ..
            } => Some((
                LineKind::DomainTransfer,
                format!("Domain transfer: {name} (1 year)"),
                *price_minor,
            )),
            _ => None,
        };
        let input = QuoteInput {
            plan_name: format!("{} ({})", plan.row.name, domain.name()),
            cycle_price_minor: Some(price.price.minor()),
            months: cycle.months(),
            monthly_price_minor: plan.monthly().map(|m| m.price.minor()),
            setup_fee_minor: price.setup_fee.minor(),
            offer: offer.as_ref().map(|o| Offer {
                intro_total_minor: o.intro_total_minor,
                intro_months: months_u32(o.intro_months),
                renewal_minor: o.renewal_minor,
                renewal_months: months_u32(o.renewal_months),
            }),
            coupon: coupon.as_ref().map(|c| (coupon_kind(c), c.recurring == 1)),
            domain: domain_line,
        };
        let quote = pricing::quote(&input);
        let password = match form.password.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => Some(p.to_owned()),
            _ if source == OrderSource::Apiv2 => Some(generate_password()),
            _ => None,
        };
        Ok(ValidOrder {
            organization: org,
            project: project.id,
            plan: plan.clone(),
            cycle,
            domain,
            offer,
            coupon,
            quote,
            password,
            comment: form
                .comment
                .as_deref()
                .map(str::trim)
                .unwrap_or("")
                .chars()
                .take(1000)
                .collect(),
            idempotency: None,
            source,
        })
    }

    async fn validate_domain(
        &self,
        catalog: &Catalog,
        org: OrganizationId,
        form: &OrderForm,
        v: &mut Validator,
    ) -> Result<Option<DomainPlan>> {
        let Some(source) = form.domain_source.as_deref() else {
            v.required("domain_source");
            return Ok(None);
        };
        if !["register", "transfer", "existing", "external"].contains(&source) {
            v.add(
                "domain_source",
                format!(
                    "\"{source}\" is not a valid choice: register, transfer, existing or external."
                ),
            );
            return Ok(None);
        }
        let name_given = form
            .domain_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if name_given.is_some_and(|n| n.len() > 253) {
            v.add(
                "domain_name",
                "Ensure this field has no more than 253 characters.",
            );
            return Ok(None);
        }
        let parse_name = |v: &mut Validator| -> Option<DomainName> {
            match name_given {
                None => {
                    v.required("domain_name");
                    None
                }
                Some(n) => match DomainName::parse(n) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        v.add_coded(
                            "domain_name",
                            FieldCode::InvalidDomain,
                            format!("Enter a valid domain name: {e}."),
                        );
                        None
                    }
                },
            }
        };
        match source {
            "register" | "transfer" => {
                let registering = source == "register";
                let epp = form
                    .epp_code
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                if !registering {
                    match epp {
                        None => v.add("epp_code", "This field is required for a transfer."),
                        Some(e) if e.len() > 255 => v.add(
                            "epp_code",
                            "Ensure this field has no more than 255 characters.",
                        ),
                        _ => {}
                    }
                }
                let Some(name) = parse_name(v) else {
                    return Ok(None);
                };
                let Some(registrar) = &self.registrar else {
                    v.add(
                        "domain_source",
                        "Domain registration and transfer are not available.",
                    );
                    return Ok(None);
                };
                let Some(tld) = tld_for(catalog, &name) else {
                    v.add(
                        "domain_name",
                        format!("The extension of {name} is not sold here."),
                    );
                    return Ok(None);
                };
                if name.split_registrable(&tld.row.tld).is_none() {
                    v.add("domain_name", format!("{name} is not a registrable name."));
                    return Ok(None);
                }
                let open = if registering {
                    tld.row.register_open == 1
                } else {
                    tld.row.transfer_open == 1
                };
                if !open {
                    v.add(
                        "domain_name",
                        format!(
                            "{} of .{} domains is closed.",
                            if registering {
                                "Registration"
                            } else {
                                "Transfer"
                            },
                            tld.row.tld
                        ),
                    );
                    return Ok(None);
                }
                let Some(p) = tld.price_for_years(1) else {
                    v.add(
                        "domain_name",
                        format!(".{} has no one-year price.", tld.row.tld),
                    );
                    return Ok(None);
                };
                // The read connection goes back before the registrar is asked.
                let held = {
                    let mut db = self.store.read_conn().await?;
                    hosting::live_domain_for_name(&mut db, name.as_str()).await?
                };
                if held {
                    v.add(
                        "domain_name",
                        format!("{name} is already registered in Lodge."),
                    );
                    return Ok(None);
                }
                if registering {
                    match registrar.check(&name).await {
                        Ok(Availability::Unavailable) => {
                            v.add(
                                "domain_name",
                                format!("{name} is not available for registration."),
                            );
                            return Ok(None);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "registrar availability check failed");
                            v.add(
                                "domain_name",
                                "The registrar could not check this name; try again later.",
                            );
                            return Ok(None);
                        }
                    }
                    Ok(Some(DomainPlan::Register {
                        tld: tld.row.tld.clone(),
                        price_minor: p.register_minor,
                        name,
                    }))
                } else {
                    let Some(epp) = epp else { return Ok(None) };
                    Ok(Some(DomainPlan::Transfer {
                        tld: tld.row.tld.clone(),
                        price_minor: p.transfer_minor,
                        epp_code: epp.to_owned(),
                        name,
                    }))
                }
            }
            "existing" => {
                let Some(id) = form
                    .domain_id
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                else {
                    v.add(
                        "domain_id",
                        "This field is required when domain_source is existing.",
                    );
                    return Ok(None);
                };
                let row = match id.parse::<DomainId>() {
                    Ok(id) => hosting::domain(self.store.reader(), id)
                        .await?
                        .filter(|d| d.organization_id == org),
                    Err(_) => {
                        v.add("domain_id", "Must be a valid UUID.");
                        return Ok(None);
                    }
                };
                let Some(row) = row else {
                    v.add("domain_id", "No such domain in this organization.");
                    return Ok(None);
                };
                if !row.status.is_live() {
                    v.add("domain_id", format!("This domain is {}.", row.status));
                    return Ok(None);
                }
                if let Some(n) = name_given {
                    match DomainName::parse(n) {
                        Ok(d) if d.as_str() == row.name => {}
                        _ => {
                            v.add(
                                "domain_name",
                                "Does not match the domain given by domain_id.",
                            );
                            return Ok(None);
                        }
                    }
                }
                Ok(Some(DomainPlan::Existing { row: Box::new(row) }))
            }
            _ => Ok(parse_name(v).map(|name| DomainPlan::External { name })),
        }
    }

    /// Places a validated order: in a group commit shared with the orders waiting at the
    /// same moment, all-or-nothing on its own ([`crate::commit`]).
    pub async fn place_order(&self, order: &ValidOrder, actor: &str) -> Result<OrderOutcome> {
        if let Some(b) = &self.batcher {
            return b.place(self, order, actor).await;
        }
        // No committer (no runtime at start, or an in-memory database): a batch of one.
        let collisions = std::sync::atomic::AtomicU64::new(0);
        crate::commit::commit_on_pool(&self.store, &[(self, order, actor)], &collisions)
            .await?
            .pop()
            .ok_or_else(|| ServiceError::Internal("the order was not placed".into()))?
    }

    /// The writes of an order, on a connection inside a transaction (so a batch of orders can
    /// share one commit). The credit to apply is known first (under the organization's row
    /// lock), so every row is written once in its final state: an order that owes nothing is
    /// written active, its invoice paid and its account provisioning, with the jobs queued.
    ///
    /// The invoice is left for the caller to number ([`billing::number_invoices`]) before
    /// the commit: a group commit numbers all its invoices at once.
    pub async fn place_order_in<C: lodge_store::SqlConn>(
        &self,
        conn: &mut C,
        o: &ValidOrder,
        actor: &str,
    ) -> Result<OrderOutcome> {
        let now = self.now_us();
        let today = self.today();
        let cur = self.settings.currency.code();
        let total = o.quote.total_minor;
        // The key first, so a second request with it stops before any other write.
        if let Some(k) = &o.idempotency {
            self.claim_key_in(conn, k).await?;
        }
        // A free order with nothing billed has no invoice.
        let billed = !(o.cycle == BillingCycle::Free && total == 0);
        let credit = if billed && total > 0 {
            let balance = billing::lock_credit(conn, o.organization)
                .await?
                .ok_or(ServiceError::NotFound)?;
            balance.clamp(0, total)
        } else {
            0
        };
        let due = total - credit;
        let paid = due == 0;

        let order_uuid = OrderUuid::new();
        let order_id = billing::insert_order(
            conn,
            &billing::NewOrder {
                uuid: order_uuid,
                organization_id: o.organization,
                project_id: o.project,
                status: if paid {
                    OrderStatus::Active
                } else {
                    OrderStatus::Pending
                },
                source: o.source.as_str(),
                currency: cur,
                coupon_id: o.coupon.as_ref().map(|c| c.id.to_string()),
                actor,
                now,
            },
        )
        .await?;

        // The domain object (register / transfer), or the one the customer already holds.
        let (domain_id, domain_job) = match &o.domain {
            DomainPlan::Register { name, tld, .. } | DomainPlan::Transfer { name, tld, .. } => {
                let id = DomainId::new();
                let (status, epp, job) = match &o.domain {
                    DomainPlan::Transfer { epp_code, .. } => (
                        DomainStatus::PendingTransfer,
                        Some(self.sealer.seal(epp_code)?),
                        crate::billing::JOB_TRANSFER_DOMAIN,
                    ),
                    _ => (
                        DomainStatus::PendingRegistration,
                        None,
                        crate::billing::JOB_REGISTER_DOMAIN,
                    ),
                };
                let sld = name.split_registrable(tld).unwrap_or_else(|| name.sld());
                hosting::insert_domain(
                    conn,
                    &hosting::NewDomain {
                        id,
                        organization_id: o.organization,
                        project_id: o.project,
                        order_id: Some(order_id),
                        name: name.as_str(),
                        sld,
                        tld,
                        status,
                        registrar: self.registrar.as_ref().map_or("none", |r| r.name()),
                        epp_code: epp.as_deref(),
                        now,
                    },
                )
                .await
                .map_err(|e| {
                    if matches!(e, StoreError::Conflict(Conflict::LiveDomainName)) {
                        ServiceError::field(
                            "domain_name",
                            format!("{name} is already registered in Lodge."),
                        )
                    } else {
                        e.into()
                    }
                })?;
                (Some(id), Some(job))
            }
            DomainPlan::Existing { row } => (Some(row.id), None),
            DomainPlan::External { .. } => (None, None),
        };

        let server = lodge_store::servers::place_in(conn, &o.plan.row.driver, o.plan.row.id)
            .await?
            .ok_or_else(|| {
                ServiceError::field_coded("plan_id", FieldCode::ServersFull, SERVERS_FULL)
            })?;
        let hosting_id = HostingId::new();
        // The first period starts on the day it is paid.
        let period_end = o
            .quote
            .first_period_months
            .map(|m| lodge_core::dates::add_months(today, m).to_string());
        let hosting_status = if paid {
            HostingStatus::Provisioning
        } else {
            HostingStatus::Pending
        };
        let legacy_id = hosting::insert_hosting(
            conn,
            &hosting::NewHosting {
                id: hosting_id,
                organization_id: o.organization,
                project_id: o.project,
                order_id,
                plan_id: o.plan.row.id,
                domain_name: o.domain.name(),
                domain_id,
                status: hosting_status,
                billing_cycle: o.hosting_cycle().as_str(),
                recurring_minor: o.quote.renewal_minor.unwrap_or(0),
                first_period_months: o.quote.first_period_months.map(i64::from),
                renewal_months: o.quote.renewal_months.map(i64::from),
                currency: cur,
                coupon_id: o.coupon.as_ref().map(|c| c.id.to_string()),
                secret: o
                    .password
                    .as_deref()
                    .map(|p| self.sealer.seal(p))
                    .transpose()?,
                comment: &o.comment,
                server_id: Some(server.to_string()),
                next_due_date: if paid { period_end.clone() } else { None },
                note: if paid { "ordered and paid" } else { "ordered" },
                actor,
                now,
            },
        )
        .await
        .map_err(|e| {
            if matches!(e, StoreError::Conflict(Conflict::LiveHostingName)) {
                ServiceError::field(
                    "domain_name",
                    format!("{} already has a hosting account.", o.domain.name()),
                )
            } else {
                e.into()
            }
        })?;

        if let Some(c) = &o.coupon {
            let used = lodge_store::catalog::use_coupon(conn, &c.id.to_string()).await?;
            if !used {
                return Err(ServiceError::field(
                    "coupon",
                    "This coupon has been used up.",
                ));
            }
        }

        let mut invoice_id = None;
        let mut payment_token = None;
        if billed {
            let token = new_payment_token(now);
            let id = billing::insert_invoice(
                conn,
                &billing::NewInvoice {
                    number: None,
                    organization_id: o.organization,
                    order_id: Some(order_id),
                    kind: InvoiceKind::First,
                    currency: cur,
                    subtotal_minor: total,
                    tax_minor: 0,
                    payment_token: &token,
                    due_date: &today.to_string(),
                    credit_applied_minor: credit,
                    paid,
                    now,
                },
            )
            .await?;
            let hosting_key = hosting_id.to_string();
            for (i, line) in o.quote.lines.iter().enumerate() {
                let (service, start, end) = match line.kind {
                    LineKind::Plan | LineKind::Discount | LineKind::SetupFee => (
                        Some(hosting_key.clone()),
                        Some(today.to_string()),
                        if line.kind == LineKind::Plan {
                            period_end.clone()
                        } else {
                            None
                        },
                    ),
                    LineKind::DomainRegistration | LineKind::DomainTransfer => (
                        domain_id.map(|d| d.to_string()),
                        Some(today.to_string()),
                        Some(lodge_core::dates::add_months(today, 12).to_string()),
                    ),
                };
                billing::insert_line(
                    conn,
                    id,
                    &billing::NewLine {
                        position: i64::try_from(i).unwrap_or(0),
                        kind: line.kind.as_str(),
                        description: &line.description,
                        service_id: service,
                        period_start: start,
                        period_end: end,
                        amount_minor: line.amount_minor,
                    },
                )
                .await?;
            }
            if credit > 0 {
                billing::append_ledger(
                    conn,
                    &billing::NewLedgerEntry {
                        organization_id: o.organization,
                        kind: "applied",
                        amount_minor: -credit,
                        currency: cur,
                        invoice_id: Some(id),
                        note: "Applied to invoice",
                        actor,
                        now,
                    },
                )
                .await?;
            }
            invoice_id = Some(id);
            payment_token = Some(token);
        }

        if paid {
            self.enqueue_order_jobs(conn, hosting_id, domain_id, domain_job)
                .await?;
        }
        let outcome = OrderOutcome {
            order_id,
            order_number: order_number(order_id),
            local_order_id: order_uuid,
            invoice_id,
            total_minor: total,
            amount_due_minor: due,
            credit_applied_minor: credit,
            status: if paid {
                OrderStatus::Active
            } else {
                OrderStatus::Pending
            },
            payment_token: if paid { None } else { payment_token },
            hosting_id,
            hosting_legacy_id: legacy_id,
            hosting_status,
            domain_id,
            domain_name: o.domain.name().to_owned(),
        };
        if let Some(k) = &o.idempotency {
            self.answer_key_in(conn, k, &outcome).await?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::new_payment_token as payment_token;
    use proptest::prelude::*;

    proptest! {
        /// A token made later sorts after one made earlier (byte order, as SQLite's index
        /// and PostgreSQL's collations order letters and digits of one case).
        #[test]
        fn payment_tokens_sort_by_the_time_they_were_made(a in 0i64..4_000_000_000_000_000, b in 0i64..4_000_000_000_000_000) {
            let (ta, tb) = (payment_token(a), payment_token(b));
            prop_assert_eq!(ta.len(), 43);
            prop_assert!(ta.bytes().all(|c| c.is_ascii_alphanumeric()));
            if a < b {
                prop_assert!(ta < tb, "{} !< {}", ta, tb);
            }
            prop_assert_eq!(ta[..11] == tb[..11], a == b);
        }
    }

    #[test]
    fn payment_tokens_made_at_the_same_moment_differ() {
        let now = 1_795_000_000_000_000;
        let a = payment_token(now);
        let b = payment_token(now);
        assert_eq!(a[..11], b[..11]);
        assert_ne!(a, b);
        assert_eq!(&payment_token(0)[..11], "00000000000");
    }
}
