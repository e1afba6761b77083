//! Payments from account credit as a group commit: the payments waiting at the same moment
//! share one transaction, and each caller hears its outcome once that transaction is on
//! disk. Each payment is all-or-nothing on its own (a payment refused, say of an invoice
//! paid meanwhile, is undone alone).
//!
//! On SQLite's batch writer each payment has its savepoint from the start. On PostgreSQL
//! the batch first runs without savepoints (a subtransaction and two more round trips a
//! payment), locking every organization, then every `Idempotency-Key`, before the first
//! payment, so concurrent batches cannot deadlock on them; the rows nothing reads before
//! the commit (ledger entries, the accounts' history, jobs, events) are written together
//! after the last payment. If a payment is refused, the batch runs again with savepoints.

use std::collections::HashMap;

use lodge_core::{InvoiceKind, OrganizationId};
use lodge_store::billing::{InvoiceRow, OrderToActivate};
use lodge_store::{billing, SqlConn, StoreError};

use crate::commit::{BatchWrite, Committer, Units, WriteEnv};
use crate::idempotency::Keyed;
use crate::Result;

/// What the payments of one batch written as one share ([`BatchWrite::Shared`]): every
/// invoice the batch pays, locked and read in one statement when its first payment asks,
/// and its organizations' balances, read once then followed in memory; the credit applied,
/// moved in one statement after the last payment ([`BatchWrite::settle`]).
#[derive(Debug)]
pub struct PayMemo {
    /// The batch's invoices, until they are read.
    to_read: Vec<i64>,
    /// Each invoice as the batch read it; taken by the payment that pays it (a second
    /// payment of it in the batch reads it again, paid, and is refused).
    invoices: HashMap<i64, InvoiceRow>,
    balances: HashMap<OrganizationId, i64>,
    /// The credit applied: ledger entries written, balances not yet moved.
    applied: billing::PendingMoves,
    /// The orders the batch's first invoices activate, read with the invoices: each one's
    /// status and accounts, taken by the payment that activates it.
    orders: HashMap<i64, OrderToActivate>,
    /// The first invoices, orders and accounts the batch's payments moved, written after the
    /// last one.
    activations: billing::PendingActivations,
    /// The first invoices paid so far, as the batch left them (not written yet): a second
    /// payment of one in the batch finds it paid.
    paid: HashMap<i64, InvoiceRow>,
}

impl PayMemo {
    fn new(invoices: Vec<i64>) -> Self {
        PayMemo {
            to_read: invoices,
            invoices: HashMap::new(),
            balances: HashMap::new(),
            applied: billing::PendingMoves::default(),
            orders: HashMap::new(),
            activations: billing::PendingActivations::default(),
            paid: HashMap::new(),
        }
    }

    /// An invoice of the batch, locked; at the first call all of them are locked and read
    /// (the organizations were locked first, [`BatchWrite::lock`]), and their
    /// organizations' balances. Once paid in the batch, read again.
    pub(crate) async fn invoice<C: SqlConn>(
        &mut self,
        conn: &mut C,
        id: i64,
    ) -> Result<Option<InvoiceRow>> {
        if !self.to_read.is_empty() {
            let read = billing::lock_invoices(conn, &self.to_read).await?;
            let orgs: Vec<OrganizationId> = read.iter().map(|i| i.organization_id).collect();
            self.balances
                .extend(lodge_store::orgs::credits_of(conn, &orgs).await?);
            let orders: Vec<i64> = read
                .iter()
                .filter(|i| i.kind == InvoiceKind::First)
                .filter_map(|i| i.order_id)
                .collect();
            self.orders.extend(
                billing::orders_to_activate(conn, &orders)
                    .await?
                    .into_iter()
                    .map(|o| (o.id, o)),
            );
            self.invoices.extend(read.into_iter().map(|i| (i.id, i)));
            self.to_read = Vec::new();
        }
        if let Some(paid) = self.paid.get(&id) {
            return Ok(Some(paid.clone()));
        }
        match self.invoices.remove(&id) {
            Some(inv) => Ok(Some(inv)),
            None => Ok(billing::lock_invoice(conn, id).await?),
        }
    }

    /// A first invoice the batch read (locked, unpaid, covered by `credit`) paid in full:
    /// written after the last payment with the orders it activates, one statement for all
    /// on PostgreSQL (a round trip a payment before); the invoice as that leaves it.
    pub(crate) fn pay_in_full(
        &mut self,
        invoice: &InvoiceRow,
        credit: i64,
        now: i64,
    ) -> InvoiceRow {
        let paid = self.activations.pay_in_full(invoice, credit, now);
        self.paid.insert(paid.id, paid.clone());
        paid
    }

    /// An organization's balance as its next payment in the batch finds it.
    pub(crate) fn balance(&self, org: OrganizationId) -> Option<i64> {
        self.balances.get(&org).copied()
    }

    /// The balances as the batch's payment that just ran leaves them.
    pub(crate) fn followed(&mut self, balances: impl IntoIterator<Item = (OrganizationId, i64)>) {
        self.balances.extend(balances);
    }

    /// An order the batch read, taken: the payment that activates it decides from it.
    pub(crate) fn order(&mut self, id: i64) -> Option<OrderToActivate> {
        self.orders.remove(&id)
    }

    /// The moves of orders and accounts written after the last payment.
    pub(crate) fn activations(&mut self) -> &mut billing::PendingActivations {
        &mut self.activations
    }

    /// The ledger entries written whose balances move after the last payment.
    pub(crate) fn pending(&mut self) -> &mut billing::PendingMoves {
        &mut self.applied
    }
}

/// A payment from credit waiting to be written: the invoices it pays, in full.
#[derive(Debug)]
pub struct Payment {
    pub env: WriteEnv,
    pub invoices: Vec<i64>,
    /// Under an `Idempotency-Key`: claimed first, the outcome stored last.
    pub(crate) keyed: Option<Keyed>,
}

/// The batch of payments from credit ([`super::pay_from_credit_in`] for each).
#[derive(Debug)]
pub struct Payments;

/// The committer of payments from credit, held by [`crate::Lodge`].
pub type PaymentBatcher = Committer<Payments>;

impl BatchWrite for Payments {
    type Unit = Payment;
    type Outcome = ();

    /// Payments are refused more often than orders (an invoice paid meanwhile, credit
    /// spent): on SQLite, where a savepoint only copies the pages a payment changes, each
    /// has its savepoint from the first run.
    const FIRST: Units = Units::Savepoints;

    /// On PostgreSQL a refused payment costs its batch a second run; a savepoint a payment
    /// would cost every batch a subtransaction and two round trips a payment.
    const FIRST_ON_POSTGRES: Units = Units::Whole;

    /// One batch of payments at a time on PostgreSQL: measured against four (the orders'
    /// count) in four alternating pairs of `lodge bench load --scenarios pay_credit` on
    /// 2 cores, the same rate (628-924/s against 673-792/s) with the p99 halved (93-180 ms
    /// against 230-440 ms; BENCHMARKS.md, 2026-12-04 night). A batch holds up to
    /// [`crate::commit::MAX_BATCH`] payments, so one committer still takes every payment
    /// waiting.
    const COMMITTERS_ON_POSTGRES: usize = 1;

    /// With [`Units::Whole`] on PostgreSQL: the ledger entries, history rows, jobs and
    /// events of the batch's payments in a few multi-row statements after the last.
    const DEFER_ROWS: bool = true;

    /// The organizations of every invoice the batch pays, then its keys, each set in one
    /// statement and one order (PostgreSQL; SQLite has a single writer).
    async fn lock<C: SqlConn>(db: &mut C, units: &[Payment]) -> Result<(), StoreError> {
        let invoices: Vec<i64> = units
            .iter()
            .flat_map(|u| u.invoices.iter().copied())
            .collect();
        billing::lock_organizations_of_invoices(db, &invoices).await?;
        let keys: Vec<(&str, &str)> = units
            .iter()
            .filter_map(|u| u.keyed.as_ref())
            .map(|k| (k.key.scope.as_str(), k.key.key.as_str()))
            .collect();
        lodge_store::idempotency::lock_keys(db, &keys).await
    }

    type Shared = PayMemo;

    fn share(units: &[Payment]) -> PayMemo {
        PayMemo::new(
            units
                .iter()
                .flat_map(|u| u.invoices.iter().copied())
                .collect(),
        )
    }

    async fn settle<C: SqlConn>(db: &mut C, memo: PayMemo) -> Result<(), StoreError> {
        memo.activations.write(&mut *db).await?;
        memo.applied.write(db).await
    }

    async fn write_one<C: SqlConn>(
        db: &mut C,
        unit: &Payment,
        memo: Option<&mut PayMemo>,
    ) -> Result<()> {
        super::pay_from_credit_in(
            &unit.env.ctx(),
            db,
            &unit.invoices,
            unit.keyed.as_ref(),
            memo,
        )
        .await
    }

    async fn finish<C: SqlConn>(
        _db: &mut C,
        _units: &[Payment],
        _outcomes: &[Result<()>],
    ) -> Result<(), StoreError> {
        Ok(())
    }
}
