//! Typed UUID ids.
//!
//! Each id is a newtype over [`Uuid`] so that an `OrderUuid` cannot be passed
//! where a `HostingId` is expected. New ids are UUID v7 (time-ordered) for
//! index locality. On the wire an id is its hyphenated lowercase string.

use uuid::Uuid;

macro_rules! uuid_ids {
    ($($(#[$meta:meta])* $name:ident),+ $(,)?) => {$(
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUID v7).
            #[allow(clippy::new_without_default)] // a "default" id would silently be a fresh one
            pub fn new() -> Self {
                // UUID v7 reads the system clock inside `uuid`; that is fine
                // for ids, which carry no business time.
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (e.g. one read from the database).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// Parses a UUID string (hyphenated, simple, braced or URN form).
            pub fn parse(input: &str) -> Result<Self, crate::CoreError> {
                Uuid::parse_str(input)
                    .map(Self)
                    .map_err(|_| crate::CoreError::InvalidId {
                        kind: stringify!($name),
                        input: input.to_owned(),
                    })
            }
        }

        impl std::fmt::Display for $name {
            /// Hyphenated lowercase form.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::CoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        /// Lets storage rows decode the stored text form straight into the id.
        impl TryFrom<String> for $name {
            type Error = crate::CoreError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
    )+};
}

uuid_ids! {
    /// An organization (the billing account).
    OrganizationId,
    /// A project inside an organization.
    ProjectId,
    /// A user.
    UserId,
    /// A plan in the catalog.
    PlanId,
    /// A group of plans.
    PlanGroupId,
    /// An API key.
    ApiKeyId,
    /// A hosting service.
    HostingId,
    /// A domain service.
    DomainId,
    /// An order.
    OrderUuid,
    /// An invoice.
    InvoiceUuid,
    /// A hosting server.
    ServerId,
    /// A coupon.
    CouponId,
    /// An offer (introductory price).
    OfferId,
    /// A TLD in the domain catalog.
    TldId,
    /// A background job.
    JobId,
    /// A payment.
    PaymentId,
    /// An entry in the credit ledger.
    LedgerEntryId,
    /// A login session.
    SessionId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_ids_are_v7_and_ordered() {
        let ids: Vec<OrderUuid> = (0..1000).map(|_| OrderUuid::new()).collect();
        assert!(ids.iter().all(|id| id.as_uuid().get_version_num() == 7));
        // Ordered by creation, both as UUIDs and as their string form.
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.windows(2).all(|w| w[0].to_string() < w[1].to_string()));
    }

    #[test]
    fn parse_and_display() {
        let s = "0192f0a4-7c3e-7b4a-9d2e-1f2a3b4c5d6e";
        let id = HostingId::parse(s).unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(HostingId::parse(&s.to_uppercase()).unwrap(), id);
        assert_eq!(s.parse::<HostingId>().unwrap(), id);
        assert_eq!(Uuid::from(id), *id.as_uuid());
        assert_eq!(HostingId::from_uuid(*id.as_uuid()), id);
        let err = HostingId::parse("nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid HostingId \"nope\": expected a UUID"
        );
    }

    #[test]
    fn serde_is_a_string() {
        let id = UserId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<UserId>("\"x\"").is_err());
    }

    proptest! {
        #[test]
        fn display_round_trips(bytes in any::<[u8; 16]>()) {
            let id = InvoiceUuid::from_uuid(Uuid::from_bytes(bytes));
            let s = id.to_string();
            prop_assert_eq!(s.len(), 36);
            prop_assert_eq!(s.to_lowercase(), s.clone());
            prop_assert_eq!(InvoiceUuid::parse(&s), Ok(id));
        }
    }
}
