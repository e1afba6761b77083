//! The error type shared by every parser and checked operation in this crate.

use crate::money::Currency;

/// Errors produced by parsing and checked arithmetic in `lodge-core`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A currency code that is not three uppercase ASCII letters.
    #[error("invalid currency code {0:?}: expected three uppercase letters (ISO 4217)")]
    InvalidCurrency(String),

    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },

    /// An arithmetic result does not fit in an `i64` of minor units.
    #[error("amount overflow")]
    Overflow,

    /// A decimal amount that could not be parsed.
    #[error("invalid amount {input:?}: {reason}")]
    InvalidAmount {
        /// The rejected input.
        input: String,
        /// Which rule was broken.
        reason: String,
    },

    /// A billing cycle name that is not one of the known cycles.
    #[error(
        "invalid billing cycle {0:?}: expected one of free, one_time, monthly, quarterly, \
         semi_annually, annually, biennially, triennially"
    )]
    InvalidCycle(String),

    /// An id that is not a UUID.
    #[error("invalid {kind} {input:?}: expected a UUID")]
    InvalidId {
        /// Name of the id type, e.g. `OrganizationId`.
        kind: &'static str,
        /// The rejected input.
        input: String,
    },

    /// A domain name that breaks one of the rules in [`crate::DomainName::parse`].
    #[error("invalid domain name {input:?}: {reason}")]
    InvalidDomain {
        /// The rejected input.
        input: String,
        /// Which rule was broken.
        reason: String,
    },
}
