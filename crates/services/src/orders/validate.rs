//! Validating an order: the form → a [`ValidOrder`], every field error at once, keyed by
//! `/v1` field names. Reads only (the catalog, the names already held, the registrar's
//! availability check); no writes.

use lodge_core::{BillingCycle, DomainId, DomainName, OrganizationId, PlanId};
use lodge_store::{hosting, orgs};

use super::{
    generate_password, price, DomainPlan, OrderForm, OrderSource, ValidOrder, SERVERS_FULL,
};
use crate::auth::Access;
use crate::catalog::{Catalog, Tld};
use crate::registrar::Availability;
use crate::{FieldCode, Lodge, Result, ServiceError, Validator};

/// The catalog TLD a name is registrable under (the longest matching suffix).
pub fn tld_for<'c>(catalog: &'c Catalog, name: &DomainName) -> Option<&'c Tld> {
    catalog
        .tlds
        .iter()
        .filter(|t| t.row.is_active == 1 && name.split_registrable(&t.row.tld).is_some())
        .max_by_key(|t| t.row.tld.len())
}

/// The sold TLD a name lies under at any depth (`blog.example.com` under `com`), for a
/// name [`tld_for`] does not find registrable.
pub(crate) fn under_sold_tld<'c>(catalog: &'c Catalog, name: &DomainName) -> Option<&'c str> {
    catalog
        .tlds
        .iter()
        .filter(|t| t.row.is_active == 1 && name.under(&t.row.tld).is_some())
        .map(|t| t.row.tld.trim_start_matches('.'))
        .max_by_key(|t| t.len())
}

/// When [`Lodge::validate_order`] reads what the database says of an order: whether a live
/// hosting account has its name, its organization's quotas, whether a server has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbChecks {
    /// Now: for a quote or a validation alone.
    Now,
    /// When the order is written, under its organization's lock and before its first
    /// write, where they are checked anyway (one read an order fewer); read now all the
    /// same when the form has other errors, so that every error is reported at once. For
    /// an order placed at once.
    AtWrite,
}

impl DbChecks {
    /// `Now` when the order has errors already (`errors`), so that every error is reported
    /// at once; else as asked.
    pub fn now_if(self, errors: bool) -> Self {
        if errors {
            DbChecks::Now
        } else {
            self
        }
    }
}

/// The refusal of a name a live hosting account already has.
pub(crate) fn name_taken(name: &str) -> String {
    format!("{name} is not available for a new hosting account.")
}

impl Lodge {
    /// Validates and prices an order without writing anything. Every field error is
    /// reported at once, keyed by `/v1` field names. `project` is the caller's, as read by
    /// its access check (a project of another organization is not found). `checks`: when
    /// what the database says of the order is read ([`DbChecks`]).
    pub async fn validate_order(
        &self,
        access: &Access,
        project: &orgs::ProjectRow,
        form: &OrderForm,
        source: OrderSource,
        checks: DbChecks,
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
        // A registrar that cannot answer makes the order 503 (retry later) when nothing
        // else is wrong with it; otherwise its 400 says so beside the other fields.
        let mut registrar_down = None;
        let domain = match self.validate_domain(&catalog, org, form, &mut v).await {
            Err(ServiceError::Unavailable(why)) => {
                registrar_down = Some(why);
                None
            }
            other => other?,
        };

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
                let plan_id = plan.map(|p| p.row.id.to_string());
                let mut found = catalog.coupon(code).cloned();
                // Orders count a coupon's uses without moving the catalog's version, so the
                // cached count of a limited coupon is stale: it is read now (a quote saying
                // a used-up coupon applies, and the order then refusing it, was found by the
                // customer audit). Its write checks the limit again, under concurrency, so
                // an order checked at its write reads it only to see whether a coupon the
                // cache says is used up has a use back.
                let now = checks.now_if(!v.is_empty()) == DbChecks::Now;
                let read_uses = |c: &lodge_store::catalog::CouponRow| {
                    c.max_uses.is_some_and(|max| now || c.uses >= max)
                };
                if let Some(c) = found.as_mut().filter(|c| read_uses(c)) {
                    let mut db = self.store.read_conn().await?;
                    if let Some(uses) = lodge_store::catalog::coupon_uses(&mut db, &c.id).await? {
                        c.uses = uses;
                    }
                }
                match found {
                    Some(c)
                        if price::coupon_terms(&c).usable(self.now_us(), plan_id.as_deref()) =>
                    {
                        if offer.as_ref().is_some_and(|o| o.allow_coupon == 0) {
                            v.add("coupon", "This offer cannot be combined with a coupon.");
                        }
                        // The period the first invoice bills: an offer's own (its first
                        // months, whatever the period asked), else the cycle's.
                        let billed = match &offer {
                            Some(o) => u32::try_from(o.intro_months)
                                .ok()
                                .and_then(BillingCycle::from_months)
                                .ok_or(o.intro_months),
                            None => cycle.ok_or(0),
                        };
                        let terms = price::coupon_terms(&c);
                        match billed {
                            Ok(cycle) if !terms.fits_cycle(cycle) => v.add(
                                "coupon",
                                format!("This coupon is not valid for the {cycle} cycle."),
                            ),
                            Err(months) if months > 0 && terms.cycles.is_some() => v.add(
                                "coupon",
                                format!("This coupon is not valid for a first period of {months} months."),
                            ),
                            _ => {}
                        }
                        Some(c)
                    }
                    _ => {
                        v.add("coupon", "Invalid coupon.");
                        None
                    }
                }
            }
        };
        // What the database says of the order, in one read: the name's live accounts, the
        // organization's quotas (checked again under its lock when the order is written)
        // and whether a server without a limit serves the plan. With `DbChecks::AtWrite`
        // and nothing else wrong, left to the write ([`super::write::refusal`]).
        let name = domain.as_ref().map(DomainPlan::name);
        let name_field = domain
            .as_ref()
            .map_or("domain_name", DomainPlan::name_field);
        // The sites above the name's, where another customer's site would hold it.
        let parents = match name.map(lodge_core::domain::parent_sites) {
            Some(None) => {
                v.add(
                    "domain_name",
                    format!(
                        "{} is a public suffix: no site can be hosted on it.",
                        name.unwrap_or_default()
                    ),
                );
                Vec::new()
            }
            Some(Some(parents)) => parents,
            None => Vec::new(),
        };
        // An external name under a domain another organization holds in Lodge is theirs to
        // host (a registered or transferred domain; for a new one the registration check
        // says so).
        let held = match &domain {
            Some(DomainPlan::External { name }) => {
                Some(lodge_core::domain::registrable_site(name.as_str()))
            }
            _ => None,
        };
        let mut unlimited_server = false;
        let at_write = checks.now_if(!v.is_empty()) == DbChecks::AtWrite;
        if at_write {
            // Read under the organization's lock when the order is written.
        } else if let Some(p) = plan {
            let mut db = self.store.read_conn().await?;
            let facts = orgs::order_facts(&mut db, org, name, held, &p.row.driver, p.row.id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            if facts.name_has_live_hosting
                || hosting::live_parent_elsewhere(&mut db, &parents, org).await?
            {
                v.add(name_field, name_taken(name.unwrap_or_default()));
            }
            for (field, code, message) in
                super::quotas::refusals(&mut db, org, facts.quotas, p, domain.as_ref()).await?
            {
                v.add_coded(field, code, message);
            }
            unlimited_server = facts.unlimited_server;
        } else if let Some(name) = name {
            let mut db = self.store.read_conn().await?;
            let held_elsewhere = match held {
                Some(h) => hosting::domain_held_elsewhere(&mut db, h, org).await?,
                None => false,
            };
            if held_elsewhere
                || hosting::live_hosting_for_name(&mut db, name).await?
                || hosting::live_parent_elsewhere(&mut db, &parents, org).await?
            {
                v.add(name_field, name_taken(name));
            }
        }

        if let Some(pw) = form.password.as_deref().map(str::trim) {
            // The account's panel password, held to the rule its change is (a panel refuses
            // a weak one, and the paid account would then fail to be created).
            if !pw.is_empty() && !crate::provisioning::panel_password_ok(pw) {
                v.add("password", crate::provisioning::PANEL_PASSWORD_RULE);
            }
        }
        // Kept with the order and shown to staff: refused, not cut or kept raw (found by
        // the security audit: escape sequences kept, 900,000 characters cut silently).
        if let Some(c) = form.comment.as_deref() {
            v.text("comment", c.trim(), 1000);
        }
        if let Some(p) = plan {
            if !at_write
                && !v.has("plan_id")
                && !unlimited_server
                && !self.has_room(&p.row.driver, p.row.id).await?
            {
                v.add_coded("plan_id", FieldCode::ServersFull, SERVERS_FULL);
            }
        }
        if let Some(why) = registrar_down {
            if v.is_empty() {
                return Err(ServiceError::Unavailable(why));
            }
            v.add("domain_name", why);
        }
        v.finish()?;
        let (Some(plan), Some(cycle), Some(price), Some(domain)) = (plan, cycle, price, domain)
        else {
            return Err(ServiceError::Internal(
                "validation passed without a plan".into(),
            ));
        };

        let quote = price::quote(
            &plan.row.name,
            &price,
            cycle,
            plan.monthly(),
            &domain,
            offer.as_ref(),
            coupon.as_ref(),
        );
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
                .to_owned(),
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
        // DRF's `max_length` counts characters, not UTF-8 bytes (found by the v1 audit: a
        // valid name in a non-Latin script was refused); the ASCII form's octets are
        // checked by the parse below.
        if name_given.is_some_and(|n| n.chars().count() > 253) {
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
                        Some(e) if e.chars().count() > 255 => v.add(
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
                    let message = match under_sold_tld(catalog, &name) {
                        // `blog.example.com`: a name inside a domain, not a domain.
                        Some(tld) => format!(
                            "{name} is not a registrable name: a domain here is one label \
                             before .{tld}."
                        ),
                        None => format!("The extension of {name} is not sold here."),
                    };
                    v.add("domain_name", message);
                    return Ok(None);
                };
                if name.split_registrable(&tld.row.tld).is_none() {
                    v.add("domain_name", format!("{name} is not a registrable name."));
                    return Ok(None);
                }
                if registering {
                    if let Some(why) = name.registration_problem() {
                        v.add(
                            "domain_name",
                            format!("{name} cannot be registered: {why}."),
                        );
                        return Ok(None);
                    }
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
                    // Held in Lodge (by this organization or another: which is not said).
                    let what = if registering {
                        "registration"
                    } else {
                        "transfer"
                    };
                    v.add(
                        "domain_name",
                        format!(
                            "{name} is not available for {what}. If it is already in your account, order it as an existing domain."
                        ),
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
                            return Err(ServiceError::Unavailable(
                                crate::registrar::CHECK_UNAVAILABLE.into(),
                            ));
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
}
