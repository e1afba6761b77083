//! Pure domain types and computations for Lodge.
//!
//! This crate holds no I/O: money and currencies, billing cycles, calendar
//! arithmetic for billing periods, typed ids, domain names, the injected
//! [`Clock`] and price computations shared by both API dialects.

pub mod clock;
pub mod cycle;
pub mod dates;
pub mod domain;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod money;
pub mod pricing;
pub mod renewal;

pub use clock::{AlignedClock, Clock, ManualClock, SystemClock};
pub use cycle::BillingCycle;
pub use dates::{add_months, checked_add_months, period_bounds};
pub use domain::DomainName;
pub use error::CoreError;
pub use ids::{
    ApiKeyId, CouponId, DomainId, HostingId, InvoiceUuid, JobId, LedgerEntryId, OfferId, OrderUuid,
    OrganizationId, PaymentId, PlanGroupId, PlanId, ProjectId, ServerId, SessionId, TldId, UserId,
};
pub use lifecycle::{
    CancelKind, CancelPlan, CancelRefusal, DomainEvent, DomainStatus, HostingEvent, HostingStatus,
    InvoiceEvent, InvoiceKind, InvoiceStatus, JobEvent, JobStatus, OrderEvent, OrderStatus,
    RefundBasis, RefundRefusal, RefundTo, Status, UnknownStatus,
};
pub use money::{percent_of, Currency, Money};
pub use pricing::{
    apply_coupon, discount_percent, quote, CouponKind, LineKind, Offer, Quote, QuoteInput,
    QuoteLine,
};
