//! Billing cycles and their length in months.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// How often a service is billed.
///
/// Serialized as snake_case strings (`"semi_annually"`). `Free` and
/// `OneTime` have no period and never renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    /// No charge, no renewal.
    Free,
    /// Charged once, no renewal.
    OneTime,
    /// Every month.
    Monthly,
    /// Every 3 months.
    Quarterly,
    /// Every 6 months.
    SemiAnnually,
    /// Every 12 months.
    Annually,
    /// Every 24 months.
    Biennially,
    /// Every 36 months.
    Triennially,
}

impl BillingCycle {
    /// Every cycle, shortest first after the non-recurring ones.
    pub const ALL: [BillingCycle; 8] = [
        BillingCycle::Free,
        BillingCycle::OneTime,
        BillingCycle::Monthly,
        BillingCycle::Quarterly,
        BillingCycle::SemiAnnually,
        BillingCycle::Annually,
        BillingCycle::Biennially,
        BillingCycle::Triennially,
    ];

    /// The wire name, e.g. `"one_time"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BillingCycle::Free => "free",
            BillingCycle::OneTime => "one_time",
            BillingCycle::Monthly => "monthly",
            BillingCycle::Quarterly => "quarterly",
            BillingCycle::SemiAnnually => "semi_annually",
            BillingCycle::Annually => "annually",
            BillingCycle::Biennially => "biennially",
            BillingCycle::Triennially => "triennially",
        }
    }

    /// Length of one period in months; `None` for `Free` and `OneTime`.
    pub const fn months(self) -> Option<u32> {
        match self {
            BillingCycle::Free | BillingCycle::OneTime => None,
            BillingCycle::Monthly => Some(1),
            BillingCycle::Quarterly => Some(3),
            BillingCycle::SemiAnnually => Some(6),
            BillingCycle::Annually => Some(12),
            BillingCycle::Biennially => Some(24),
            BillingCycle::Triennially => Some(36),
        }
    }

    /// The recurring cycle of exactly `months` months (1, 3, 6, 12, 24, 36).
    pub const fn from_months(months: u32) -> Option<BillingCycle> {
        match months {
            1 => Some(BillingCycle::Monthly),
            3 => Some(BillingCycle::Quarterly),
            6 => Some(BillingCycle::SemiAnnually),
            12 => Some(BillingCycle::Annually),
            24 => Some(BillingCycle::Biennially),
            36 => Some(BillingCycle::Triennially),
            _ => None,
        }
    }

    /// Whether the cycle renews (everything but `Free` and `OneTime`).
    pub const fn is_recurring(self) -> bool {
        self.months().is_some()
    }
}

impl fmt::Display for BillingCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BillingCycle {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BillingCycle::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| CoreError::InvalidCycle(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in BillingCycle::ALL {
            assert_eq!(c.as_str().parse::<BillingCycle>().unwrap(), c);
            assert_eq!(c.to_string(), c.as_str());
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<BillingCycle>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::to_string(&BillingCycle::SemiAnnually).unwrap(),
            "\"semi_annually\""
        );
        assert!("Monthly".parse::<BillingCycle>().is_err());
        assert!("yearly".parse::<BillingCycle>().is_err());
        assert!(serde_json::from_str::<BillingCycle>("\"weekly\"").is_err());
    }

    #[test]
    fn months() {
        let table = [
            (BillingCycle::Free, None),
            (BillingCycle::OneTime, None),
            (BillingCycle::Monthly, Some(1)),
            (BillingCycle::Quarterly, Some(3)),
            (BillingCycle::SemiAnnually, Some(6)),
            (BillingCycle::Annually, Some(12)),
            (BillingCycle::Biennially, Some(24)),
            (BillingCycle::Triennially, Some(36)),
        ];
        for (c, m) in table {
            assert_eq!(c.months(), m);
            assert_eq!(c.is_recurring(), m.is_some());
            if let Some(m) = m {
                assert_eq!(BillingCycle::from_months(m), Some(c));
            }
        }
        assert_eq!(BillingCycle::from_months(0), None);
        assert_eq!(BillingCycle::from_months(2), None);
        assert_eq!(BillingCycle::from_months(48), None);
    }

    #[test]
    fn ordering_follows_length() {
        let mut sorted = BillingCycle::ALL;
        sorted.sort();
        assert_eq!(sorted, BillingCycle::ALL);
    }
}
