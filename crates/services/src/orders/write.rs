//! Writing one order: its rows, on a connection inside a transaction (so a batch of orders
//! can share one commit), given a [`WriteCtx`] and nothing else it could wait on.

use lodge_core::pricing::LineKind;
use std::collections::{HashMap, HashSet};

use lodge_core::{
    BillingCycle, DomainId, DomainStatus, HostingId, HostingStatus, InvoiceKind, OrderStatus,
    OrderUuid, OrganizationId, PlanId, ServerId,
};
use lodge_store::orgs::OrderQuotas;
use lodge_store::servers::Placement;
use lodge_store::{billing, hosting, Conflict, SqlConn, StoreError};

use super::{order_number, DomainPlan, OrderOutcome, ValidOrder, SERVERS_FULL};
use crate::billing::Activation;
use crate::catalog::Plan;
use crate::commit::WriteCtx;
use crate::idempotency;
use crate::{FieldCode, Result, ServiceError};

/// What the orders of one group commit written as one share ([`BatchWrite::Shared`]):
/// each organization's credit balance, quotas and counts, read once under its lock and
/// followed in memory; which of the batch's names live accounts carry, read once and
/// followed too; the server without a limit each plan went to; on PostgreSQL the keys
/// reserved for the batch's orders, whose rows are written after its last order.
///
/// [`BatchWrite::Shared`]: crate::commit::BatchWrite::Shared
#[derive(Debug)]
pub struct OrderMemo {
    /// Orders in the batch (how many keys to reserve).
    units: usize,
    /// The batch's organizations, whose balances and quotas are read together when its
    /// first order asks; emptied then.
    to_read: Vec<OrganizationId>,
    /// Per organization, `(balance, quotas)` as its next order finds them.
    orgs: HashMap<OrganizationId, (i64, OrderQuotas)>,
    /// The credit the batch's orders applied: ledger entries written, balances not yet
    /// moved ([`OrderMemo::settle`]).
    applied: billing::PendingMoves,
    /// Per `(driver, plan)`, the server without a limit its accounts go to.
    servers: HashMap<(String, PlanId), ServerId>,
    /// The names the batch's accounts are for, read together when its first order asks
    /// whether its own is taken; emptied then.
    names_to_read: Vec<String>,
    /// Of those, the names live hosting accounts carry, and those the batch's orders took.
    live_names: HashSet<String>,
    /// Of the batch's external names' registrable domains, those a live domain object
    /// holds, and for which organization.
    domain_holders: HashMap<String, OrganizationId>,
    /// The sites the batch's orders took, and for which organization.
    batch_sites: HashMap<String, OrganizationId>,
    /// The keys reserved and not yet taken; `None` until the first order asks.
    keys: Option<std::vec::IntoIter<billing::OrderKeys>>,
    /// Where the order [`refuse_in`] just let through goes, for its write to take.
    checked: Option<Placement>,
}

impl OrderMemo {
    /// The memo of a batch of orders of these organizations, for these names.
    pub fn new(orgs: Vec<OrganizationId>, names: Vec<String>) -> Self {
        OrderMemo {
            units: orgs.len(),
            to_read: orgs,
            orgs: HashMap::new(),
            applied: billing::PendingMoves::default(),
            servers: HashMap::new(),
            keys: None,
            // Both forms of each name's site: an account answers to its name with and
            // without `www.`.
            names_to_read: names
                .iter()
                .flat_map(|n| {
                    let [site, www] = lodge_core::domain::site_forms(n);
                    [
                        site,
                        www,
                        lodge_core::domain::registrable_site(n).to_owned(),
                    ]
                })
                .collect(),
            live_names: HashSet::new(),
            domain_holders: HashMap::new(),
            batch_sites: HashMap::new(),
            checked: None,
        }
    }

    /// Whether a live hosting account carries `name`, or an earlier order of the batch took
    /// it: at the first call, every name of the batch as the database has them (one read).
    async fn name_taken<C: SqlConn>(&mut self, conn: &mut C, name: &str) -> Result<bool> {
        if !self.names_to_read.is_empty() {
            let names: Vec<&str> = self.names_to_read.iter().map(String::as_str).collect();
            let (live, held) = hosting::live_names_and_domains(conn, &names).await?;
            self.live_names.extend(live);
            self.domain_holders.extend(held);
            self.names_to_read = Vec::new();
        }
        Ok(lodge_core::domain::site_forms(name)
            .iter()
            .any(|n| self.live_names.contains(n)))
    }

    /// Whether a live domain object of another organization holds `registrable`, as the
    /// batch's first read found (after [`OrderMemo::name_taken`]).
    fn domain_held_elsewhere(&self, registrable: &str, org: OrganizationId) -> bool {
        self.domain_holders
            .get(registrable)
            .is_some_and(|held_by| *held_by != org)
    }

    /// Whether an earlier order of the batch took one of `sites` for another organization.
    fn site_taken_elsewhere(&self, sites: &[&str], org: OrganizationId) -> bool {
        sites
            .iter()
            .any(|s| self.batch_sites.get(*s).is_some_and(|o| *o != org))
    }

    /// The next order's reserved keys (the batch's, reserved at the first call); `None`
    /// where inserts return their keys without a round trip (SQLite).
    async fn next_keys<C: SqlConn>(&mut self, conn: &mut C) -> Result<Option<billing::OrderKeys>> {
        if self.keys.is_none() {
            self.keys = Some(
                billing::reserve_order_keys(conn, self.units)
                    .await?
                    .into_iter(),
            );
        }
        Ok(self.keys.as_mut().and_then(Iterator::next))
    }

    /// An organization's balance and quotas as its next order in the batch finds them: at
    /// the first call, every organization's as the database has them (one read, under the
    /// locks the batch took first); `None` for one that does not exist.
    async fn org<C: SqlConn>(
        &mut self,
        conn: &mut C,
        org: OrganizationId,
    ) -> Result<Option<(i64, OrderQuotas)>> {
        if !self.to_read.is_empty() {
            let read = lodge_store::orgs::credit_and_quotas_of(conn, &self.to_read).await?;
            self.orgs.extend(read);
            self.to_read = Vec::new();
        }
        Ok(self.orgs.get(&org).copied())
    }

    /// Moves the balances by the credit the batch's orders applied, one statement for all
    /// organizations (after its last order, before the commit).
    pub async fn settle<C: SqlConn>(self, conn: &mut C) -> lodge_store::Result<()> {
        self.applied.write(conn).await
    }

    fn server_for(&self, plan: &Plan) -> Option<ServerId> {
        self.servers
            .get(&(plan.row.driver.clone(), plan.row.id))
            .copied()
    }

    fn placed(&mut self, plan: &Plan, at: Placement) {
        if at.unlimited {
            self.servers
                .insert((plan.row.driver.clone(), plan.row.id), at.server);
        }
    }
}

/// Why an order cannot be placed, read under its organization's lock, every refusal at
/// once as validation reports them ([`crate::Lodge::validate_order`]): its name on a live
/// hosting account (or taken by an earlier order of the batch), its organization's quotas
/// (`quotas`, as the order finds them), no server with room for its plan. `Ok(Ok(_))`:
/// the server its account goes to (a limited one locked, as [`lodge_store::servers::place_in`]).
pub(crate) async fn refusal<C: SqlConn>(
    conn: &mut C,
    o: &ValidOrder,
    quotas: OrderQuotas,
    mut memo: Option<&mut OrderMemo>,
) -> Result<std::result::Result<Placement, ServiceError>> {
    let mut v = crate::Validator::new();
    let name = o.domain.name();
    let mut taken = match memo.as_deref_mut() {
        Some(m) => m.name_taken(conn, name).await?,
        None => hosting::live_hosting_for_name(conn, name).await?,
    };
    if !taken {
        if let DomainPlan::External { name } = &o.domain {
            // Under a domain another organization holds in Lodge.
            let registrable = lodge_core::domain::registrable_site(name.as_str());
            taken = match memo.as_deref() {
                // Read with the names, by the `name_taken` just above.
                Some(m) => m.domain_held_elsewhere(registrable, o.organization),
                None => hosting::domain_held_elsewhere(conn, registrable, o.organization).await?,
            };
        }
    }
    if !taken {
        // Under another customer's site (rare: a name below its registrable domain).
        let parents = lodge_core::domain::parent_sites(name).unwrap_or_default();
        taken = memo
            .as_deref()
            .is_some_and(|m| m.site_taken_elsewhere(&parents, o.organization))
            || hosting::live_parent_elsewhere(conn, &parents, o.organization).await?;
    }
    if taken {
        v.add(o.domain.name_field(), super::validate::name_taken(name));
    }
    for (field, code, message) in
        super::quotas::refusals(conn, o.organization, quotas, &o.plan, Some(&o.domain)).await?
    {
        v.add_coded(field, code, message);
    }
    let mut placed = None;
    if !v.has("plan_id") {
        let (driver, plan) = (&o.plan.row.driver, o.plan.row.id);
        let at = match memo.as_deref().and_then(|m| m.server_for(&o.plan)) {
            Some(server) => Some(Placement {
                server,
                unlimited: true,
            }),
            // Placed (a limited server locked) only for an order nothing else refuses.
            None if v.is_empty() => lodge_store::servers::place_in(conn, driver, plan).await?,
            None => lodge_store::servers::place(conn, driver, plan).await?,
        };
        match at {
            Some(at) => placed = Some(at),
            None => v.add_coded("plan_id", FieldCode::ServersFull, SERVERS_FULL),
        }
    }
    if let Err(refused) = v.finish() {
        return Ok(Err(refused));
    }
    let placed =
        placed.ok_or_else(|| ServiceError::Internal("an order without a server".into()))?;
    if let Some(m) = memo {
        m.placed(&o.plan, placed);
    }
    Ok(Ok(placed))
}

/// [`BatchWrite::refuse`](crate::commit::BatchWrite::refuse) of an order of a batch run as
/// one, given what the batch's orders share: [`refusal`] before the order writes anything,
/// so a refused order leaves the others' transaction as it was.
pub(crate) async fn refuse_in<C: SqlConn>(
    conn: &mut C,
    o: &ValidOrder,
    memo: &mut OrderMemo,
) -> Result<Option<ServiceError>> {
    let Some((_, quotas)) = memo.org(conn, o.organization).await? else {
        return Ok(Some(ServiceError::NotFound));
    };
    Ok(match refusal(conn, o, quotas, Some(memo)).await? {
        Ok(at) => {
            memo.checked = Some(at);
            None
        }
        Err(refused) => Some(refused),
    })
}

/// The writes of an order. The credit to apply is known first (under the organization's row
/// lock), so every row is written once in its final state: an order that owes nothing is
/// written activated ([`Activation`], as a pending order is activated when paid later): active,
/// its invoice paid, its account provisioning with its first period, the jobs queued.
///
/// The invoice is left for the caller to number ([`billing::number_invoices`]) before the
/// commit: a group commit numbers all its invoices at once.
///
/// With `memo` (the orders of one group commit written as one, [`OrderMemo`]), what an
/// earlier order of the batch read is not read again, and on PostgreSQL the order, its
/// account and its invoice are written with the batch's other rows after its last order.
pub async fn place_order_in<C: SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    o: &ValidOrder,
    mut memo: Option<&mut OrderMemo>,
) -> Result<OrderOutcome> {
    let (now, today, cur, actor) = (ctx.now, ctx.today, ctx.currency, ctx.actor);
    let total = o.quote.total_minor;
    // A free order with nothing billed has no invoice.
    let billed = !(o.cycle == BillingCycle::Free && total == 0);
    // The organization is locked for every order (free ones too): its quotas are counted
    // under the lock, so orders at once cannot pass them together.
    let known = match memo.as_deref_mut() {
        Some(m) => m.org(conn, o.organization).await?,
        None => None,
    };
    let (balance, quotas) = match known {
        Some(k) => k,
        None => lodge_store::orgs::lock_credit_and_quotas(conn, o.organization)
            .await?
            .ok_or(ServiceError::NotFound)?,
    };
    // Checked already in a batch run as one ([`refuse_in`]); else (with savepoints, or
    // alone) here.
    let placed = match memo.as_deref_mut().and_then(|m| m.checked.take()) {
        Some(at) => at,
        None => refusal(conn, o, quotas, memo.as_deref_mut()).await??,
    };
    let credit = if billed && total > 0 {
        balance.clamp(0, total)
    } else {
        0
    };
    let due = total - credit;
    let new_domain = matches!(
        o.domain,
        DomainPlan::Register { .. } | DomainPlan::Transfer { .. }
    );
    if let Some(m) = memo.as_deref_mut() {
        // What this order leaves for the organization's next order in the batch.
        let mut after = quotas;
        after.accounts += 1;
        after.domains += i64::from(new_domain);
        m.orgs.insert(o.organization, (balance - credit, after));
        m.live_names.insert(o.domain.name().to_owned());
        m.batch_sites.insert(
            lodge_core::domain::site_of(o.domain.name()).to_owned(),
            o.organization,
        );
    }
    // What activation writes; the first period's dates are on the invoice's plan line
    // either way (reset to the day it is paid if paid later). Paid as it is placed: every
    // row is written in its activated state.
    let domain_status = match &o.domain {
        DomainPlan::Register { .. } => Some(DomainStatus::PendingRegistration),
        DomainPlan::Transfer { .. } => Some(DomainStatus::PendingTransfer),
        DomainPlan::Existing { .. } | DomainPlan::External { .. } => None,
    };
    let plan = Activation::plan(today, o.quote.first_period_months, domain_status);
    let activation = (due == 0).then_some(&plan);
    let paid = activation.is_some();
    let order_status = activation
        .as_ref()
        .map_or(OrderStatus::Pending, |a| a.order);

    // The server (placed above): whether it has a limit decides how the rows are written.
    let server = placed.server;
    // The keys of this order's rows when they are written after the batch's last order:
    // only where no later order of the batch reads them, on a server without a limit (a
    // limited one's accounts are counted) and of a plan not sold once per organization
    // (whose accounts are counted too). All of its rows or none: they refer to each other.
    let keys = match memo.as_deref_mut() {
        Some(m) if placed.unlimited && o.plan.row.once_per_organization != 1 => {
            m.next_keys(conn).await?
        }
        _ => None,
    };
    let order_uuid = OrderUuid::new();
    let new_order = billing::NewOrder {
        uuid: order_uuid,
        organization_id: o.organization,
        project_id: o.project,
        status: order_status,
        source: o.source.as_str(),
        currency: cur,
        coupon_id: o.coupon.as_ref().map(|c| c.id.to_string()),
        actor,
        now,
    };
    let order_id = billing::insert_order_keyed(conn, &new_order, keys.map(|k| k.order)).await?;

    // The domain object (register / transfer), or the one the customer already holds.
    let domain_id = match &o.domain {
        DomainPlan::Register { name, tld, .. } | DomainPlan::Transfer { name, tld, .. } => {
            let id = DomainId::new();
            let (status, epp) = match &o.domain {
                DomainPlan::Transfer { epp_code, .. } => (
                    DomainStatus::PendingTransfer,
                    Some(ctx.sealer.seal(epp_code)?),
                ),
                _ => (DomainStatus::PendingRegistration, None),
            };
            let sld = name.split_registrable(tld).unwrap_or_else(|| name.sld());
            let domain = hosting::NewDomain {
                id,
                organization_id: o.organization,
                project_id: o.project,
                order_id: Some(order_id),
                name: name.as_str(),
                sld,
                tld,
                status,
                registrar: ctx.registrar_for(name),
                epp_code: epp.as_deref(),
                now,
            };
            // Written later, a name another live domain holds fails the batch's flush,
            // and the batch runs again an order at a time, where it is refused here.
            match keys {
                Some(_) => hosting::insert_domain_later(conn, &domain).await,
                None => hosting::insert_domain(conn, &domain).await,
            }
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
            Some(id)
        }
        DomainPlan::Existing { row } => Some(row.id),
        DomainPlan::External { .. } => None,
    };

    let hosting_id = HostingId::new();
    let period = plan.period.as_ref();
    let hosting_status = activation.map_or(HostingStatus::Pending, |a| a.hosting);
    let new_hosting = hosting::NewHosting {
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
            .map(|p| ctx.sealer.seal(p))
            .transpose()?,
        comment: &o.comment,
        server_id: Some(server.to_string()),
        next_due_date: activation
            .and_then(Activation::next_due_date)
            .map(str::to_owned),
        period_anchor: activation
            .and_then(|a| a.period.as_ref())
            .map(|(start, _)| start.clone()),
        note: if paid { "ordered and paid" } else { "ordered" },
        actor,
        now,
    };
    let legacy_id = hosting::insert_hosting_keyed(conn, &new_hosting, keys.map(|k| k.hosting))
        .await
        .map_err(|e| {
            if matches!(e, StoreError::Conflict(Conflict::LiveHostingName)) {
                ServiceError::field(
                    o.domain.name_field(),
                    super::validate::name_taken(o.domain.name()),
                )
            } else {
                e.into()
            }
        })?;

    if let Some(c) = &o.coupon {
        let used = lodge_store::catalog::use_coupon(conn, &c.id.to_string(), now).await?;
        if !used {
            return Err(ServiceError::field(
                "coupon",
                "This coupon has been used up, has expired or is no longer offered.",
            ));
        }
    }

    let mut invoice_id = None;
    let mut payment_token = None;
    if billed {
        let token = ctx.sealer.payment_tokens().issue(now);
        let due_date = today.to_string();
        let invoice = billing::NewInvoice {
            number: None,
            organization_id: o.organization,
            order_id: Some(order_id),
            kind: InvoiceKind::First,
            currency: cur,
            subtotal_minor: total,
            tax_minor: 0,
            payment_token: token.key(),
            due_date: &due_date,
            credit_applied_minor: credit,
            paid,
            now,
        };
        let id = billing::insert_invoice_keyed(conn, &invoice, keys.map(|k| k.invoice)).await?;
        let hosting_key = hosting_id.to_string();
        for (i, line) in o.quote.lines.iter().enumerate() {
            let (service, start, end) = match line.kind {
                LineKind::Plan | LineKind::Discount | LineKind::SetupFee => (
                    Some(hosting_key.clone()),
                    Some(today.to_string()),
                    if line.kind == LineKind::Plan {
                        period.map(|(_, end)| end.clone())
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
            // In a batch the balance this leaves is known (followed in memory from the
            // batch's one read), and the batch moves it once for all its orders.
            let pending = memo.map(|m| (&mut m.applied, balance - credit));
            crate::billing::spend_credit(ctx, conn, o.organization, id, credit, pending).await?;
        }
        invoice_id = Some(id);
        payment_token = Some(token);
    }

    if let Some(a) = activation {
        a.enqueue_jobs(ctx, conn, hosting_id, domain_id).await?;
    }
    order_events(
        ctx,
        conn,
        o,
        order_id,
        hosting_id,
        invoice_id,
        (total, credit, paid),
    )
    .await?;
    let outcome = OrderOutcome {
        order_id,
        order_number: order_number(order_id),
        local_order_id: order_uuid,
        invoice_id,
        total_minor: total,
        amount_due_minor: due,
        credit_applied_minor: credit,
        status: order_status,
        payment_token: if paid {
            None
        } else {
            payment_token.as_ref().map(|t| t.token.clone())
        },
        payment_token_salt: if paid {
            None
        } else {
            payment_token.map(|t| t.salt)
        },
        hosting_id,
        hosting_legacy_id: legacy_id,
        hosting_status,
        domain_id,
        domain_name: o.domain.name().to_owned(),
    };
    // The key last, claimed with its answer in one write (the batch holds its lock): a
    // retry whose twin came first was refused before its writes (the name its twin took)
    // and is answered the twin's outcome ([`crate::Lodge::keyed`]). What fails here is the
    // key sent with another request (another name) at the same time: refused, its writes
    // with it, and answered `KeyReused` by `keyed`.
    if let Some(k) = &o.idempotency {
        idempotency::claim_answered_in(conn, k, now, &outcome).await?;
    }
    Ok(outcome)
}

/// The events of a placed order, in its transaction: `order.created`, its first invoice's
/// `invoice.created` and, paid from credit as it was placed, `invoice.paid` (built from
/// what the order wrote: the group commit numbers the invoice later, and consumers read
/// the number back by id).
async fn order_events<C: SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    o: &ValidOrder,
    order_id: i64,
    hosting_id: HostingId,
    invoice_id: Option<i64>,
    (total, credit, paid): (i64, i64, bool),
) -> Result<()> {
    use crate::events::{emit, EventKind};
    let (currency, now) = (ctx.currency, ctx.now);
    emit(
        conn,
        EventKind::OrderCreated,
        o.organization,
        format!("order:{order_id}"),
        serde_json::json!({
            "order_id": order_id,
            "order_number": order_number(order_id),
            "hosting_id": hosting_id,
            "domain": o.domain.name(),
            "billing_cycle": o.cycle.as_str(),
            "currency": currency,
            "total_minor": total,
            "credit_applied_minor": credit,
            "amount_due_minor": total - credit,
            "invoice_id": invoice_id,
        }),
        now,
    )
    .await?;
    let Some(invoice) = invoice_id else {
        return Ok(());
    };
    let data = |status: &str| {
        serde_json::json!({
            "invoice_id": invoice,
            "number": null,
            "kind": "first",
            "status": status,
            "currency": currency,
            "total_minor": total,
            "credit_applied_minor": credit,
            "paid_minor": 0,
            "amount_due_minor": total - credit,
            "due_date": ctx.today.to_string(),
            "order_id": order_id,
        })
    };
    let subject = format!("invoice:{invoice}");
    emit(
        conn,
        EventKind::InvoiceCreated,
        o.organization,
        subject.clone(),
        data(if paid { "paid" } else { "unpaid" }),
        now,
    )
    .await?;
    if paid {
        emit(
            conn,
            EventKind::InvoicePaid,
            o.organization,
            subject,
            data("paid"),
            now,
        )
        .await?;
    }
    Ok(())
}
