//! Payments from account credit as a group commit on SQLite's batch writer: each runs in
//! its own savepoint of a transaction shared with the payments waiting at the same moment
//! (a payment refused, say of an invoice paid meanwhile, is undone alone), and its caller
//! hears the outcome once that transaction is on disk. (On PostgreSQL payments run
//! concurrently, each in its own transaction.)

use lodge_store::{SqlConn, StoreError};

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
    /// spent): each has its savepoint from the first run.
    const FIRST: Units = Units::Savepoints;

    async fn lock<C: SqlConn>(_db: &mut C, _units: &[Payment]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn write_one<C: SqlConn>(db: &mut C, unit: &Payment) -> Result<()> {
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
