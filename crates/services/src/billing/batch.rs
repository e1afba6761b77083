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

use lodge_store::{billing, SqlConn, StoreError};

use crate::commit::{BatchWrite, Committer, Units, WriteEnv};
use crate::idempotency::Keyed;
use crate::Result;

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

    type Shared = ();

    fn share(_: &[Payment]) {}

    async fn settle<C: SqlConn>(_: &mut C, (): ()) -> Result<(), StoreError> {
        Ok(())
    }

    async fn write_one<C: SqlConn>(db: &mut C, unit: &Payment, _: Option<&mut ()>) -> Result<()> {
        super::pay_from_credit_in(&unit.env.ctx(), db, &unit.invoices, unit.keyed.as_ref()).await
    }

    async fn finish<C: SqlConn>(
        _db: &mut C,
        _units: &[Payment],
        _outcomes: &[Result<()>],
    ) -> Result<(), StoreError> {
        Ok(())
    }
}
