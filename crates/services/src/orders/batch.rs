//! The group commit of orders ([`crate::commit`]): the orders waiting at the same moment
//! share one transaction. Every organization, then every `Idempotency-Key`, is locked before
//! any order is written, so the locks orders take later (a limited server, a coupon) never
//! sit between two of those, and concurrent batches cannot deadlock on them. After the last
//! order the batch numbers all its invoices in one step: on PostgreSQL each batch locks the
//! gapless invoice counter only at its end, so batches queue on it only for their commits.

use lodge_store::{billing, SqlConn, StoreError};

use super::{write, OrderOutcome, ValidOrder};
use crate::commit::{BatchWrite, Committer, WriteEnv};
use crate::Result;

/// The scope of the advisory locks on sites ([`Orders::lock`]), beside the keys' scopes
/// (which are organizations' and staff's ids).
const SITE_LOCK_SCOPE: &str = "site";

/// An order to place: what, and on whose behalf (its [`WriteEnv`]).
#[derive(Debug, Clone)]
pub struct ToPlace {
    pub env: WriteEnv,
    pub order: ValidOrder,
}

/// The batch of orders ([`write::place_order_in`] for each).
#[derive(Debug)]
pub struct Orders;

/// The committer of orders, held by [`crate::Lodge`].
pub type OrderBatcher = Committer<Orders>;

impl BatchWrite for Orders {
    type Unit = ToPlace;
    type Outcome = OrderOutcome;

    /// Each statement is a round trip to PostgreSQL: the rows nothing reads before the
    /// commit are written together after the last order, a few statements a table.
    const DEFER_ROWS: bool = true;

    async fn lock<C: SqlConn>(db: &mut C, units: &[ToPlace]) -> Result<(), StoreError> {
        let orgs: Vec<_> = units.iter().map(|u| u.order.organization).collect();
        billing::lock_organizations(db, &orgs).await?;
        // With the keys (one statement, in one order), each name's registrable domain: the
        // batches placing sites of one domain run one after another, so each sees the
        // other's (`x` and `www.x`, `shop.x` under `x`: no unique index covers these).
        let keys: Vec<(&str, &str)> = units
            .iter()
            .filter_map(|u| u.order.idempotency.as_deref())
            .map(|k| (k.scope.as_str(), k.key.as_str()))
            .chain(units.iter().map(|u| {
                (
                    SITE_LOCK_SCOPE,
                    lodge_core::domain::registrable_site(u.order.domain.name()),
                )
            }))
            .collect();
        lodge_store::idempotency::lock_keys(db, &keys).await
    }

    type Shared = write::OrderMemo;

    fn share(units: &[ToPlace]) -> write::OrderMemo {
        write::OrderMemo::new(
            units.iter().map(|u| u.order.organization).collect(),
            units
                .iter()
                .map(|u| u.order.domain.name().to_owned())
                .collect(),
        )
    }

    /// An order is checked before it writes anything, its key's claim included (its
    /// name, its organization's quotas, a server), so one refused does not make the batch
    /// run again with savepoints. A retry refused for what its twin earlier in the batch
    /// took (the name, the quota) is answered its twin's outcome all the same: the caller
    /// hears the refusal after the commit, and looks for the key's stored answer first
    /// ([`crate::Lodge::keyed`]).
    async fn refuse<C: SqlConn>(
        db: &mut C,
        unit: &ToPlace,
        memo: Option<&mut write::OrderMemo>,
    ) -> Result<Option<crate::ServiceError>> {
        match memo {
            Some(m) => write::refuse_in(db, &unit.order, m).await,
            None => Ok(None),
        }
    }

    async fn settle<C: SqlConn>(db: &mut C, memo: write::OrderMemo) -> Result<(), StoreError> {
        memo.settle(db).await
    }

    async fn write_one<C: SqlConn>(
        db: &mut C,
        unit: &ToPlace,
        memo: Option<&mut write::OrderMemo>,
    ) -> Result<OrderOutcome> {
        write::place_order_in(&unit.env.ctx(), db, &unit.order, memo).await
    }

    async fn finish<C: SqlConn>(
        db: &mut C,
        units: &[ToPlace],
        outcomes: &[Result<OrderOutcome>],
    ) -> Result<(), StoreError> {
        let invoices: Vec<i64> = outcomes
            .iter()
            .filter_map(|r| r.as_ref().ok()?.invoice_id)
            .collect();
        let clock = units.first().map(|u| &u.env);
        billing::number_invoices(db, &invoices, || clock.map_or(0, WriteEnv::now_us)).await
    }
}
