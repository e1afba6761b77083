//! The second period and after: renewal invoices, what paying one does, and what an unpaid
//! one leads to (docs/billing.md, "Lifecycles"; the rules as pure functions in
//! `lodge_core::renewal`).
//!
//! - [`Lodge::bill_renewals`] issues one renewal invoice per organization and due date for
//!   the services whose period ends within the lead time, exactly once per (service, period
//!   start): re-checked after the organization is locked, and the database's unique key on
//!   invoice lines as the last word. The organization's credit is applied first; a covered
//!   renewal is paid at once.
//! - Paying a renewal ([`renewal_paid`], from `billing::settle`) moves each service into its
//!   next period, counted from its anchor, and lifts an overdue suspension.
//! - [`Lodge::enforce_overdue`] suspends the services of a renewal unpaid past the
//!   suspension grace and, past the termination grace, cancels the invoice and terminates
//!   them. Each automatic step is a job, recorded in the account's history by `scheduler`.

use lodge_store::DAY_US;
use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;
use lodge_core::renewal::{next_period, OverdueStep};
use lodge_core::{
    add_months, BillingCycle, DomainEvent, DomainId, HostingEvent, HostingId, HostingStatus,
    InvoiceKind, InvoiceStatus, OrganizationId,
};
use lodge_store::renewals::{self, DueDomain, DueService, Owed};
use lodge_store::{billing, hosting, StoreError};

use crate::billing::{enqueue_later, settle, spend_credit, JOB_TERMINATE};
use crate::commit::WriteCtx;
use crate::provisioning::JOB_UNSUSPEND;
use crate::{Lodge, Result, ServiceError};

/// The actor of every automatic step.
pub const SCHEDULER: &str = "scheduler";
/// Suspends an account for an overdue renewal (payload: `hosting_id`, `invoice_id`).
pub const JOB_SUSPEND_OVERDUE: &str = "suspend_overdue";
/// Asks the registrar to renew a paid domain year (payload: `domain_id`, `years`).
pub const JOB_RENEW_DOMAIN: &str = "renew_domain";

/// Services read per page of the renewal pass.
const PAGE: i64 = 1_000;
/// Organizations' renewals billed per transaction.
const GROUPS_PER_COMMIT: usize = 64;

/// What one renewal pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RenewalPass {
    /// Renewal invoices issued.
    pub invoices: usize,
    /// Service periods billed on them.
    pub periods: usize,
    /// Of the invoices, those paid at once from account credit.
    pub paid_from_credit: usize,
    /// Groups that failed (logged; the next pass tries them again).
    pub failed: usize,
}

/// What one overdue pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OverduePass {
    /// Suspensions queued.
    pub suspensions: usize,
    /// Invoices cancelled, their services' terminations queued.
    pub terminations: usize,
}

/// One service's next period, as billed.
struct Period {
    service: DueService,
    start: Date,
    end: Date,
}

/// The next period of a due service: from its anchor, or (no anchor known, or the due date
/// is not one of its period ends) from the due date itself.
fn period_of(s: &DueService) -> Option<(Date, Date)> {
    let due: Date = s.next_due_date.parse().ok()?;
    let months = match s.renewal_months {
        Some(m) => u32::try_from(m).ok().filter(|m| *m > 0)?,
        None => s.billing_cycle.parse::<BillingCycle>().ok()?.months()?,
    };
    let anchor = s
        .period_anchor
        .as_deref()
        .and_then(|a| a.parse::<Date>().ok());
    anchor
        .and_then(|a| next_period(a, due, months))
        .or_else(|| Some((due, add_months(due, months))))
}

/// An organization's services due on one day, billed on one invoice.
type Group = ((OrganizationId, String), Vec<DueService>);

/// The renewal pass's pages cut into whole groups. Pages are read in the order of (due
/// date, organization, account), so a group's services are consecutive but a page may end
/// inside one: that group is held back and completed by the next page, instead of being
/// billed as two invoices, one from each page.
#[derive(Default)]
struct WholeGroups {
    held: Option<Group>,
}

impl WholeGroups {
    /// The groups `page` completes (with the one held from the page before), in the page's
    /// order; `full`: more pages follow, so its last group may go on and is held.
    fn take(&mut self, page: Vec<DueService>, full: bool) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        if let Some(held) = self.held.take() {
            groups.push(held);
        }
        for s in page {
            let key = (s.organization_id, s.next_due_date.clone());
            match groups.last_mut() {
                Some((k, services)) if *k == key => services.push(s),
                _ => groups.push((key, vec![s])),
            }
        }
        if full {
            self.held = groups.pop();
        }
        groups
    }
}

impl Lodge {
    /// Issues the renewal invoices due by today plus the lead time. Safe to run on several
    /// nodes at once and as often as wanted: a period is billed once.
    pub async fn bill_renewals(&self) -> Result<RenewalPass> {
        let horizon = self
            .settings
            .policy
            .billing_horizon(self.today())
            .to_string();
        let mut pass = RenewalPass::default();
        // The next page is read while this one is billed (its keyset is this page's last
        // service): read one after the other, the pages were a fifth of the pass on
        // PostgreSQL with 50,000 due (BENCHMARKS.md). A period this page moves on is not
        // in the next page already read; due still, the next pass bills it.
        let read_page = |after: Option<(String, String, i64)>| {
            let (store, horizon) = (self.store.clone(), horizon.clone());
            tokio::spawn(async move {
                let mut db = store.read_conn().await?;
                renewals::due(&mut db, &horizon, after.as_ref(), PAGE).await
            })
        };
        let mut next = Some(read_page(None));
        let mut whole = WholeGroups::default();
        while let Some(reading) = next.take() {
            let page = reading
                .await
                .map_err(|e| ServiceError::Internal(format!("reading renewals: {e}")))??;
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            if let (true, Some(last)) = (full, page.last()) {
                next = Some(read_page(Some((
                    last.organization_id.to_string(),
                    last.next_due_date.clone(),
                    last.legacy_id,
                ))));
            }
            let groups = whole.take(page, full);
            self.bill_groups(&mut pass, groups).await?;
        }
        // Domains due on a day none of their organization's accounts is (those joined the
        // accounts' invoices above).
        let mut after: Option<(String, String, i64)> = None;
        loop {
            let page = {
                let mut db = self.store.read_conn().await?;
                renewals::domains_due(&mut db, &horizon, after.as_ref(), PAGE).await?
            };
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            if let Some(last) = page.last() {
                after = Some((
                    last.organization_id.to_string(),
                    last.next_billing_date.clone(),
                    last.legacy_id,
                ));
            }
            let mut groups: BTreeMap<(OrganizationId, String), ()> = BTreeMap::new();
            for d in page {
                groups.insert((d.organization_id, d.next_billing_date.clone()), ());
            }
            self.bill_groups(
                &mut pass,
                groups.into_keys().map(|k| (k, Vec::new())).collect(),
            )
            .await?;
            if !full {
                break;
            }
        }
        Ok(pass)
    }

    fn count_group(
        &self,
        pass: &mut RenewalPass,
        org: OrganizationId,
        due: &str,
        outcome: Result<Option<(usize, bool, i64)>>,
    ) {
        match outcome {
            Ok(Some((periods, paid, _))) => {
                pass.invoices += 1;
                pass.periods += periods;
                pass.paid_from_credit += usize::from(paid);
            }
            Ok(None) => {}
            Err(e) => {
                pass.failed += 1;
                tracing::warn!(organization = %org, due = %due, error = %e,
                    "billing renewals failed; the next pass tries again");
            }
        }
    }

    /// Bills many groups together ([`RenewalGroups`]): on SQLite's batch writer or a pool
    /// connection, their organizations locked together first, in the one order every
    /// multi-organization writer uses; a group that fails is written again alone (a
    /// savepoint each), so the others are billed all the same.
    async fn bill_groups(
        &self,
        pass: &mut RenewalPass,
        groups: Vec<((OrganizationId, String), Vec<DueService>)>,
    ) -> Result<()> {
        let catalog = self.catalog().await?;
        let env = self.write_env(SCHEDULER);
        let mut groups = groups.into_iter().peekable();
        let mut running = tokio::task::JoinSet::new();
        while groups.peek().is_some() {
            let units: Vec<RenewalGroup> = groups
                .by_ref()
                .take(GROUPS_PER_COMMIT)
                .map(|((org, due), services)| RenewalGroup {
                    env: env.clone(),
                    catalog: catalog.clone(),
                    org,
                    due,
                    services,
                })
                .collect();
            let keys: Vec<(OrganizationId, String)> =
                units.iter().map(|u| (u.org, u.due.clone())).collect();
            if !self.store.has_batch_writer() {
                // PostgreSQL: as many batches at once as a renewal's committers.
                let committers =
                    <RenewalGroups as crate::commit::BatchWrite>::COMMITTERS_ON_POSTGRES;
                if running.len() >= committers.max(1) {
                    self.record_batch(pass, running.join_next().await);
                }
                let store = self.store.clone();
                running.spawn(async move {
                    let outcome = crate::commit::commit_on_pool::<RenewalGroups>(
                        &store,
                        &units,
                        &std::sync::atomic::AtomicU64::new(0),
                    )
                    .await;
                    (keys, outcome)
                });
                continue;
            }
            let outcomes = self
                .store
                .batch(move |db| crate::commit::commit_on_writer::<RenewalGroups>(db, &units))
                .await?;
            self.record_batch(pass, Some(Ok((keys, outcomes))));
        }
        while let Some(done) = running.join_next().await {
            self.record_batch(pass, Some(done));
        }
        Ok(())
    }

    /// Counts what a batch of renewal groups came to.
    #[allow(clippy::type_complexity)]
    fn record_batch(
        &self,
        pass: &mut RenewalPass,
        done: Option<
            std::result::Result<
                (
                    Vec<(OrganizationId, String)>,
                    std::result::Result<
                        crate::commit::Outcomes<Option<(usize, bool, i64)>>,
                        StoreError,
                    >,
                ),
                tokio::task::JoinError,
            >,
        >,
    ) {
        let (keys, outcomes) = match done {
            None => return,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::error!(error = %e, "a renewal batch task failed");
                pass.failed += 1;
                return;
            }
        };
        {
            match outcomes {
                Ok(outcomes) => {
                    for ((org, due), outcome) in keys.iter().zip(outcomes) {
                        self.count_group(pass, *org, due, outcome);
                    }
                }
                Err(e) => {
                    // Nothing of this batch was written; the next pass tries it again.
                    tracing::warn!(error = %e, groups = keys.len(),
                        "billing a batch of renewals failed; the next pass tries again");
                    pass.failed += keys.len();
                }
            }
        }
    }
}

/// One organization's renewals due on one date, as a unit of [`RenewalGroups`].
struct RenewalGroup {
    env: crate::commit::WriteEnv,
    catalog: std::sync::Arc<crate::catalog::Catalog>,
    org: OrganizationId,
    due: String,
    services: Vec<DueService>,
}

/// The moment a batch is numbered at: its units' clock.
fn outcomes_now(units: &[RenewalGroup]) -> i64 {
    units.first().map_or(0, |u| u.env.now_us())
}

/// What the groups of one batch written as one share ([`crate::commit::BatchWrite::Shared`]):
/// read when its first group asks, under the organizations' locks the batch took first, in
/// a few statements for the whole batch instead of a few per group: the organizations'
/// balances (followed in memory, moved once after the last group), their services still
/// due and their domains due, each TLD's renewal price, and on PostgreSQL the invoices'
/// keys, so that their rows are written with the batch's other rows after its last group.
struct RenewalMemo {
    /// Groups in the batch (how many invoice keys to reserve).
    units: usize,
    /// The batch's organizations and services, until they are read.
    to_read: Option<(Vec<OrganizationId>, Vec<HostingId>)>,
    /// Per organization, its balance as its next group finds it.
    balances: HashMap<OrganizationId, i64>,
    /// The services of the batch still billable (taken by the group that bills them).
    services: HashMap<HostingId, DueService>,
    /// The batch's organizations' domains due, per organization and date (taken by the
    /// group of that date).
    domains: HashMap<(OrganizationId, String), Vec<DueDomain>>,
    /// Per TLD, its renewal price (read at its first domain).
    prices: HashMap<String, Option<i64>>,
    /// The invoice keys reserved and not yet taken.
    keys: std::vec::IntoIter<i64>,
    /// The credit applied: ledger entries written, balances not yet moved.
    applied: billing::PendingMoves,
    /// The periods paid whose accounts move on after the last group, in one statement:
    /// `(service, from, to)`, and the latest clock.
    advances: (Vec<(HostingId, String, String)>, i64),
}

impl RenewalMemo {
    fn new(units: &[RenewalGroup]) -> Self {
        RenewalMemo {
            units: units.len(),
            to_read: Some((
                units.iter().map(|u| u.org).collect(),
                units
                    .iter()
                    .flat_map(|u| u.services.iter().map(|s| s.id))
                    .collect(),
            )),
            balances: HashMap::new(),
            services: HashMap::new(),
            domains: HashMap::new(),
            prices: HashMap::new(),
            keys: Vec::new().into_iter(),
            applied: billing::PendingMoves::default(),
            advances: (Vec::new(), 0),
        }
    }

    /// Reads what the batch's groups need, at the first call.
    async fn read<C: lodge_store::SqlConn>(&mut self, conn: &mut C) -> Result<()> {
        let Some((orgs, services)) = self.to_read.take() else {
            return Ok(());
        };
        self.balances = lodge_store::orgs::credits_of(&mut *conn, &orgs).await?;
        self.services = renewals::due_again_all(&mut *conn, &services)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        for d in renewals::domains_due_of(&mut *conn, &orgs).await? {
            self.domains
                .entry((d.organization_id, d.next_billing_date.clone()))
                .or_default()
                .push(d);
        }
        self.keys = billing::reserve_invoice_keys(&mut *conn, self.units)
            .await?
            .into_iter();
        Ok(())
    }

    async fn price<C: lodge_store::SqlConn>(
        &mut self,
        conn: &mut C,
        tld: &str,
    ) -> Result<Option<i64>> {
        if let Some(p) = self.prices.get(tld) {
            return Ok(*p);
        }
        let p = renewals::renew_price(conn, tld).await?;
        self.prices.insert(tld.to_owned(), p);
        Ok(p)
    }
}

/// The renewal pass's group commit: each unit bills one invoice ([`bill_group_in`]).
struct RenewalGroups;

impl crate::commit::BatchWrite for RenewalGroups {
    type Unit = RenewalGroup;
    type Outcome = Option<(usize, bool, i64)>;

    /// With [`crate::commit::Units::Whole`] on PostgreSQL: the invoices (their keys
    /// reserved), lines, ledger entries, jobs and events of the batch in a few statements
    /// after its last group.
    const DEFER_ROWS: bool = true;

    async fn lock<C: lodge_store::SqlConn>(
        db: &mut C,
        units: &[RenewalGroup],
    ) -> std::result::Result<(), StoreError> {
        let orgs: Vec<OrganizationId> = units.iter().map(|u| u.org).collect();
        billing::lock_organizations(db, &orgs).await
    }

    type Shared = RenewalMemo;

    fn share(units: &[RenewalGroup]) -> RenewalMemo {
        RenewalMemo::new(units)
    }

    async fn settle<C: lodge_store::SqlConn>(
        db: &mut C,
        memo: RenewalMemo,
    ) -> std::result::Result<(), StoreError> {
        let (advances, now) = &memo.advances;
        renewals::advance_periods(&mut *db, advances, *now).await?;
        memo.applied.write(db).await
    }

    async fn write_one<C: lodge_store::SqlConn>(
        db: &mut C,
        unit: &RenewalGroup,
        memo: Option<&mut RenewalMemo>,
    ) -> Result<Self::Outcome> {
        let ctx = unit.env.ctx();
        bill_group_in(
            &ctx,
            db,
            &unit.catalog,
            (unit.org, &unit.due),
            unit.services.clone(),
            memo,
        )
        .await
    }

    /// Numbers the batch's invoices at its end, in order, with one step of the counter
    /// (locked once, just before the commit, as the orders' group commit does).
    async fn finish<C: lodge_store::SqlConn>(
        db: &mut C,
        _units: &[RenewalGroup],
        outcomes: &[Result<Self::Outcome>],
    ) -> std::result::Result<(), StoreError> {
        let invoices: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().and_then(|o| o.map(|(_, _, id)| id)))
            .collect();
        let now = outcomes_now(_units);
        billing::number_invoices(db, &invoices, || now).await
    }
}

/// Bills one organization's services (and domains) due on one date on one invoice, in the
/// caller's transaction: `(periods billed, paid from credit, invoice id)`, or `None` when
/// another pass billed them first. In a batch run as one, what it reads comes from the
/// batch's [`RenewalMemo`]; alone, from the database. The invoice is written once, in its
/// final state: the credit it takes known first, paid when that covers it.
async fn bill_group_in<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    tx: &mut C,
    catalog: &crate::catalog::Catalog,
    (org, due): (OrganizationId, &str),
    services: Vec<DueService>,
    mut memo: Option<&mut RenewalMemo>,
) -> Result<Option<(usize, bool, i64)>> {
    // The money paths' lock order: the organization first (a batch locked them all). A
    // concurrent pass on another node waits there, then finds the lines this one wrote.
    let balance = match memo.as_deref_mut() {
        Some(m) => {
            m.read(&mut *tx).await?;
            m.balances.get(&org).copied()
        }
        None => billing::lock_credit(&mut *tx, org).await?,
    };
    let Some(balance) = balance else {
        return Ok(None);
    };
    let mut periods = Vec::new();
    for s in services {
        let again = match memo.as_deref_mut() {
            Some(m) => m.services.remove(&s.id).filter(|s| s.next_due_date == due),
            None => renewals::due_again(&mut *tx, s.id, due).await?,
        };
        let Some(s) = again else {
            continue;
        };
        let Some((start, end)) = period_of(&s) else {
            tracing::warn!(hosting = %s.id, "cannot tell this account's next period; not billed");
            continue;
        };
        periods.push(Period {
            service: s,
            start,
            end,
        });
    }
    // The organization's domains due the same day renew on the same invoice.
    let domains = match memo.as_deref_mut() {
        Some(m) => m.domains.remove(&(org, due.to_owned())).unwrap_or_default(),
        None => renewals::domains_due_on(&mut *tx, org, due).await?,
    };
    let mut years = Vec::new();
    for d in domains {
        let price = match memo.as_deref_mut() {
            Some(m) => m.price(&mut *tx, &d.tld).await?,
            None => renewals::renew_price(&mut *tx, &d.tld).await?,
        };
        let (Ok(start), Some(price)) = (d.next_billing_date.parse::<Date>(), price) else {
            tracing::warn!(domain = %d.name, "no renewal price for this domain's TLD; not billed");
            continue;
        };
        years.push((d, start, add_months(start, 12), price));
    }
    if periods.is_empty() && years.is_empty() {
        return Ok(None);
    }
    // Saturating: a total that cannot be held is one no balance covers (unpaid), never a
    // wrapped negative one taken as paid.
    let total: i64 = periods
        .iter()
        .map(|p| p.service.recurring_minor)
        .chain(years.iter().map(|(_, _, _, price)| *price))
        .fold(0, i64::saturating_add);
    let currency = periods
        .first()
        .map_or(ctx.currency, |p| p.service.currency.as_str())
        .to_owned();
    // The organization's credit, applied first, up to the total.
    let applied = if total > 0 {
        balance.min(total).max(0)
    } else {
        0
    };
    let paid = applied >= total;
    // Due when its period starts, or on the day it is issued if that is later (a pass that
    // catches up after the scheduler was down): the graces before suspension and
    // termination count from a day the customer could have paid, never from before the
    // invoice existed.
    let due_on = due.parse::<Date>().map_or_else(
        |_| due.to_owned(),
        |d| ctx.policy.invoice_due(d, ctx.today).to_string(),
    );
    let due = due_on.as_str();
    let token = ctx.sealer.payment_tokens().issue(ctx.now);
    let reserved = memo.as_deref_mut().and_then(|m| m.keys.next());
    let id = billing::insert_invoice_keyed(
        &mut *tx,
        &billing::NewInvoice {
            number: None,
            organization_id: org,
            order_id: None,
            kind: InvoiceKind::Renewal,
            currency: &currency,
            subtotal_minor: total,
            tax_minor: 0,
            payment_token: token.key(),
            due_date: due,
            credit_applied_minor: applied,
            paid,
            now: ctx.now,
        },
        reserved,
    )
    .await?;
    let mut billed = Vec::with_capacity(periods.len());
    for (i, p) in periods.iter().enumerate() {
        let plan = catalog
            .plan(p.service.plan_id)
            .map_or("Hosting", |plan| plan.row.name.as_str());
        let description = format!(
            "{plan} for {}, {} to {}",
            p.service.domain_name, p.start, p.end
        );
        let (start, end) = (p.start.to_string(), p.end.to_string());
        billing::insert_line(
            &mut *tx,
            id,
            &billing::NewLine {
                position: i64::try_from(i).unwrap_or(0),
                kind: "plan",
                description: &description,
                service_id: Some(p.service.id.to_string()),
                period_start: Some(start.clone()),
                period_end: Some(end.clone()),
                amount_minor: p.service.recurring_minor,
            },
        )
        .await?;
        billed.push(renewals::BilledPeriod {
            service: p.service.id,
            start,
            end,
            amount_minor: p.service.recurring_minor,
        });
    }
    let mut billed_years = Vec::with_capacity(years.len());
    for (i, (d, start, end, price)) in years.iter().enumerate() {
        let description = format!("Renewal of {} for 1 year, {start} to {end}", d.name);
        let (start, end) = (start.to_string(), end.to_string());
        billing::insert_line(
            &mut *tx,
            id,
            &billing::NewLine {
                position: i64::try_from(periods.len() + i).unwrap_or(0),
                kind: "domain_renewal",
                description: &description,
                service_id: Some(d.id.to_string()),
                period_start: Some(start.clone()),
                period_end: Some(end.clone()),
                amount_minor: *price,
            },
        )
        .await?;
        billed_years.push((d.id, start, end, *price));
    }
    if applied > 0 {
        let pending = match memo.as_deref_mut() {
            Some(m) => {
                let after = balance - applied;
                m.balances.insert(org, after);
                Some((&mut m.applied, after))
            }
            None => None,
        };
        spend_credit(ctx, &mut *tx, org, id, applied, pending).await?;
    }
    // The invoice as written (its number comes at the batch's end; consumers read it back
    // by id): `invoice.created` as issued with the credit applied, then, covered, what its
    // payment does and `invoice.paid`.
    let mut row = lodge_store::billing::InvoiceRow {
        id,
        number: None,
        organization_id: org,
        order_id: None,
        kind: InvoiceKind::Renewal,
        status: InvoiceStatus::Unpaid,
        currency,
        subtotal_minor: total,
        tax_minor: 0,
        total_minor: total,
        credit_applied_minor: applied,
        paid_minor: 0,
        payment_token_salt: String::new(),
        due_date: due.to_owned(),
        issued_at: ctx.now,
        paid_at: None,
        cancelled_at: None,
        created_at: ctx.now,
        modified_at: ctx.now,
        refunded_minor: 0,
    };
    let created = crate::events::EventKind::InvoiceCreated;
    crate::events::invoice_event_of(&mut *tx, created, &row, ctx.now).await?;
    if paid {
        // In a batch, the accounts not suspended when it read them move on after its last
        // group, together (nothing in the batch reads them again); a suspended one now, so
        // that its suspension is lifted as its status is then.
        let mut billed = billed;
        if let Some(m) = memo {
            let suspended: std::collections::HashSet<HostingId> = periods
                .iter()
                .filter(|p| p.service.status == HostingStatus::Suspended)
                .map(|p| p.service.id)
                .collect();
            let (at_once, later): (Vec<_>, Vec<_>) = billed
                .into_iter()
                .partition(|p| suspended.contains(&p.service));
            m.advances
                .0
                .extend(later.into_iter().map(|p| (p.service, p.start, p.end)));
            m.advances.1 = m.advances.1.max(ctx.now);
            billed = at_once;
        }
        advance_billed(ctx, &mut *tx, id, &id.to_string(), &billed_years, &billed).await?;
        row.status = InvoiceStatus::Paid;
        row.paid_at = Some(ctx.now);
        let kind = crate::events::EventKind::InvoicePaid;
        crate::events::invoice_event_of(&mut *tx, kind, &row, ctx.now).await?;
    }
    Ok(Some((periods.len() + years.len(), paid, id)))
}

/// Days before its due date an unpaid renewal's reminder is sent (`invoice.reminder`), to
/// an invoice issued at least a day before.
pub const REMINDER_DAYS: i64 = 3;

/// The day the overdue pass took an unpaid renewal's suspension step, if it did.
fn step_day(inv: &renewals::UnpaidRenewal) -> Option<Date> {
    inv.suspension_step_at
        .and_then(|us| lodge_store::day_of(us).ok())
}

impl Lodge {
    /// The notices of unpaid renewals, each once per invoice whoever runs the pass
    /// ([`crate::events::emit_once`]): `invoice.reminder` from [`REMINDER_DAYS`] before the
    /// due date, and `invoice.overdue` (with the day the account will be suspended) from
    /// the day after it. Returns how many were recorded.
    pub async fn renewal_notices(&self) -> Result<usize> {
        let policy = self.settings.policy;
        let today = self.today();
        let span = |days: i64| {
            today
                .checked_add(jiff::Span::new().days(days))
                .map_err(|e| ServiceError::Internal(e.to_string()))
        };
        let due_by = span(REMINDER_DAYS)?.to_string();
        let mut told = 0;
        // Renewals, and plan changes' differences, which the overdue pass enforces as
        // renewals (found by review: a difference suspended its account unannounced).
        for owed in Owed::BOTH {
            told += self.notices_of(owed, &due_by, today, policy).await?;
        }
        Ok(told)
    }

    /// [`Lodge::renewal_notices`] of renewals or of differences.
    async fn notices_of(
        &self,
        owed: Owed,
        due_by: &str,
        today: Date,
        policy: lodge_core::renewal::Policy,
    ) -> Result<usize> {
        use crate::events::{emit_once, invoice_data, EventKind};
        let mut told = 0;
        let mut after = 0;
        loop {
            let page = {
                let mut db = self.store.read_conn().await?;
                renewals::unpaid_due_by(&mut db, owed, due_by, after, PAGE).await?
            };
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            for inv in page {
                after = inv.invoice_id;
                let Ok(due) = inv.due_date.parse::<Date>() else {
                    continue;
                };
                // Credit added since it was issued pays it first, rather than a reminder or a
                // warning of a suspension that credit would prevent (found by the lifecycle
                // audit: both were sent, the credit used only on the suspension day). Not
                // one renewing an account cancelled for the end of its period: its line
                // comes off when the account ends, which a paid invoice would not give
                // back (found by review).
                let (lines, cancelling) = {
                    let mut db = self.store.read_conn().await?;
                    renewals::cancelling_lines(&mut db, inv.invoice_id).await?
                };
                if cancelling == 0 {
                    match self.pay_overdue_from_credit(&inv).await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(invoice = inv.invoice_id, error = %e,
                            "paying a renewal from credit before its notice failed"),
                    }
                }
                let now = self.now_us();
                let (kind, suspend_on) = if due >= today {
                    (EventKind::InvoiceReminder, None)
                } else {
                    // Sent today, it counts the graces (never a day already past: found by
                    // the time-travel audit, a warning sent after an outage named one), from
                    // the day it is recorded, as the overdue pass reads it (found by review:
                    // a pass crossing midnight named a day one earlier than enforced).
                    let sent_on = lodge_store::day_of(now)?;
                    let from = policy.graces_from(due, None, sent_on);
                    let on = policy.overdue_dates(from, None, sent_on).0;
                    (EventKind::InvoiceOverdue, Some(on.to_string()))
                };
                let mut tx = self.store.begin().await?;
                let Some(row) = billing::invoice(&mut *tx, inv.invoice_id).await? else {
                    continue;
                };
                if row.status != InvoiceStatus::Unpaid {
                    continue;
                }
                // Every account it renews ends at its period's end: nothing to remind of
                // (found by the lifecycle audit: "renew soon" for a cancelled account).
                if kind == EventKind::InvoiceReminder && lines > 0 && lines == cancelling {
                    continue;
                }
                // Issued within the day (a lead time shorter than the reminder's, a pass
                // catching up after downtime): its own notice has just said when it is due
                // (found by the mail audit: the invoice and its reminder in the same second).
                if kind == EventKind::InvoiceReminder && now - row.issued_at < DAY_US {
                    continue;
                }
                let mut data = invoice_data(&row);
                if let (Some(on), Some(obj)) = (suspend_on, data.as_object_mut()) {
                    obj.insert("suspend_on".into(), serde_json::Value::String(on));
                }
                let key = format!("{kind}:{}", inv.invoice_id);
                if emit_once(
                    &mut *tx,
                    kind,
                    inv.organization_id,
                    format!("invoice:{}", inv.invoice_id),
                    data,
                    key,
                    now,
                )
                .await?
                {
                    told += 1;
                }
                tx.commit().await.map_err(StoreError::from)?;
            }
            if !full {
                break;
            }
        }
        Ok(told)
    }

    /// Suspends the services of renewals unpaid past the suspension grace, and past the
    /// termination grace cancels the invoice and terminates them.
    pub async fn enforce_overdue(&self) -> Result<OverduePass> {
        let policy = self.settings.policy;
        let today = self.today();
        let due_by = today
            .checked_sub(jiff::Span::new().days(policy.suspend_after_days))
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .to_string();
        let mut pass = OverduePass::default();
        // Renewals, then plan changes' differences for periods paid at the old price (found
        // by the billing audit: one left unpaid was never enforced, the period served on
        // the dearer plan at the old price).
        for owed in Owed::BOTH {
            self.enforce_overdue_of(owed, &due_by, today, &mut pass)
                .await?;
        }
        Ok(pass)
    }

    /// [`Lodge::enforce_overdue`] over renewals or over differences.
    async fn enforce_overdue_of(
        &self,
        owed: Owed,
        due_by: &str,
        today: Date,
        pass: &mut OverduePass,
    ) -> Result<()> {
        let policy = self.settings.policy;
        let mut after = 0;
        loop {
            let page = {
                let mut db = self.store.read_conn().await?;
                renewals::unpaid_due_by(&mut db, owed, due_by, after, PAGE).await?
            };
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            for inv in page {
                after = inv.invoice_id;
                let Ok(due) = inv.due_date.parse::<Date>() else {
                    continue;
                };
                // A difference whose period is over completes nothing any more: it is
                // cancelled, and the suspension it made lifted, rather than suspending the
                // account for good while its later periods are billed and paid (found by
                // the lifecycle audit). As an upgrade whose period ended unpaid, it is not
                // charged for days gone.
                if owed == Owed::Differences && self.difference_lapsed(&inv, today).await? {
                    match self
                        .cancel_lapsed_difference(inv.organization_id, inv.invoice_id)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) => tracing::warn!(invoice = inv.invoice_id, error = %e,
                            "cancelling a lapsed plan change difference failed"),
                    }
                    continue;
                }
                // Nothing is done before the customer was warned (the notices pass, just
                // before this one, warns), and the graces count from the warning when it
                // came late ([`lodge_core::renewal::Policy::graces_from`]).
                let Some(warned) = self.overdue_warned_on(inv.invoice_id).await? else {
                    continue;
                };
                let from = policy.graces_from(due, Some(warned), today);
                let step = match policy.overdue_step_after(from, step_day(&inv), today) {
                    // A difference never terminates: the period it completes was paid at
                    // the old price, which termination would keep with nothing served
                    // (found by review). The account stays suspended until it is paid.
                    OverdueStep::Terminate if owed == Owed::Differences => OverdueStep::Suspend,
                    step => step,
                };
                // Credit added since the renewal was issued (a deposit, a refund to credit)
                // pays it before anything is suspended or terminated (found by the billing
                // audit: both accounts suspended with 20.00 of credit unused).
                if step != OverdueStep::None {
                    match self.pay_overdue_from_credit(&inv).await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(invoice = inv.invoice_id, error = %e,
                            "paying an overdue renewal from credit failed"),
                    }
                }
                // The suspension step is recorded the first time it is taken: the
                // termination counts from it.
                if step != OverdueStep::None && inv.suspension_step_at.is_none() {
                    let mut db = self.store.begin().await?;
                    renewals::mark_suspension_step(&mut *db, inv.invoice_id, self.now_us()).await?;
                    db.commit().await.map_err(StoreError::from)?;
                }
                let done = match step {
                    OverdueStep::None => Ok(()),
                    OverdueStep::Suspend => self
                        .queue_suspensions(inv.invoice_id)
                        .await
                        .map(|n| pass.suspensions += n),
                    OverdueStep::Terminate => self
                        .terminate_overdue(inv.organization_id, inv.invoice_id)
                        .await
                        .map(|t| pass.terminations += usize::from(t)),
                };
                if let Err(e) = done {
                    tracing::warn!(invoice = inv.invoice_id, error = %e,
                        "acting on an overdue renewal failed; the next pass tries again");
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// The day an unpaid invoice's overdue warning (`invoice.overdue`) was sent, if it was.
    async fn overdue_warned_on(&self, invoice_id: i64) -> Result<Option<Date>> {
        let key = format!("{}:{invoice_id}", crate::events::EventKind::InvoiceOverdue);
        let mut db = self.store.read_conn().await?;
        let at = lodge_store::events::recorded_at(&mut db, &key).await?;
        Ok(at.map(lodge_store::day_of).transpose()?)
    }

    /// Pays an overdue renewal in full from its organization's credit when the balance
    /// covers what is due (all or nothing, as the payment page does); whether it did.
    async fn pay_overdue_from_credit(&self, inv: &renewals::UnpaidRenewal) -> Result<bool> {
        let (balance, due) = {
            let mut db = self.store.read_conn().await?;
            let balance = lodge_store::orgs::credits_of(&mut db, &[inv.organization_id])
                .await?
                .get(&inv.organization_id)
                .copied()
                .unwrap_or(0);
            let due = billing::invoice(&mut db, inv.invoice_id)
                .await?
                .map_or(0, |i| i.amount_due());
            (balance, due)
        };
        if due <= 0 || balance < due {
            return Ok(false);
        }
        match self.pay_from_credit(&[inv.invoice_id], SCHEDULER).await {
            Ok(()) => {
                tracing::info!(
                    invoice = inv.invoice_id,
                    "an overdue renewal was paid from credit added since it was issued"
                );
                Ok(true)
            }
            // Paid, cancelled or the credit spent meanwhile: the step goes on as planned.
            Err(ServiceError::Conflict(_) | ServiceError::InsufficientCredit(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues the suspension of each active service of an overdue invoice (once each).
    async fn queue_suspensions(&self, invoice: i64) -> Result<usize> {
        let ctx = self.write_ctx(SCHEDULER);
        let mut tx = self.store.begin().await?;
        let mut queued = 0;
        for service in renewals::services_billed(&mut tx, invoice).await? {
            let Some(h) = hosting::hosting(&mut *tx, service).await? else {
                continue;
            };
            if h.status != HostingStatus::Active {
                continue;
            }
            let key = format!("{JOB_SUSPEND_OVERDUE}:{service}:{invoice}");
            if lodge_store::jobs::by_dedupe_key(&mut *tx, &key)
                .await?
                .is_some()
            {
                continue;
            }
            enqueue_later(
                &ctx,
                &mut *tx,
                JOB_SUSPEND_OVERDUE,
                serde_json::json!({ "hosting_id": service, "invoice_id": invoice }),
                &key,
            )
            .await?;
            queued += 1;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(queued)
    }

    /// Whether the period a plan change's difference completes is over by `today`.
    async fn difference_lapsed(&self, inv: &renewals::UnpaidRenewal, today: Date) -> Result<bool> {
        let mut db = self.store.read_conn().await?;
        let end = renewals::difference_period_end(&mut db, inv.invoice_id).await?;
        Ok(end
            .and_then(|e| e.parse::<Date>().ok())
            .is_some_and(|end| today >= end))
    }

    /// Cancels an unpaid plan change difference whose period is over (what was paid of it
    /// back to credit), and lifts the suspension it made of its services when nothing
    /// else of theirs is overdue; whether it cancelled it.
    async fn cancel_lapsed_difference(&self, org: OrganizationId, invoice: i64) -> Result<bool> {
        let ctx = self.write_ctx(SCHEDULER);
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, org).await?;
        let Some(inv) = billing::lock_invoice(&mut tx, invoice).await? else {
            return Ok(false);
        };
        let note = "Returned from a plan change difference cancelled unpaid: its period ended";
        if inv.status != InvoiceStatus::Unpaid
            || !crate::billing::cancel_returning(&mut tx, &inv, note, SCHEDULER, ctx.now).await?
        {
            return Ok(false);
        }
        let number = inv.number.clone().unwrap_or_else(|| invoice.to_string());
        let lifted =
            format!("unsuspended: plan change difference {number} cancelled, its period over");
        for service in renewals::services_billed(&mut tx, invoice).await? {
            if renewals::status_of(&mut tx, service).await? == Some(HostingStatus::Suspended) {
                lift_overdue_suspension(&ctx, &mut tx, service, invoice, &lifted).await?;
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Cancels a renewal unpaid past the termination grace (credit applied and money
    /// received go back to the account) and queues its services' termination. `false` when
    /// it was paid or cancelled meanwhile.
    async fn terminate_overdue(&self, org: OrganizationId, invoice: i64) -> Result<bool> {
        let ctx = self.write_ctx(SCHEDULER);
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, org).await?;
        let Some(inv) = billing::lock_invoice(&mut tx, invoice).await? else {
            return Ok(false);
        };
        let note = "Returned from a renewal cancelled unpaid";
        if inv.status != InvoiceStatus::Unpaid
            || !crate::billing::cancel_returning(&mut tx, &inv, note, SCHEDULER, ctx.now).await?
        {
            return Ok(false);
        }
        let number = inv.number.clone().unwrap_or_else(|| invoice.to_string());
        for service in renewals::services_billed(&mut tx, invoice).await? {
            if crate::billing::termination_waiting(&mut tx, &service.to_string()).await? {
                continue; // a cancellation's ends it
            }
            enqueue_later(
                &ctx,
                &mut *tx,
                JOB_TERMINATE,
                serde_json::json!({
                    "hosting_id": service,
                    "reason": "overdue",
                    "note": format!("terminated: renewal {number} unpaid past the grace"),
                }),
                // One per renewal invoice (crate::billing::terminate_key).
                &crate::billing::terminate_key(service, &format!("overdue:{invoice}")),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// The job of [`JOB_SUSPEND_OVERDUE`]: suspends the account on its server and records
    /// it, unless the invoice was paid meanwhile. Checked again under the account's lock
    /// after the driver acted: a payment that came in between undoes the suspension.
    pub(crate) async fn suspend_overdue(&self, id: HostingId, invoice: i64) -> Result<()> {
        let unpaid = |s: InvoiceStatus| s == InvoiceStatus::Unpaid;
        let Some(inv) = billing::invoice(&mut self.store.read_conn().await?, invoice).await? else {
            return Ok(());
        };
        if !unpaid(inv.status) {
            return Ok(());
        }
        let Some(h) = hosting::hosting(self.store.reader(), id).await? else {
            return Ok(());
        };
        if h.status != HostingStatus::Active {
            return Ok(());
        }
        let target = self.account(&h).await?;
        if let Some((account, t)) = &target {
            t.driver
                .suspend(account)
                .await
                .map_err(|e| ServiceError::Internal(format!("{}: {e}", t.name)))?;
        }
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        hosting::lock_hosting(&mut tx, id).await?;
        let still = billing::invoice(&mut tx, invoice)
            .await?
            .is_some_and(|i| unpaid(i.status));
        // A plan change's difference is not a renewal (found by review: the note, its mail
        // and webhook named one that was paid).
        let what = if inv.kind == lodge_core::InvoiceKind::Renewal {
            "renewal"
        } else {
            "plan change difference"
        };
        let number = format!(
            "suspended: {what} {} unpaid",
            inv.number.as_deref().unwrap_or("invoice")
        );
        let suspended = still
            && hosting::transition(&mut tx, id, HostingEvent::Suspend, &number, SCHEDULER, now)
                .await?;
        if suspended {
            hosting::set_last_error(&mut tx, id, None, now).await?;
            crate::events::hosting_event(
                &mut *tx,
                crate::events::EventKind::HostingSuspended,
                id,
                &number,
                SCHEDULER,
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        if !suspended {
            // Paid (or changed) while the server was suspending it: lift it again.
            if let Some((account, t)) = &target {
                t.driver
                    .unsuspend(account)
                    .await
                    .map_err(|e| ServiceError::Internal(format!("{}: {e}", t.name)))?;
            }
        }
        Ok(())
    }
}

impl Lodge {
    /// A terminated account is no longer billed: see [`Lodge::release_unpaid`].
    pub(crate) async fn release_unpaid_renewals(
        &self,
        org: OrganizationId,
        service: HostingId,
    ) -> Result<()> {
        self.release_unpaid(
            org,
            &service.to_string(),
            "plan",
            "Account terminated: period not billed",
        )
        .await
    }

    /// Something renewals bill (`kind` `plan`: a hosting account; `domain_renewal`: a
    /// domain) is no longer billed: its unpaid renewals are cancelled (credit applied and
    /// money received go back to the account as credit) or, when they bill something else
    /// still live, an `adjustment` line takes its part off them.
    pub(crate) async fn release_unpaid(
        &self,
        org: OrganizationId,
        service: &str,
        kind: &str,
        why: &str,
    ) -> Result<()> {
        let ctx = self.write_ctx(SCHEDULER);
        let mut tx = self.store.begin().await?;
        billing::lock_credit(&mut tx, org).await?;
        release_unpaid_in(&ctx, &mut tx, service, kind, why).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Domains past their expiration date by the termination grace and not paid beyond it
    /// expire (`expired`; on the date itself when the customer does not renew them); their
    /// unpaid renewals no longer bill them. Until then the
    /// renewal may still be paid and the domain renewed at the registry (within its
    /// grace after expiry), as the hosting on the same invoice may (found by the domains
    /// audit: the domain expired, and dropped off the invoice, on its expiration date
    /// itself, so a renewal paid days late renewed the hosting and lost the name).
    /// Returns how many expired.
    pub async fn expire_domains(&self) -> Result<usize> {
        let today = self.today();
        let cutoff = today
            .checked_sub(jiff::Span::new().days(self.settings.policy.terminate_after_days))
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .to_string();
        let mut expired = 0;
        let due = {
            let mut db = self.store.read_conn().await?;
            renewals::domains_expired_by(&mut db, &today.to_string(), &cutoff, 10_000).await?
        };
        for (id, org) in due {
            let mut tx = self.store.begin().await?;
            billing::lock_credit(&mut tx, org).await?;
            let moved =
                hosting::set_domain_status(&mut tx, id, DomainEvent::Expire, self.now_us()).await?;
            tx.commit().await.map_err(StoreError::from)?;
            if moved {
                expired += 1;
                self.release_unpaid(
                    org,
                    &id.to_string(),
                    "domain_renewal",
                    "Domain expired: not renewed",
                )
                .await?;
            }
        }
        Ok(expired)
    }

    /// The job of [`JOB_RENEW_DOMAIN`]: asks the registrar to renew a paid domain year and
    /// records the new expiration date it reports (a registrar that leaves the work to
    /// staff answers `Pending`: the domain stays paid through the year).
    /// A registrar that leaves the renewal to staff puts it on their list of registry
    /// tasks (once per job: `source` is the job's key).
    ///
    /// `from` is the expiry the renewal was billed from (older jobs have none: the one
    /// recorded is used).
    pub(crate) async fn renew_domain(
        &self,
        id: DomainId,
        years: u32,
        source: &str,
        from: Option<&str>,
    ) -> Result<()> {
        let Some(d) = hosting::domain(self.store.reader(), id).await? else {
            return Ok(());
        };
        if d.status != lodge_core::DomainStatus::Active {
            return Ok(());
        }
        let registrar = self.registrar_of(&d).await?;
        let name = lodge_core::DomainName::parse(&d.name)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let expiration = from
            .map(str::to_owned)
            .or_else(|| d.expiration_date.clone())
            .unwrap_or_default();
        let outcome = registrar
            .renew(&name, years, &expiration)
            .await
            .map_err(|e| ServiceError::Internal(format!("registrar: {e}")))?;
        let mut tx = self.store.begin().await?;
        match outcome {
            crate::registrar::Outcome::Completed {
                expiration_date, ..
            } => {
                renewals::set_expiration(&mut *tx, id, &expiration_date, self.now_us()).await?;
            }
            crate::registrar::Outcome::Pending => {
                let detail = serde_json::json!({
                    "years": years,
                    "expiration_date": d.expiration_date,
                })
                .to_string();
                lodge_store::registry::add_task(
                    &mut tx,
                    id,
                    "renew",
                    &detail,
                    source,
                    self.now_us(),
                )
                .await?;
                tracing::info!(domain = %id, years, "a domain renewal was left to staff");
            }
            // Only transfers are refused so; a renewal never is.
            crate::registrar::Outcome::Refused(why) => {
                return Err(ServiceError::Internal(format!("registrar: {why}")));
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// A renewal invoice was paid: each service it bills moves into its next period (once),
/// and a service the scheduler suspended for an overdue renewal is unsuspended at once when
/// no other overdue renewal of it is left.
pub(crate) async fn renewal_paid<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoice: i64,
) -> Result<()> {
    let number = billing::invoice(conn, invoice)
        .await?
        .and_then(|i| i.number)
        .unwrap_or_else(|| invoice.to_string());
    let domains = renewals::billed_domains(conn, invoice).await?;
    let periods = renewals::billed_periods(conn, invoice).await?;
    advance_billed(ctx, conn, invoice, &number, &domains, &periods).await
}

/// What paying renewal `invoice` (`number`) does to what it bills: each domain year and
/// service period moves on (once), the registrar's renewals are queued, and an account the
/// scheduler suspended for an overdue renewal is lifted when nothing else is overdue.
async fn advance_billed<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoice: i64,
    number: &str,
    domains: &[(DomainId, String, String, i64)],
    periods: &[renewals::BilledPeriod],
) -> Result<()> {
    for (domain, start, end, _) in domains {
        if renewals::advance_domain(conn, *domain, start, end, ctx.now).await? {
            enqueue_later(
                ctx,
                conn,
                JOB_RENEW_DOMAIN,
                // The expiry the year is renewed from, fixed now: the registry's renew is
                // sent with it (RFC 5731's curExpDate), so a retry after a lost answer
                // cannot renew a second year even once the daily sync has read the new
                // expiry back (found by review of the EPP client).
                serde_json::json!({ "domain_id": domain, "years": 1, "from": start }),
                &format!("{JOB_RENEW_DOMAIN}:{domain}:{start}"),
            )
            .await?;
        }
    }
    for p in periods {
        // Moved on (with an end-of-period cancellation after this renewal was issued, then
        // paid: the period paid for is served, and the account ends at its end), its
        // status as it is; not moved (paid again), read.
        let status =
            match renewals::advance_period(conn, p.service, &p.start, &p.end, &p.start, ctx.now)
                .await?
            {
                Some(status) => Some(status),
                None => renewals::status_of(conn, p.service).await?,
            };
        if status != Some(HostingStatus::Suspended) {
            continue;
        }
        let note = format!("unsuspended: renewal {number} paid");
        lift_overdue_suspension(ctx, conn, p.service, invoice, &note).await?;
    }
    Ok(())
}

/// Once `invoice` is paid (`note`, the history's): lifts the suspension of `service` (suspended) when
/// the scheduler made it for an overdue invoice and no other of its renewals or
/// differences is overdue now, as the overdue pass judges it: warned, with its graces
/// counted from a late warning ([`lodge_core::renewal::Policy::graces_from`]; by the raw
/// due dates, an account whose other renewal was warned late, after an outage, stayed
/// suspended days before that renewal's own suspension day).
async fn lift_overdue_suspension<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    service: HostingId,
    invoice: i64,
    note: &str,
) -> Result<()> {
    if renewals::last_suspended_by(conn, service).await?.as_deref() != Some(SCHEDULER) {
        return Ok(()); // suspended by staff: theirs to lift
    }
    let id = service.to_string();
    let mut unpaid = renewals::unpaid_with_line(conn, &id, "plan").await?;
    unpaid.extend(renewals::unpaid_differences_of(conn, &id).await?);
    for (other, due) in unpaid.into_iter().filter(|(id, _)| *id != invoice) {
        let Ok(due) = due.parse::<Date>() else {
            continue;
        };
        let key = format!("{}:{other}", crate::events::EventKind::InvoiceOverdue);
        let Some(warned) = lodge_store::events::recorded_at(conn, &key).await? else {
            continue; // nothing is suspended for a renewal before its warning
        };
        let from = ctx
            .policy
            .graces_from(due, Some(lodge_store::day_of(warned)?), ctx.today);
        if ctx.policy.overdue_step(from, ctx.today) != OverdueStep::None {
            return Ok(()); // still overdue
        }
    }
    enqueue_later(
        ctx,
        conn,
        JOB_UNSUSPEND,
        serde_json::json!({ "hosting_id": service, "actor": SCHEDULER, "note": note }),
        &format!("{JOB_UNSUSPEND}:{service}:{invoice}"),
    )
    .await?;
    Ok(())
}

/// What paying a plan change's difference (`invoice`, a `manual` invoice without a change
/// of its own) does: lifts the scheduler's suspension of its services when nothing else of
/// theirs is overdue, as paying a renewal does.
pub(crate) async fn difference_paid<C: lodge_store::SqlConn>(
    ctx: &WriteCtx<'_>,
    conn: &mut C,
    invoice: &billing::InvoiceRow,
) -> Result<()> {
    let number = invoice
        .number
        .clone()
        .unwrap_or_else(|| invoice.id.to_string());
    let note = format!("unsuspended: invoice {number} paid");
    for service in renewals::services_billed(conn, invoice.id).await? {
        if renewals::status_of(conn, service).await? == Some(HostingStatus::Suspended) {
            lift_overdue_suspension(ctx, conn, service, invoice.id, &note).await?;
        }
    }
    Ok(())
}

/// [`Lodge::release_unpaid`]'s writes, in the caller's transaction, the organization's
/// credit locked already (an account cancelled at once releases its renewals in the same
/// transaction, so none can be paid between: found by the money audit).
pub(crate) async fn release_unpaid_in(
    ctx: &WriteCtx<'_>,
    tx: &mut lodge_store::AnyConnection,
    service: &str,
    kind: &str,
    why: &str,
) -> Result<()> {
    for (invoice, _) in renewals::unpaid_with_line(&mut *tx, service, kind).await? {
        let Some(inv) = billing::lock_invoice(&mut *tx, invoice).await? else {
            continue;
        };
        if inv.status != InvoiceStatus::Unpaid {
            continue;
        }
        let others_live = renewals::live_lines_besides(&mut *tx, invoice, service).await? > 0;
        if others_live {
            let mine = renewals::unreleased_lines_of(&mut *tx, invoice, service, kind).await?;
            if mine.is_empty() {
                // Taken off already (the cancellation released it; now its termination).
                continue;
            }
            let amount: i64 = mine.iter().map(|(_, _, a)| a).sum();
            let Some(returned) =
                renewals::reduce_unpaid(&mut *tx, invoice, amount, ctx.now).await?
            else {
                continue;
            };
            let position = renewals::line_count(&mut *tx, invoice).await?;
            for (i, (start, end, amount)) in mine.into_iter().enumerate() {
                billing::insert_line(
                    &mut *tx,
                    invoice,
                    &billing::NewLine {
                        position: position + i64::try_from(i).unwrap_or(0),
                        kind: "adjustment",
                        description: why,
                        service_id: Some(service.to_owned()),
                        period_start: start,
                        period_end: end,
                        amount_minor: -amount,
                    },
                )
                .await?;
            }
            crate::billing::give_back(
                &mut *tx,
                &inv,
                returned,
                "a renewal no longer billed",
                ctx.actor,
                ctx.now,
            )
            .await?;
            // What is left may now be covered.
            if let Some(now_inv) = billing::invoice(&mut *tx, invoice).await? {
                settle(ctx, &mut *tx, &now_inv).await?;
            }
        } else {
            let note = "Returned from a renewal no longer billed";
            crate::billing::cancel_returning(tx, &inv, note, ctx.actor, ctx.now).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn due(next: &str, anchor: Option<&str>, months: Option<i64>, cycle: &str) -> DueService {
        DueService {
            legacy_id: 1,
            id: HostingId::new(),
            organization_id: OrganizationId::new(),
            plan_id: lodge_core::PlanId::new(),
            domain_name: "example.com".into(),
            next_due_date: next.into(),
            period_anchor: anchor.map(str::to_owned),
            billing_cycle: cycle.into(),
            renewal_months: months,
            recurring_minor: 500,
            currency: "USD".into(),
            status: HostingStatus::Active,
        }
    }

    #[test]
    fn the_next_period_counts_from_the_anchor() {
        let s = due("2026-02-28", Some("2026-01-31"), Some(1), "monthly");
        assert_eq!(period_of(&s), Some((date(2026, 2, 28), date(2026, 3, 31))));
        // Without an anchor, from the due date.
        let s = due("2026-02-28", None, None, "quarterly");
        assert_eq!(period_of(&s), Some((date(2026, 2, 28), date(2026, 5, 28))));
        // An offer renewing yearly on a monthly intro.
        let s = due("2026-02-15", Some("2026-01-15"), Some(12), "monthly");
        assert_eq!(period_of(&s), Some((date(2026, 2, 15), date(2027, 2, 15))));
        assert_eq!(period_of(&due("2026-02-15", None, None, "one_time")), None);
        assert_eq!(period_of(&due("garbage", None, Some(1), "monthly")), None);
    }

    /// Pages that end inside a group (one organization's accounts due on one day) leave it
    /// whole: billed once, with every account of it, whatever the page size.
    #[test]
    fn a_group_split_by_pages_is_billed_whole() {
        let (a, b) = (OrganizationId::new(), OrganizationId::new());
        let mut services = Vec::new();
        for (org, day, n) in [
            (a, "2026-12-10", 3),
            (b, "2026-12-10", 5),
            (a, "2026-12-11", 2),
        ] {
            for _ in 0..n {
                let mut s = due(day, None, Some(1), "monthly");
                s.organization_id = org;
                services.push(s);
            }
        }
        for page in 1..=services.len() + 1 {
            let mut whole = WholeGroups::default();
            let mut billed = Vec::new();
            let mut rest = services.clone();
            loop {
                let this: Vec<DueService> = rest.drain(..page.min(rest.len())).collect();
                let full = this.len() == page;
                for ((org, day), group) in whole.take(this, full) {
                    billed.push((org, day, group.len()));
                }
                if !full {
                    break;
                }
            }
            assert_eq!(
                billed,
                [
                    (a, "2026-12-10".to_owned(), 3),
                    (b, "2026-12-10".to_owned(), 5),
                    (a, "2026-12-11".to_owned(), 2)
                ],
                "pages of {page}"
            );
        }
    }
}

/// What the scheduler will do in the next days, read without writing anything
/// ([`Lodge::billing_preview`]).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The first and last day looked at.
    pub from: String,
    pub to: String,
    /// Renewal invoices to issue, one per organization and due date.
    pub renewals: Vec<PreviewRenewal>,
    /// Accounts to suspend for an unpaid renewal: one issued, or one to issue that the
    /// organization's credit will not cover (`invoice_id` null).
    pub suspensions: Vec<PreviewStep>,
    /// Accounts to terminate: renewals unpaid past the termination grace (the invoice is
    /// cancelled) and end-of-period cancellations.
    pub terminations: Vec<PreviewStep>,
    /// Renewal invoices unpaid past their due date today.
    pub overdue_invoices: Vec<PreviewOverdue>,
    /// Accounts suspended today.
    pub suspended: Vec<PreviewAccount>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewRenewal {
    pub organization_id: String,
    /// The day it is issued (the lead time before the due date, or today if that passed).
    #[schema(format = Date)]
    pub issue_date: String,
    #[schema(format = Date)]
    pub due_date: String,
    /// In minor units.
    pub total_minor: i64,
    pub accounts: Vec<PreviewAccount>,
    /// The organization's domains renewing automatically on the same due date: a year
    /// each, on the same invoice.
    pub domains: Vec<PreviewDomain>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewDomain {
    pub domain_id: String,
    pub name: String,
    /// A year's renewal at the TLD's price, in minor units.
    pub amount_minor: i64,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewAccount {
    pub hosting_id: String,
    pub organization_id: String,
    pub domain: String,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewStep {
    pub hosting_id: String,
    /// The day it happens.
    #[schema(format = Date)]
    pub date: String,
    /// `overdue` (with its invoice) or `end of period`.
    pub reason: String,
    /// The unpaid renewal invoice; null for an end-of-period cancellation or a renewal not
    /// issued yet.
    pub invoice_id: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewOverdue {
    pub invoice_id: i64,
    pub organization_id: String,
    #[schema(format = Date)]
    pub due_date: String,
    pub days_late: i64,
}

impl Preview {
    /// What an unpaid renewal leads an account (in `status`) to by `last`: its suspension
    /// if active, its termination if not ended, on the `(suspend, terminate)` days.
    fn overdue_steps(
        &mut self,
        hosting: HostingId,
        status: Option<HostingStatus>,
        (suspend_on, terminate_on): (Date, Date),
        last: Date,
        invoice_id: Option<i64>,
    ) {
        let step = |date: Date| PreviewStep {
            hosting_id: hosting.to_string(),
            date: date.to_string(),
            reason: "overdue".into(),
            invoice_id,
        };
        if status == Some(HostingStatus::Active) && suspend_on <= last {
            self.suspensions.push(step(suspend_on));
        }
        if status.is_some_and(|s| !s.is_closed()) && terminate_on <= last {
            self.terminations.push(step(terminate_on));
        }
    }
}

/// The longest preview: a year.
pub const MAX_PREVIEW_DAYS: i64 = 366;

fn plus_days(d: Date, days: i64) -> Date {
    d.checked_add(jiff::Span::new().days(days))
        .unwrap_or(Date::MAX)
}

impl Lodge {
    /// What the scheduler will do from today through `days` days from now if nothing is
    /// paid meanwhile: renewals to issue, suspensions and terminations, with today's overdue
    /// invoices and suspended accounts. Writes nothing.
    pub async fn billing_preview(&self, days: i64) -> Result<Preview> {
        if !(0..=MAX_PREVIEW_DAYS).contains(&days) {
            return Err(ServiceError::field(
                "days",
                format!("The number of days is between 0 and {MAX_PREVIEW_DAYS}."),
            ));
        }
        let policy = self.settings.policy;
        let today = self.today();
        let last = plus_days(today, days);
        let mut db = self.store.read_conn().await?;
        let mut preview = Preview {
            from: today.to_string(),
            to: last.to_string(),
            ..Preview::default()
        };
        // Renewals: periods ending by the last day's horizon, not billed yet.
        let horizon = policy.billing_horizon(last).to_string();
        let mut after = None;
        type Group = (Vec<DueService>, Vec<(renewals::DueDomain, i64)>);
        let mut groups: BTreeMap<(OrganizationId, String), Group> = BTreeMap::new();
        loop {
            let page = renewals::due(&mut db, &horizon, after.as_ref(), PAGE).await?;
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            if let Some(l) = page.last() {
                after = Some((
                    l.organization_id.to_string(),
                    l.next_due_date.clone(),
                    l.legacy_id,
                ));
            }
            for s in page {
                groups
                    .entry((s.organization_id, s.next_due_date.clone()))
                    .or_default()
                    .0
                    .push(s);
            }
            if !full {
                break;
            }
        }
        // Domains renewing automatically: on their organization's invoice of that day (with
        // its accounts', or alone), at the TLD's price, as the pass bills them.
        let mut after = None;
        let mut prices: std::collections::HashMap<String, Option<i64>> = Default::default();
        loop {
            let page = renewals::domains_due(&mut db, &horizon, after.as_ref(), PAGE).await?;
            let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
            if let Some(l) = page.last() {
                after = Some((
                    l.organization_id.to_string(),
                    l.next_billing_date.clone(),
                    l.legacy_id,
                ));
            }
            for d in page {
                let price = match prices.get(&d.tld) {
                    Some(p) => *p,
                    None => {
                        let p = renewals::renew_price(&mut db, &d.tld).await?;
                        prices.insert(d.tld.clone(), p);
                        p
                    }
                };
                if let Some(price) = price {
                    groups
                        .entry((d.organization_id, d.next_billing_date.clone()))
                        .or_default()
                        .1
                        .push((d, price));
                }
            }
            if !full {
                break;
            }
        }
        // Each organization's credit pays its renewals as they are issued, in due order; an
        // invoice it does not cover stays unpaid and leads to its accounts' suspension and
        // termination (if nothing is paid meanwhile).
        let orgs: Vec<OrganizationId> = groups
            .keys()
            .map(|(o, _)| *o)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut credit = std::collections::HashMap::new();
        for chunk in orgs.chunks(500) {
            credit.extend(lodge_store::orgs::credits_of(&mut db, chunk).await?);
        }
        // In due order per organization; a renewal the credit pays moves its accounts and
        // domains on, so their next period is billed in the window too when it falls in it
        // (found by the billing audit: a monthly account showed one renewal in 60 days).
        let mut projected = 0usize;
        while let Some(((org, due), (services, domains))) = groups.pop_first() {
            let total: i64 = services.iter().map(|s| s.recurring_minor).sum::<i64>()
                + domains.iter().map(|(_, price)| price).sum::<i64>();
            let left = credit.entry(org).or_insert(0);
            let covered = *left >= total;
            *left = (*left - total).max(0);
            if covered && projected < 100_000 {
                for s in &services {
                    if let Some((_, end)) = period_of(s) {
                        let next = end.to_string();
                        if next <= horizon && next > due {
                            let mut s = s.clone();
                            // As paying it sets the anchor when there is none (found by
                            // review: later periods then follow the due date instead).
                            if s.period_anchor.is_none() {
                                s.period_anchor = Some(due.clone());
                            }
                            s.next_due_date = next.clone();
                            groups.entry((org, next)).or_default().0.push(s);
                            projected += 1;
                        }
                    }
                }
                for (d, price) in &domains {
                    let Ok(start) = d.next_billing_date.parse::<Date>() else {
                        continue;
                    };
                    let next = add_months(start, 12).to_string();
                    if next <= horizon {
                        let mut d = d.clone();
                        d.next_billing_date = next.clone();
                        groups.entry((org, next)).or_default().1.push((d, *price));
                        projected += 1;
                    }
                }
            }
            let due_day = due.parse::<Date>().ok();
            if let (false, Some(d)) = (covered, due_day) {
                // Issued late (its date passed), an invoice is due on the day it is issued.
                let steps = policy.overdue_dates(policy.invoice_due(d, today), None, today);
                for s in &services {
                    preview.overdue_steps(s.id, Some(s.status), steps, last, None);
                }
            }
            let issue = due_day
                .map(|d| plus_days(d, -policy.lead_days).max(today))
                .map_or_else(|| today.to_string(), |d| d.to_string());
            // Due as it will be issued: a period whose start has passed (a pass catching up)
            // is due the day it is issued (found by the time-travel audit: the preview
            // listed catch-up invoices by dates long gone).
            let due = due_day.map_or(due, |d| policy.invoice_due(d, today).to_string());
            preview.renewals.push(PreviewRenewal {
                organization_id: org.to_string(),
                issue_date: issue,
                due_date: due,
                total_minor: total,
                accounts: services
                    .iter()
                    .map(|s| PreviewAccount {
                        hosting_id: s.id.to_string(),
                        organization_id: org.to_string(),
                        domain: s.domain_name.clone(),
                    })
                    .collect(),
                domains: domains
                    .iter()
                    .map(|(d, price)| PreviewDomain {
                        domain_id: d.id.to_string(),
                        name: d.name.clone(),
                        amount_minor: *price,
                    })
                    .collect(),
            });
        }
        // Unpaid renewals and differences: overdue today, and what they lead to by the
        // last day (a difference suspends, never terminates: found by review, the preview
        // left differences out).
        let due_by = last.to_string();
        for owed in Owed::BOTH {
            let mut after = 0;
            loop {
                let page = renewals::unpaid_due_by(&mut db, owed, &due_by, after, PAGE).await?;
                let full = i64::try_from(page.len()).unwrap_or(0) >= PAGE;
                for inv in page {
                    after = inv.invoice_id;
                    let Ok(due) = inv.due_date.parse::<Date>() else {
                        continue;
                    };
                    if due < today {
                        preview.overdue_invoices.push(PreviewOverdue {
                            invoice_id: inv.invoice_id,
                            organization_id: inv.organization_id.to_string(),
                            due_date: inv.due_date.clone(),
                            days_late: i64::from((today - due).get_days()),
                        });
                    }
                    let warned = self.overdue_warned_on(inv.invoice_id).await?;
                    let from = policy.graces_from(due, warned, today);
                    let steps = policy.overdue_dates(from, step_day(&inv), today);
                    if owed == Owed::Differences {
                        for service in renewals::services_billed(&mut db, inv.invoice_id).await? {
                            let status = renewals::status_of(&mut db, service).await?;
                            let steps = (steps.0, Date::MAX);
                            preview.overdue_steps(
                                service,
                                status,
                                steps,
                                last,
                                Some(inv.invoice_id),
                            );
                        }
                        continue;
                    }
                    for p in renewals::billed_periods(&mut db, inv.invoice_id).await? {
                        let Some(h) = hosting::hosting(self.store.reader(), p.service).await?
                        else {
                            continue;
                        };
                        // An account cancelled for the end of its period ends then (its part
                        // comes off the invoice): it is neither suspended nor terminated for
                        // this invoice after that day (found by the billing audit: listed for
                        // both).
                        let ends = h
                            .cancel_effective_date
                            .as_deref()
                            .and_then(|d| d.parse::<Date>().ok());
                        let (suspend_on, terminate_on) = steps;
                        let before_end = |d: Date| ends.is_none_or(|e| d < e);
                        let status = Some(h.status).filter(|_| before_end(suspend_on));
                        if before_end(terminate_on) {
                            preview.overdue_steps(
                                p.service,
                                status,
                                steps,
                                last,
                                Some(inv.invoice_id),
                            );
                        } else if let Some(s) = status {
                            // Suspended before it ends, not terminated for the invoice.
                            preview.overdue_steps(
                                p.service,
                                Some(s),
                                (suspend_on, Date::MAX),
                                last,
                                Some(inv.invoice_id),
                            );
                        }
                    }
                }
                if !full {
                    break;
                }
            }
        }
        drop(db);
        for (id, _) in hosting::cancellations_due(self.store.reader(), &last.to_string()).await? {
            if let Some(h) = hosting::hosting(self.store.reader(), id).await? {
                let date = h
                    .cancel_effective_date
                    .as_deref()
                    .and_then(|d| d.parse::<Date>().ok())
                    .map_or(today, |d| d.max(today));
                preview.terminations.push(PreviewStep {
                    hosting_id: id.to_string(),
                    date: date.to_string(),
                    reason: "end of period".into(),
                    invoice_id: None,
                });
            }
        }
        let mut db = self.store.read_conn().await?;
        preview.suspended = renewals::suspended(&mut db, 10_000)
            .await?
            .into_iter()
            .map(|(id, org, domain)| PreviewAccount {
                hosting_id: id.to_string(),
                organization_id: org.to_string(),
                domain,
            })
            .collect();
        Ok(preview)
    }
}
