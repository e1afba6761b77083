//! The read models the dialects render: what the services answer with. The dialects import
//! them from here, never from the store; that they are the store's rows today is the
//! services' business.

pub use lodge_store::billing::{InvoiceRow, LedgerRow, LineRow, PaymentRow};
pub use lodge_store::catalog::{CouponRow, GroupRow, OfferRow, PlanRow, TldPriceRow, TldRow};
pub use lodge_store::hosting::{DomainRow, HistoryRow, HostingRow};
pub use lodge_store::idempotency::IdempotencyRow;
pub use lodge_store::jobs::JobRow;
pub use lodge_store::keys::ApiKeyRow;
pub use lodge_store::mail::MailLogRow;
pub use lodge_store::orgs::{OrgRow, ProjectRow};
pub use lodge_store::registry::RegistryTaskRow;
pub use lodge_store::servers::ServerRow;
pub use lodge_store::users::UserRow;

pub use crate::billing::{InvoiceDetail, PaymentOutcome};
pub use crate::queries::{HostingView, Page, PayPage};
pub use crate::websites::{Settlement, Website};
