//! The lifecycles of orders, invoices, hosting accounts, domains, cancellations and jobs as
//! state machines: each status is an enum, each change an event, and [`next`] functions say
//! where an event leads from a status (`None`: the event is refused there). The store maps
//! the enums to their columns ([`Status::as_str`], [`Status::parse`]) and applies a
//! transition as a conditional write inside its transaction, so of two racing changes one
//! wins and the other is refused.
//!
//! [`next`]: HostingStatus::next

use std::fmt;

/// A status stored in a text column.
pub trait Status: Copy + Eq + fmt::Debug + 'static {
    /// Every status, in declaration order.
    const ALL: &'static [Self];
    /// The column's spelling.
    fn as_str(self) -> &'static str;
    /// The status a column holds; `None` for an unknown spelling.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// A column held a spelling no status has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {value:?}")]
pub struct UnknownStatus {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident, $kind:literal { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),* }

        impl Status for $name {
            const ALL: &'static [Self] = &[$($name::$v),*];
            fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),* }
            }
        }

        impl $name {
            /// The column's spelling.
            pub fn as_str(self) -> &'static str {
                Status::as_str(self)
            }

            /// The status a column (or a request) spells; `None` for an unknown spelling.
            pub fn parse(s: &str) -> Option<Self> {
                <Self as Status>::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                <$name as Status>::parse(s).ok_or_else(|| UnknownStatus {
                    kind: $kind,
                    value: s.to_owned(),
                })
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownStatus;
            fn try_from(s: String) -> Result<Self, UnknownStatus> {
                s.parse()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Sources of an event: every status from which `next` accepts it.
fn sources<S: Status, E: Copy>(next: impl Fn(S, E) -> Option<S>, event: E) -> Vec<S> {
    S::ALL
        .iter()
        .copied()
        .filter(|&s| next(s, event).is_some())
        .collect()
}

macro_rules! event_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),* }

        impl $name {
            /// Every event.
            pub const ALL: &'static [Self] = &[$($name::$v),*];
        }
    };
}

status_enum!(
    /// An order: pending until its first invoice is paid (or it owed nothing).
    OrderStatus, "order" {
        Pending = "pending",
        Active = "active",
        Cancelled = "cancelled",
        Fraud = "fraud",
    }
);

event_enum!(
    /// What happens to an order.
    OrderEvent {
        /// Its first invoice was paid.
        Paid,
        /// The customer or the expiry of its invoice cancelled it before it was paid.
        Cancel,
        /// Staff flagged it.
        MarkFraud,
    }
);

impl OrderStatus {
    pub fn next(self, event: OrderEvent) -> Option<OrderStatus> {
        use OrderEvent as E;
        use OrderStatus as S;
        match (self, event) {
            (S::Pending, E::Paid) => Some(S::Active),
            (S::Pending, E::Cancel) => Some(S::Cancelled),
            (S::Pending | S::Active, E::MarkFraud) => Some(S::Fraud),
            _ => None,
        }
    }

    /// The statuses `event` leaves from.
    pub fn sources(event: OrderEvent) -> Vec<OrderStatus> {
        sources(OrderStatus::next, event)
    }
}

status_enum!(
    /// An invoice.
    InvoiceStatus, "invoice" {
        Draft = "draft",
        Unpaid = "unpaid",
        Paid = "paid",
        /// Paid, and part of what was paid went back.
        PartiallyRefunded = "partially_refunded",
        /// Paid, and all of what was paid went back.
        Refunded = "refunded",
        Cancelled = "cancelled",
    }
);

event_enum!(
    /// What happens to an invoice.
    InvoiceEvent {
        /// A draft is sent to its payer.
        Issue,
        /// What it is due was covered (credit and payments).
        Pay,
        /// It will not be paid (its order was cancelled, it expired).
        Cancel,
        /// Part of its money went back, some is still left to refund.
        RefundPart,
        /// The rest of its money went back.
        RefundRest,
        /// A refund the gateway refused came back; other refunds of it still stand.
        RefundReturnedPart,
        /// A refund the gateway refused came back; nothing of it is refunded any more.
        RefundReturnedAll,
    }
);

impl InvoiceEvent {
    /// The event of a refund that came back (the gateway refused it), by what the invoice
    /// still has refunded after it.
    pub fn refund_returned(refunded_after: i64) -> InvoiceEvent {
        if refunded_after > 0 {
            InvoiceEvent::RefundReturnedPart
        } else {
            InvoiceEvent::RefundReturnedAll
        }
    }
}

impl InvoiceStatus {
    pub fn next(self, event: InvoiceEvent) -> Option<InvoiceStatus> {
        use InvoiceEvent as E;
        use InvoiceStatus as S;
        match (self, event) {
            (S::Draft, E::Issue) => Some(S::Unpaid),
            (S::Unpaid, E::Pay) => Some(S::Paid),
            (S::Draft | S::Unpaid, E::Cancel) => Some(S::Cancelled),
            (S::Paid | S::PartiallyRefunded, E::RefundPart) => Some(S::PartiallyRefunded),
            (S::Paid | S::PartiallyRefunded, E::RefundRest) => Some(S::Refunded),
            (S::PartiallyRefunded | S::Refunded, E::RefundReturnedPart) => {
                Some(S::PartiallyRefunded)
            }
            (S::PartiallyRefunded | S::Refunded, E::RefundReturnedAll) => Some(S::Paid),
            _ => None,
        }
    }

    pub fn sources(event: InvoiceEvent) -> Vec<InvoiceStatus> {
        sources(InvoiceStatus::next, event)
    }

    /// Money can still be applied to it.
    pub fn is_payable(self) -> bool {
        self.next(InvoiceEvent::Pay).is_some()
    }

    /// Money it received can (still) go back: it is paid or partially refunded.
    pub fn is_refundable(self) -> bool {
        self.next(InvoiceEvent::RefundPart).is_some()
    }
}

status_enum!(
    /// Where a refund's money goes.
    RefundTo, "refund destination" {
        /// To the organization's account credit (a `refund` entry in its ledger).
        Credit = "credit",
        /// Back to the payer outside Lodge (bank, gateway): recorded, the ledger untouched.
        Cash = "cash",
    }
);

/// Why a refund is refused, decided from the invoice's figures alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    #[error("The amount must be positive.")]
    NotPositive,
    #[error("Only a paid invoice can be refunded; this invoice is {0}.")]
    NotRefundable(InvoiceStatus),
    /// Refunds never exceed what the invoice received (credit applied and payments); the
    /// minor units still left to refund.
    #[error("The refund exceeds what is left to refund on this invoice ({0} minor units).")]
    MoreThanLeft(i64),
    /// Cash never exceeds the money received (payments) less cash already refunded: credit
    /// applied goes back only as credit. The minor units that can still go back in cash.
    #[error("The refund exceeds the money received that is left to refund in cash ({0} minor units); credit applied can only go back as credit.")]
    MoreThanCashLeft(i64),
}

/// What an invoice received and what of it went back already: the figures a refund is
/// decided on (read under the invoice's lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundBasis {
    pub status: InvoiceStatus,
    /// Account credit applied to it.
    pub credit_applied: i64,
    /// Money received for it (payments).
    pub paid: i64,
    /// Refunded so far, to credit and in cash.
    pub refunded: i64,
    /// Of which refunded in cash.
    pub cash_refunded: i64,
    /// Given back otherwise already: the account credit downgrades in the period it paid
    /// for returned of it.
    pub given_back: i64,
}

impl RefundBasis {
    /// What is left to refund, whatever the destination.
    pub fn left(&self) -> i64 {
        (self.credit_applied + self.paid - self.refunded - self.given_back).max(0)
    }

    /// What is left to refund in cash: the money received less the cash already refunded,
    /// within what is left at all.
    pub fn cash_left(&self) -> i64 {
        (self.paid - self.cash_refunded).max(0).min(self.left())
    }

    /// Whether `amount` may go back to `to`, and the invoice's event if so: the rest of it
    /// ([`InvoiceEvent::RefundRest`]) or a part ([`InvoiceEvent::RefundPart`]).
    pub fn refund(&self, amount: i64, to: RefundTo) -> Result<InvoiceEvent, RefundRefusal> {
        if amount <= 0 {
            return Err(RefundRefusal::NotPositive);
        }
        if !self.status.is_refundable() {
            return Err(RefundRefusal::NotRefundable(self.status));
        }
        if amount > self.left() {
            return Err(RefundRefusal::MoreThanLeft(self.left()));
        }
        if to == RefundTo::Cash && amount > self.cash_left() {
            return Err(RefundRefusal::MoreThanCashLeft(self.cash_left()));
        }
        Ok(if amount == self.left() {
            InvoiceEvent::RefundRest
        } else {
            InvoiceEvent::RefundPart
        })
    }
}

status_enum!(
    /// What an invoice bills.
    InvoiceKind, "invoice kind" {
        /// The first period of an order (paying it activates the order).
        First = "first",
        /// A later period of a service.
        Renewal = "renewal",
        /// Raised by staff.
        Manual = "manual",
    }
);

status_enum!(
    /// A hosting account.
    HostingStatus, "hosting" {
        /// Ordered, not paid.
        Pending = "pending",
        /// Paid; the worker is creating it on a server.
        Provisioning = "provisioning",
        Active = "active",
        Suspended = "suspended",
        Terminated = "terminated",
        /// Creating it failed; staff can retry.
        Failed = "failed",
        /// Cancelled before it was paid.
        Cancelled = "cancelled",
    }
);

event_enum!(
    /// What happens to a hosting account.
    HostingEvent {
        /// Its order was paid.
        Paid,
        /// Its order was cancelled before it was paid.
        Cancel,
        /// The driver created it.
        Provisioned,
        /// The driver could not create it.
        ProvisionFailed,
        /// Staff retry a failed creation.
        Retry,
        Suspend,
        Unsuspend,
        Terminate,
    }
);

impl HostingStatus {
    pub fn next(self, event: HostingEvent) -> Option<HostingStatus> {
        use HostingEvent as E;
        use HostingStatus as S;
        match (self, event) {
            (S::Pending, E::Paid) => Some(S::Provisioning),
            (S::Pending, E::Cancel) => Some(S::Cancelled),
            (S::Provisioning, E::Provisioned) => Some(S::Active),
            (S::Provisioning, E::ProvisionFailed) => Some(S::Failed),
            (S::Failed, E::Retry) => Some(S::Provisioning),
            (S::Active, E::Suspend) => Some(S::Suspended),
            (S::Suspended, E::Unsuspend) => Some(S::Active),
            (S::Pending | S::Provisioning | S::Active | S::Suspended | S::Failed, E::Terminate) => {
                Some(S::Terminated)
            }
            _ => None,
        }
    }

    pub fn sources(event: HostingEvent) -> Vec<HostingStatus> {
        sources(HostingStatus::next, event)
    }

    /// It holds its name (no other account may take it): every status but the two ends.
    pub fn is_live(self) -> bool {
        !self.is_closed()
    }

    /// It has ended: nothing more happens to it.
    pub fn is_closed(self) -> bool {
        matches!(self, HostingStatus::Terminated | HostingStatus::Cancelled)
    }
}

status_enum!(
    /// A domain object.
    DomainStatus, "domain" {
        PendingRegistration = "pending_registration",
        PendingTransfer = "pending_transfer",
        Active = "active",
        Expired = "expired",
        TransferredAway = "transferred_away",
        Cancelled = "cancelled",
    }
);

event_enum!(
    /// What happens to a domain.
    DomainEvent {
        /// The registration or transfer-in finished.
        Complete,
        /// Its order was cancelled before it was paid.
        Cancel,
        /// It was not renewed.
        Expire,
        /// Renewed after it expired.
        Restore,
        /// It left for another registrar.
        TransferAway,
    }
);

impl DomainStatus {
    pub fn next(self, event: DomainEvent) -> Option<DomainStatus> {
        use DomainEvent as E;
        use DomainStatus as S;
        match (self, event) {
            (S::PendingRegistration | S::PendingTransfer, E::Complete) => Some(S::Active),
            (S::PendingRegistration | S::PendingTransfer, E::Cancel) => Some(S::Cancelled),
            (S::Active, E::Expire) => Some(S::Expired),
            (S::Expired, E::Restore) => Some(S::Active),
            (S::Active | S::Expired, E::TransferAway) => Some(S::TransferredAway),
            _ => None,
        }
    }

    pub fn sources(event: DomainEvent) -> Vec<DomainStatus> {
        sources(DomainStatus::next, event)
    }

    /// It holds its name in Lodge (no other domain object may take it).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            DomainStatus::PendingRegistration
                | DomainStatus::PendingTransfer
                | DomainStatus::Active
        )
    }

    /// The registrar's work on it is still to be done.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            DomainStatus::PendingRegistration | DomainStatus::PendingTransfer
        )
    }
}

status_enum!(
    /// How a customer cancels a hosting account.
    CancelKind, "cancellation" {
        /// It ends now (a paid account is terminated by the worker).
        Immediate = "immediate",
        /// It ends when its paid period does; until then it can be withdrawn.
        EndOfPeriod = "end_of_period",
    }
);

/// What a cancellation request does to an account, decided from its status and the
/// cancellation already pending on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelPlan {
    /// Never paid: its order, invoice and account are cancelled now.
    CancelUnpaidOrder,
    /// Paid: terminated now by the worker.
    TerminateNow,
    /// Paid: terminated when its paid period ends.
    AtPeriodEnd,
}

/// Why a cancellation request or withdrawal is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefusal {
    #[error("This hosting account is {0}.")]
    Closed(HostingStatus),
    #[error("A cancellation has already been requested.")]
    AlreadyRequested,
    #[error("No cancellation is pending.")]
    NothingPending,
    #[error("An immediate cancellation cannot be withdrawn.")]
    Immediate,
}

impl CancelKind {
    /// What asking for this cancellation does to an account in `status` with `pending`
    /// already requested; refused for a closed account or a second request (whatever its
    /// kind: two requests never both stand).
    pub fn plan(
        self,
        status: HostingStatus,
        pending: Option<CancelKind>,
    ) -> Result<CancelPlan, CancelRefusal> {
        if status.is_closed() {
            return Err(CancelRefusal::Closed(status));
        }
        if pending.is_some() {
            return Err(CancelRefusal::AlreadyRequested);
        }
        Ok(match (status, self) {
            (HostingStatus::Pending, _) => CancelPlan::CancelUnpaidOrder,
            (_, CancelKind::Immediate) => CancelPlan::TerminateNow,
            (_, CancelKind::EndOfPeriod) => CancelPlan::AtPeriodEnd,
        })
    }

    /// Whether the cancellation `pending` on an account in `status` can be withdrawn.
    pub fn revoke(status: HostingStatus, pending: Option<CancelKind>) -> Result<(), CancelRefusal> {
        match pending {
            None => Err(CancelRefusal::NothingPending),
            Some(CancelKind::Immediate) => Err(CancelRefusal::Immediate),
            Some(CancelKind::EndOfPeriod) if status.is_closed() => {
                Err(CancelRefusal::Closed(status))
            }
            Some(CancelKind::EndOfPeriod) => Ok(()),
        }
    }
}

status_enum!(
    /// A job of the durable queue.
    JobStatus, "job" {
        Queued = "queued",
        Running = "running",
        Done = "done",
        /// Out of attempts; staff can queue it again.
        Dead = "dead",
    }
);

event_enum!(
    /// What happens to a job.
    JobEvent {
        /// A worker takes it (or takes over a running one whose lease ran out).
        Claim,
        Succeed,
        /// It failed with attempts left.
        Retry,
        /// It failed with none left.
        Die,
        /// Staff queue a dead job again.
        Requeue,
    }
);

impl JobStatus {
    pub fn next(self, event: JobEvent) -> Option<JobStatus> {
        use JobEvent as E;
        use JobStatus as S;
        match (self, event) {
            (S::Queued | S::Running, E::Claim) => Some(S::Running),
            (S::Running, E::Succeed) => Some(S::Done),
            (S::Running, E::Retry) => Some(S::Queued),
            (S::Running, E::Die) => Some(S::Dead),
            (S::Dead, E::Requeue) => Some(S::Queued),
            _ => None,
        }
    }

    pub fn sources(event: JobEvent) -> Vec<JobStatus> {
        sources(JobStatus::next, event)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trips<S: Status + std::str::FromStr>()
    where
        <S as std::str::FromStr>::Err: fmt::Debug,
    {
        for &s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
            assert_eq!(s.as_str().parse::<S>().ok(), Some(s));
        }
        assert!(S::parse("no such status").is_none());
    }

    #[test]
    fn every_status_round_trips_through_its_column() {
        round_trips::<OrderStatus>();
        round_trips::<InvoiceStatus>();
        round_trips::<InvoiceKind>();
        round_trips::<RefundTo>();
        round_trips::<HostingStatus>();
        round_trips::<DomainStatus>();
        round_trips::<CancelKind>();
        round_trips::<JobStatus>();
    }

    #[test]
    fn the_first_order_lifecycle() {
        use HostingEvent as E;
        use HostingStatus as S;
        let mut s = S::Pending;
        for e in [
            E::Paid,
            E::Provisioned,
            E::Suspend,
            E::Unsuspend,
            E::Terminate,
        ] {
            s = s.next(e).unwrap();
        }
        assert_eq!(s, S::Terminated);
        assert_eq!(S::Pending.next(E::Cancel), Some(S::Cancelled));
        assert_eq!(S::Active.next(E::Paid), None);
        assert_eq!(
            HostingStatus::sources(E::Terminate),
            [
                S::Pending,
                S::Provisioning,
                S::Active,
                S::Suspended,
                S::Failed
            ]
        );
        assert_eq!(
            OrderStatus::sources(OrderEvent::Paid),
            [OrderStatus::Pending]
        );
        assert_eq!(
            InvoiceStatus::sources(InvoiceEvent::Cancel),
            [InvoiceStatus::Draft, InvoiceStatus::Unpaid]
        );
    }

    #[test]
    fn invoice_refunds() {
        use InvoiceEvent as E;
        use InvoiceStatus as S;
        assert_eq!(S::Paid.next(E::RefundPart), Some(S::PartiallyRefunded));
        assert_eq!(
            S::PartiallyRefunded.next(E::RefundPart),
            Some(S::PartiallyRefunded)
        );
        assert_eq!(S::PartiallyRefunded.next(E::RefundRest), Some(S::Refunded));
        assert_eq!(S::Paid.next(E::RefundRest), Some(S::Refunded));
        for s in [S::Draft, S::Unpaid, S::Refunded, S::Cancelled] {
            assert_eq!(s.next(E::RefundPart), None, "{s}");
            assert_eq!(s.next(E::RefundRest), None, "{s}");
            assert!(!s.is_refundable(), "{s}");
        }
        for s in [S::PartiallyRefunded, S::Refunded] {
            assert!(!s.is_payable(), "{s}");
            assert_eq!(s.next(E::Pay), None);
            assert_eq!(s.next(E::Cancel), None);
        }
        assert_eq!(
            InvoiceStatus::sources(E::RefundPart),
            [S::Paid, S::PartiallyRefunded]
        );
        assert_eq!(S::parse("partially_refunded"), Some(S::PartiallyRefunded));
        // A refused refund comes back: paid again, or still partly refunded.
        assert_eq!(E::refund_returned(0), E::RefundReturnedAll);
        assert_eq!(E::refund_returned(1), E::RefundReturnedPart);
        for s in [S::PartiallyRefunded, S::Refunded] {
            assert_eq!(s.next(E::RefundReturnedAll), Some(S::Paid));
            assert_eq!(s.next(E::RefundReturnedPart), Some(S::PartiallyRefunded));
        }
        for s in [S::Draft, S::Unpaid, S::Paid, S::Cancelled] {
            assert_eq!(s.next(E::RefundReturnedAll), None, "{s}");
            assert_eq!(s.next(E::RefundReturnedPart), None, "{s}");
        }
    }

    #[test]
    fn refund_limits() {
        use RefundTo::{Cash, Credit};
        // 30.00 of credit and 70.00 of payments.
        let mut b = RefundBasis {
            status: InvoiceStatus::Paid,
            credit_applied: 3000,
            paid: 7000,
            refunded: 0,
            cash_refunded: 0,
            given_back: 0,
        };
        assert_eq!((b.left(), b.cash_left()), (10000, 7000));
        assert_eq!(b.refund(0, Credit), Err(RefundRefusal::NotPositive));
        assert_eq!(b.refund(-1, Cash), Err(RefundRefusal::NotPositive));
        assert_eq!(
            b.refund(10001, Credit),
            Err(RefundRefusal::MoreThanLeft(10000))
        );
        assert_eq!(
            b.refund(7001, Cash),
            Err(RefundRefusal::MoreThanCashLeft(7000))
        );
        assert_eq!(b.refund(7000, Cash), Ok(InvoiceEvent::RefundPart));
        assert_eq!(b.refund(10000, Credit), Ok(InvoiceEvent::RefundRest));
        // 60.00 back in cash: 40.00 left, of which 10.00 may still be cash.
        b.status = InvoiceStatus::PartiallyRefunded;
        b.refunded = 6000;
        b.cash_refunded = 6000;
        assert_eq!((b.left(), b.cash_left()), (4000, 1000));
        assert_eq!(
            b.refund(1001, Cash),
            Err(RefundRefusal::MoreThanCashLeft(1000))
        );
        assert_eq!(b.refund(4000, Credit), Ok(InvoiceEvent::RefundRest));
        // 35.00 more as credit: 5.00 left, all of which may be cash.
        b.refunded = 9500;
        assert_eq!((b.left(), b.cash_left()), (500, 500));
        assert_eq!(b.refund(500, Cash), Ok(InvoiceEvent::RefundRest));
        // Paid by credit alone: nothing in cash.
        let credit_only = RefundBasis {
            status: InvoiceStatus::Paid,
            credit_applied: 5000,
            paid: 0,
            refunded: 0,
            cash_refunded: 0,
            given_back: 0,
        };
        assert_eq!(
            credit_only.refund(1, Cash),
            Err(RefundRefusal::MoreThanCashLeft(0))
        );
        let unpaid = RefundBasis {
            status: InvoiceStatus::Unpaid,
            ..credit_only
        };
        assert_eq!(
            unpaid.refund(1, Credit),
            Err(RefundRefusal::NotRefundable(InvoiceStatus::Unpaid))
        );
        let refunded = RefundBasis {
            status: InvoiceStatus::Refunded,
            refunded: 5000,
            ..credit_only
        };
        assert_eq!(
            refunded.refund(1, Credit),
            Err(RefundRefusal::NotRefundable(InvoiceStatus::Refunded))
        );
        // 40.00 of it given back already by a downgrade: 60.00 left, of which all cash.
        let given = RefundBasis {
            status: InvoiceStatus::Paid,
            credit_applied: 3000,
            paid: 7000,
            refunded: 0,
            cash_refunded: 0,
            given_back: 4000,
        };
        assert_eq!((given.left(), given.cash_left()), (6000, 6000));
        assert_eq!(
            given.refund(6001, Credit),
            Err(RefundRefusal::MoreThanLeft(6000))
        );
        assert_eq!(given.refund(6000, Cash), Ok(InvoiceEvent::RefundRest));
    }

    #[test]
    fn cancellation_requests() {
        use CancelKind::*;
        use HostingStatus as S;
        assert_eq!(
            Immediate.plan(S::Pending, None),
            Ok(CancelPlan::CancelUnpaidOrder)
        );
        assert_eq!(
            Immediate.plan(S::Active, None),
            Ok(CancelPlan::TerminateNow)
        );
        assert_eq!(
            EndOfPeriod.plan(S::Suspended, None),
            Ok(CancelPlan::AtPeriodEnd)
        );
        assert_eq!(
            Immediate.plan(S::Active, Some(EndOfPeriod)),
            Err(CancelRefusal::AlreadyRequested)
        );
        assert_eq!(
            EndOfPeriod.plan(S::Terminated, None),
            Err(CancelRefusal::Closed(S::Terminated))
        );
        assert_eq!(CancelKind::revoke(S::Active, Some(EndOfPeriod)), Ok(()));
        assert_eq!(
            CancelKind::revoke(S::Active, Some(Immediate)),
            Err(CancelRefusal::Immediate)
        );
        assert_eq!(
            CancelKind::revoke(S::Active, None),
            Err(CancelRefusal::NothingPending)
        );
    }

    fn hosting_status() -> impl Strategy<Value = HostingStatus> {
        prop::sample::select(HostingStatus::ALL)
    }
    fn hosting_event() -> impl Strategy<Value = HostingEvent> {
        prop::sample::select(HostingEvent::ALL)
    }
    fn invoice_event() -> impl Strategy<Value = InvoiceEvent> {
        prop::sample::select(InvoiceEvent::ALL)
    }
    fn order_event() -> impl Strategy<Value = OrderEvent> {
        prop::sample::select(OrderEvent::ALL)
    }

    proptest! {
        /// Whatever happens to an account, a closed one never changes again, and it only
        /// ever reaches a status some event leads to.
        #[test]
        fn closed_accounts_stay_closed(events in prop::collection::vec(hosting_event(), 0..40)) {
            let mut s = HostingStatus::Pending;
            for e in events {
                let was_closed = s.is_closed();
                if let Some(n) = s.next(e) {
                    prop_assert!(!was_closed, "{s} accepted {e:?}");
                    prop_assert!(HostingStatus::sources(e).contains(&s));
                    s = n;
                }
            }
        }

        /// `sources` agrees with `next` for every pair.
        #[test]
        fn sources_agree_with_next(s in hosting_status(), e in hosting_event()) {
            prop_assert_eq!(HostingStatus::sources(e).contains(&s), s.next(e).is_some());
        }

        /// Refunds in any order and amounts never take back more than was received, in cash
        /// never more than was paid, and the invoice is `refunded` exactly when nothing is
        /// left.
        #[test]
        fn refunds_never_exceed_what_was_received(
            credit in 0i64..10_000,
            paid in 0i64..10_000,
            asks in prop::collection::vec((1i64..6_000, any::<bool>()), 0..12),
        ) {
            let mut b = RefundBasis {
                status: InvoiceStatus::Paid,
                credit_applied: credit,
                paid,
                refunded: 0,
                cash_refunded: 0,
                given_back: 0,
            };
            for (amount, cash) in asks {
                let to = if cash { RefundTo::Cash } else { RefundTo::Credit };
                if let Ok(event) = b.refund(amount, to) {
                    b.status = b.status.next(event).unwrap();
                    b.refunded += amount;
                    if cash { b.cash_refunded += amount; }
                }
                prop_assert!(b.refunded <= credit + paid);
                prop_assert!(b.cash_refunded <= paid);
                prop_assert_eq!(b.status == InvoiceStatus::Refunded, b.left() == 0 && b.refunded > 0);
            }
        }

        /// An invoice is paid at most once and never leaves paid but by a refund; a
        /// cancelled or refunded one never changes.
        #[test]
        fn invoices_are_paid_at_most_once(events in prop::collection::vec(invoice_event(), 0..30)) {
            let mut s = InvoiceStatus::Unpaid;
            let mut paid = 0;
            for e in events {
                if let Some(n) = s.next(e) {
                    // Cancelled is final; a refunded invoice only gets a refused refund back.
                    prop_assert!(s != InvoiceStatus::Cancelled);
                    if s == InvoiceStatus::Refunded {
                        prop_assert!(matches!(e, InvoiceEvent::RefundReturnedPart | InvoiceEvent::RefundReturnedAll));
                    }
                    if e == InvoiceEvent::Pay { paid += 1; }
                    s = n;
                }
            }
            prop_assert!(paid <= 1);
        }

        /// An order is activated or cancelled, never both.
        #[test]
        fn orders_are_activated_or_cancelled(events in prop::collection::vec(order_event(), 0..20)) {
            let mut s = OrderStatus::Pending;
            let mut seen = Vec::new();
            for e in events {
                if let Some(n) = s.next(e) { seen.push(n); s = n; }
            }
            prop_assert!(!(seen.contains(&OrderStatus::Active) && seen.contains(&OrderStatus::Cancelled)));
        }

        /// Two cancellation requests never both stand, whatever their kinds and order.
        #[test]
        fn one_cancellation_stands(s in hosting_status(), a in prop::sample::select(CancelKind::ALL), b in prop::sample::select(CancelKind::ALL)) {
            if a.plan(s, None).is_ok() {
                prop_assert_eq!(b.plan(s, Some(a)), Err(CancelRefusal::AlreadyRequested));
            }
        }
    }
}
