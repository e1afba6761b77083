//! Placing an order: the one use case both dialects call, in steps, a module each:
//!
//! - [`validate`]: the form → a [`ValidOrder`] (every field error at once; no writes);
//! - [`price`]: what the order chose → its quote (the pure parts in `lodge_core::pricing`);
//! - [`write`]: the rows of one order, in a transaction: order, invoice and lines, hosting
//!   account, domain, account credit applied and — when nothing is left due — the
//!   activation ([`crate::billing::Activation`]). Any failure leaves nothing behind;
//! - [`batch`]: the group commit of orders ([`crate::commit`]).

use lodge_core::pricing::Quote;
use lodge_core::{
    BillingCycle, DomainId, DomainName, HostingId, HostingStatus, OrderStatus, OrderUuid,
    OrganizationId, ProjectId,
};
use lodge_store::catalog::{CouponRow, OfferRow};
use lodge_store::hosting::DomainRow;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::sync::Arc;

use crate::catalog::Plan;
use crate::idempotency::IdempotencyKey;
use crate::{Lodge, Result, ServiceError};

pub mod batch;
pub mod price;
pub(crate) mod quotas;
pub mod validate;
pub mod write;

pub use batch::{OrderBatcher, Orders, ToPlace};
pub use validate::{tld_for, DbChecks};
pub use write::place_order_in;

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
            .and_then(|o| {
                BillingCycle::from_months(lodge_core::pricing::input::months(o.renewal_months))
            })
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

    /// The field a refusal of the name is keyed by: what the client chose the domain with
    /// (`domain_id` for a domain of the account; found by the v1 audit: its "not available"
    /// was keyed `domain_name`, a field the client may not have sent).
    pub fn name_field(&self) -> &'static str {
        match self {
            DomainPlan::Existing { .. } => "domain_id",
            _ => "domain_name",
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
    /// The caller's `Idempotency-Key`, claimed with the order's outcome as its answer in
    /// one write, the order's last, in its own transaction ([`crate::idempotency`]).
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
    /// The payment page's token while something is due. Not stored with the outcome (an
    /// `Idempotency-Key`'s answer): derived again from `payment_token_salt` on a replay.
    #[serde(skip)]
    pub payment_token: Option<String>,
    /// What the token is derived from ([`crate::payment_tokens`]); not a secret.
    #[serde(default)]
    pub payment_token_salt: Option<String>,
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

/// A password for a hosting account when the customer left it blank.
pub fn generate_password() -> String {
    crate::drivers::strong_password()
}

impl Lodge {
    /// Places a validated order: in a group commit shared with the orders waiting at the
    /// same moment, all-or-nothing on its own ([`batch`]).
    pub async fn place_order(&self, order: &ValidOrder, actor: &str) -> Result<OrderOutcome> {
        let unit = ToPlace {
            env: self.write_env(actor),
            order: order.clone(),
        };
        if let Some(b) = &self.batcher {
            return b.submit(unit).await;
        }
        // No committer (no runtime at start, or an in-memory database): a batch of one.
        let collisions = std::sync::atomic::AtomicU64::new(0);
        crate::commit::commit_on_pool::<Orders>(&self.store, &[unit], &collisions)
            .await?
            .pop()
            .ok_or_else(|| ServiceError::Internal("the order was not placed".into()))?
    }

    /// Places validated orders as one group commit, at once (not through the committer:
    /// as many as given, e.g. `lodge bench fill`'s thousands): each order all-or-nothing on
    /// its own, its outcome in the given order. `Err` when the commit as a whole failed.
    pub async fn place_orders(&self, orders: Vec<ToPlace>) -> Result<Vec<Result<OrderOutcome>>> {
        let collisions = std::sync::atomic::AtomicU64::new(0);
        if self.store.has_batch_writer() {
            Ok(self
                .store
                .batch(move |db| crate::commit::commit_on_writer::<Orders>(db, &orders))
                .await??)
        } else {
            Ok(crate::commit::commit_on_pool::<Orders>(&self.store, &orders, &collisions).await?)
        }
    }
}
