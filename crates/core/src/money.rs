//! Currencies and integer amounts in minor units.
//!
//! No floating point is used in computation: an amount is an `i64` count of
//! the currency's minor unit (cents for USD, yen for JPY). Decimal strings and
//! JSON numbers are produced from, and parsed into, that integer at the edges.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// An ISO 4217 currency code (three uppercase ASCII letters).
///
/// Stored inline so the type is `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// Currencies whose minor unit is not 1/100, with their exponent.
const EXPONENTS: &[(&[u8; 3], u32)] = &[
    (b"BIF", 0),
    (b"CLP", 0),
    (b"DJF", 0),
    (b"GNF", 0),
    (b"ISK", 0),
    (b"JPY", 0),
    (b"KMF", 0),
    (b"KRW", 0),
    (b"PYG", 0),
    (b"RWF", 0),
    (b"UGX", 0),
    (b"UYI", 0),
    (b"VND", 0),
    (b"VUV", 0),
    (b"XAF", 0),
    (b"XOF", 0),
    (b"XPF", 0),
    (b"BHD", 3),
    (b"IQD", 3),
    (b"JOD", 3),
    (b"KWD", 3),
    (b"LYD", 3),
    (b"OMR", 3),
    (b"TND", 3),
    (b"CLF", 4),
    (b"UYW", 4),
];

/// The ISO 4217 codes of money a business can bill in (the list of 2024: currencies and
/// funds, not precious metals, bond units, `XTS` or `XXX`), sorted.
const ISO_4217: &[[u8; 3]] = &[
    *b"AED", *b"AFN", *b"ALL", *b"AMD", *b"ANG", *b"AOA", *b"ARS", *b"AUD", *b"AWG", *b"AZN",
    *b"BAM", *b"BBD", *b"BDT", *b"BGN", *b"BHD", *b"BIF", *b"BMD", *b"BND", *b"BOB", *b"BOV",
    *b"BRL", *b"BSD", *b"BTN", *b"BWP", *b"BYN", *b"BZD", *b"CAD", *b"CDF", *b"CHE", *b"CHF",
    *b"CHW", *b"CLF", *b"CLP", *b"CNY", *b"COP", *b"COU", *b"CRC", *b"CUC", *b"CUP", *b"CVE",
    *b"CZK", *b"DJF", *b"DKK", *b"DOP", *b"DZD", *b"EGP", *b"ERN", *b"ETB", *b"EUR", *b"FJD",
    *b"FKP", *b"GBP", *b"GEL", *b"GHS", *b"GIP", *b"GMD", *b"GNF", *b"GTQ", *b"GYD", *b"HKD",
    *b"HNL", *b"HTG", *b"HUF", *b"IDR", *b"ILS", *b"INR", *b"IQD", *b"IRR", *b"ISK", *b"JMD",
    *b"JOD", *b"JPY", *b"KES", *b"KGS", *b"KHR", *b"KMF", *b"KPW", *b"KRW", *b"KWD", *b"KYD",
    *b"KZT", *b"LAK", *b"LBP", *b"LKR", *b"LRD", *b"LSL", *b"LYD", *b"MAD", *b"MDL", *b"MGA",
    *b"MKD", *b"MMK", *b"MNT", *b"MOP", *b"MRU", *b"MUR", *b"MVR", *b"MWK", *b"MXN", *b"MXV",
    *b"MYR", *b"MZN", *b"NAD", *b"NGN", *b"NIO", *b"NOK", *b"NPR", *b"NZD", *b"OMR", *b"PAB",
    *b"PEN", *b"PGK", *b"PHP", *b"PKR", *b"PLN", *b"PYG", *b"QAR", *b"RON", *b"RSD", *b"RUB",
    *b"RWF", *b"SAR", *b"SBD", *b"SCR", *b"SDG", *b"SEK", *b"SGD", *b"SHP", *b"SLE", *b"SLL",
    *b"SOS", *b"SRD", *b"SSP", *b"STN", *b"SVC", *b"SYP", *b"SZL", *b"THB", *b"TJS", *b"TMT",
    *b"TND", *b"TOP", *b"TRY", *b"TTD", *b"TWD", *b"TZS", *b"UAH", *b"UGX", *b"USD", *b"USN",
    *b"UYI", *b"UYU", *b"UYW", *b"UZS", *b"VED", *b"VES", *b"VND", *b"VUV", *b"WST", *b"XAF",
    *b"XCD", *b"XCG", *b"XOF", *b"XPF", *b"YER", *b"ZAR", *b"ZMW", *b"ZWG", *b"ZWL",
];

/// Display symbols for common currencies; others display as their code.
const SYMBOLS: &[(&[u8; 3], &str)] = &[
    (b"USD", "$"),
    (b"EUR", "€"),
    (b"GBP", "£"),
    (b"CAD", "CA$"),
    (b"AUD", "A$"),
    (b"NZD", "NZ$"),
    (b"JPY", "¥"),
    (b"CNY", "CN¥"),
    (b"INR", "₹"),
    (b"KRW", "₩"),
    (b"BRL", "R$"),
    (b"MXN", "MX$"),
];

impl Currency {
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// Pound sterling.
    pub const GBP: Currency = Currency(*b"GBP");
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency(*b"JPY");

    /// Parses a code of exactly three uppercase ASCII letters, e.g. `"EUR"`.
    ///
    /// Lowercase input is rejected: callers that receive lowercase codes
    /// (some gateways) should uppercase them explicitly.
    pub fn parse(code: &str) -> Result<Currency, CoreError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(CoreError::InvalidCurrency(code.to_owned())),
        }
    }

    /// Whether the code is one of ISO 4217's currencies or funds (`UDS`, a typo, is not):
    /// checked where an operator names the installation's currency.
    pub fn is_iso_4217(&self) -> bool {
        ISO_4217.binary_search(&self.0).is_ok()
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The bytes are always ASCII uppercase letters (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of decimal digits of the minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_units(&self) -> u32 {
        EXPONENTS
            .iter()
            .find(|(code, _)| **code == self.0)
            .map_or(2, |&(_, exp)| exp)
    }

    /// A display symbol (`"$"`, `"€"`, `"£"`, `"CA$"`…), or the code when no
    /// symbol is known.
    pub fn symbol(&self) -> &str {
        SYMBOLS
            .iter()
            .find(|(code, _)| **code == self.0)
            .map_or_else(|| self.code(), |&(_, symbol)| symbol)
    }

    /// `10^minor_units` as an `i64`.
    fn scale(&self) -> i64 {
        10_i64.pow(self.minor_units())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl FromStr for Currency {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = CoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

/// An amount of money: an integer count of minor units in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// The largest amount one request may name, in minor units (10,000,000,000.00 in a
/// currency of two decimals): anything above is refused as a field error.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// The largest account credit balance, in minor units: a deposit that would pass it is
/// refused (so no sum of balances and amounts can overflow).
pub const MAX_BALANCE_MINOR: i64 = 1_000 * MAX_AMOUNT_MINOR;

impl Money {
    /// An amount of `minor` minor units (cents) of `currency`.
    pub const fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    /// The amount in minor units.
    pub const fn minor(&self) -> i64 {
        self.minor
    }

    /// The currency.
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub const fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(&self) -> bool {
        self.minor < 0
    }

    fn same_currency(&self, other: &Money) -> Result<(), CoreError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(CoreError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    /// `self + other`; errors on a currency mismatch or overflow.
    pub fn checked_add(self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(CoreError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// `self - other`; errors on a currency mismatch or overflow.
    pub fn checked_sub(self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(CoreError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// The smaller of two amounts; errors on a currency mismatch.
    pub fn min(self, other: Money) -> Result<Money, CoreError> {
        self.same_currency(&other)?;
        Ok(if other.minor < self.minor {
            other
        } else {
            self
        })
    }

    /// The amount as a decimal string with the currency's exponent:
    /// `"12.00"`, `"-0.50"`, `"1200"` (JPY). No symbol, no grouping.
    pub fn format_decimal(&self) -> String {
        let exp = self.currency.minor_units() as usize;
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if exp == 0 {
            return format!("{sign}{abs}");
        }
        let scale = self.currency.scale().unsigned_abs();
        let (int, frac) = (abs / scale, abs % scale);
        format!("{sign}{int}.{frac:0exp$}")
    }

    /// Parses a plain decimal string such as `"12.5"` or `"-0.50"` into minor
    /// units of `currency`.
    ///
    /// Accepted: an optional leading `-`, at least one digit, then optionally
    /// `.` followed by 1 to `minor_units` digits. Rejected: empty input, `+`,
    /// whitespace, exponents (`1e3`), more fractional digits than the currency
    /// has, and values that do not fit in an `i64`.
    pub fn parse_decimal(input: &str, currency: Currency) -> Result<Money, CoreError> {
        let err = |reason: &str| CoreError::InvalidAmount {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        let exp = currency.minor_units();
        let (negative, rest) = match input.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        let (int_part, frac_part) = match rest.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (rest, None),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int_part.is_empty() {
            return Err(err("expected digits before the decimal point"));
        }
        if !all_digits(int_part) {
            return Err(err("expected only digits, an optional leading '-' and '.'"));
        }
        if let Some(f) = frac_part {
            if f.is_empty() {
                return Err(err("expected digits after the decimal point"));
            }
            if !all_digits(f) {
                return Err(err("expected only digits, an optional leading '-' and '.'"));
            }
            if f.len() > exp as usize {
                return Err(err(&format!(
                    "{currency} allows at most {exp} decimal places"
                )));
            }
        }
        let frac_part = frac_part.unwrap_or("");
        let overflow = || err("amount too large");
        let mut value: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        // Pad the fraction up to the currency's exponent.
        let missing = exp - frac_part.len() as u32;
        value = value
            .checked_mul(10_i128.pow(missing))
            .ok_or_else(overflow)?;
        if negative {
            value = -value;
        }
        let minor = i64::try_from(value).map_err(|_| overflow())?;
        Ok(Money::new(minor, currency))
    }

    /// The amount in major units as an `f64` (`minor / 10^exp`).
    ///
    /// Only for wire formats that demand a JSON number; never compute with it.
    pub fn to_wire_f64(&self) -> f64 {
        self.minor as f64 / self.currency.scale() as f64
    }
}

impl fmt::Display for Money {
    /// `"12.00 USD"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.format_decimal(), self.currency)
    }
}

/// `amount_minor * basis_points / 10000`, rounded once, half away from zero.
///
/// 100 basis points are 1 %. Computed with `i128` intermediates; a result
/// outside `i64` (only possible with more than 10000 basis points) saturates.
pub fn percent_of(amount_minor: i64, basis_points: i64) -> i64 {
    let product = i128::from(amount_minor) * i128::from(basis_points);
    let quotient = div_round_half_away(product, 10_000);
    i64::try_from(quotient).unwrap_or(if quotient < 0 { i64::MIN } else { i64::MAX })
}

/// The part of an invoice's line of `amount_minor` the invoice keeps once `refunded_minor`
/// of its `total_minor` went back: `amount × (total − refunded) / total`, rounded toward
/// zero; the whole line when the total is not positive. Worked out in `i128` (the product
/// of two amounts overflows `i64` from about 3·10⁹ minor units each); never larger in size
/// than `amount_minor`.
pub fn kept_share(amount_minor: i64, total_minor: i64, refunded_minor: i64) -> i64 {
    if total_minor <= 0 {
        return amount_minor;
    }
    let kept = (total_minor - refunded_minor).clamp(0, total_minor);
    let share = i128::from(amount_minor) * i128::from(kept) / i128::from(total_minor);
    i64::try_from(share).unwrap_or(amount_minor)
}

/// `n / d` rounded half away from zero; `d` must be positive.
pub(crate) fn div_round_half_away(n: i128, d: i128) -> i128 {
    let (q, r) = (n / d, n % d);
    if r.abs() * 2 >= d {
        q + n.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD)
    }

    #[test]
    fn iso_4217_codes_are_known_and_typos_are_not() {
        assert!(
            ISO_4217.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        for code in [
            "USD", "EUR", "GBP", "JPY", "CHF", "KWD", "XOF", "ZWG", "SLE",
        ] {
            assert!(Currency::parse(code).unwrap().is_iso_4217(), "{code}");
        }
        for code in ["UDS", "XYZ", "XXX", "XTS", "XAU", "EUD"] {
            assert!(!Currency::parse(code).unwrap().is_iso_4217(), "{code}");
        }
        // Every currency with a minor unit of its own is a known one.
        for (code, _) in EXPONENTS {
            assert!(Currency(**code).is_iso_4217(), "{code:?}");
        }
    }

    #[test]
    fn currency_parse() {
        assert_eq!(Currency::parse("USD").unwrap(), Currency::USD);
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        for bad in ["", "US", "USDX", "usd", "U$D", "ÜSD", "US "] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        let msg = Currency::parse("usd").unwrap_err().to_string();
        assert!(msg.contains("three uppercase letters"), "{msg}");
    }

    #[test]
    fn currency_exponent_and_symbol() {
        assert_eq!(Currency::USD.minor_units(), 2);
        assert_eq!(Currency::JPY.minor_units(), 0);
        assert_eq!(Currency::parse("KRW").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert_eq!(Currency::USD.symbol(), "$");
        assert_eq!(Currency::EUR.symbol(), "€");
        assert_eq!(Currency::GBP.symbol(), "£");
        assert_eq!(Currency::parse("CAD").unwrap().symbol(), "CA$");
        assert_eq!(Currency::parse("SEK").unwrap().symbol(), "SEK");
    }

    #[test]
    fn currency_serde() {
        let json = serde_json::to_string(&Currency::EUR).unwrap();
        assert_eq!(json, "\"EUR\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"GBP\"").unwrap(),
            Currency::GBP
        );
        assert!(serde_json::from_str::<Currency>("\"gbp\"").is_err());
        let m = usd(1250);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"minor":1250,"currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }

    #[test]
    fn arithmetic() {
        assert_eq!(usd(100).checked_add(usd(50)).unwrap(), usd(150));
        assert_eq!(usd(100).checked_sub(usd(150)).unwrap(), usd(-50));
        assert_eq!(usd(100).min(usd(50)).unwrap(), usd(50));
        assert!(usd(-1).is_negative());
        assert!(Money::zero(Currency::USD).is_zero());
        let eur = Money::new(1, Currency::EUR);
        assert!(matches!(
            usd(1).checked_add(eur),
            Err(CoreError::CurrencyMismatch { .. })
        ));
        assert!(usd(1).checked_sub(eur).is_err());
        assert!(usd(1).min(eur).is_err());
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), Err(CoreError::Overflow));
        assert_eq!(usd(i64::MIN).checked_sub(usd(1)), Err(CoreError::Overflow));
    }

    #[test]
    fn format_decimal() {
        assert_eq!(usd(1200).format_decimal(), "12.00");
        assert_eq!(usd(-50).format_decimal(), "-0.50");
        assert_eq!(usd(5).format_decimal(), "0.05");
        assert_eq!(usd(0).format_decimal(), "0.00");
        assert_eq!(usd(i64::MIN).format_decimal(), "-92233720368547758.08");
        assert_eq!(Money::new(1200, Currency::JPY).format_decimal(), "1200");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Money::new(1005, kwd).format_decimal(), "1.005");
        assert_eq!(usd(1250).to_string(), "12.50 USD");
    }

    #[test]
    fn parse_decimal() {
        let p = |s| Money::parse_decimal(s, Currency::USD).map(|m| m.minor());
        assert_eq!(p("12.5"), Ok(1250));
        assert_eq!(p("12.50"), Ok(1250));
        assert_eq!(p("12"), Ok(1200));
        assert_eq!(p("-0.5"), Ok(-50));
        assert_eq!(p("-0"), Ok(0));
        assert_eq!(p("007.01"), Ok(701));
        assert_eq!(p("92233720368547758.07"), Ok(i64::MAX));
        assert_eq!(p("-92233720368547758.08"), Ok(i64::MIN));
        for bad in [
            "",
            "-",
            ".",
            ".5",
            "1.",
            "1.234",
            "1e3",
            "+1",
            "--1",
            "1-",
            " 1",
            "1 ",
            "1,00",
            "1.2.3",
            "NaN",
            "inf",
            "92233720368547758.08",
            "99999999999999999999999999999999999999999999",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be rejected");
        }
        let msg = p("1.234").unwrap_err().to_string();
        assert!(msg.contains("at most 2 decimal places"), "{msg}");
        let jpy = |s| Money::parse_decimal(s, Currency::JPY).map(|m| m.minor());
        assert_eq!(jpy("1200"), Ok(1200));
        assert!(jpy("1200.0").is_err());
    }

    #[test]
    fn wire_f64() {
        assert_eq!(usd(1250).to_wire_f64(), 12.5);
        assert_eq!(usd(-1).to_wire_f64(), -0.01);
        assert_eq!(Money::new(1200, Currency::JPY).to_wire_f64(), 1200.0);
    }

    #[test]
    fn percent_of_rounds_half_away_from_zero() {
        assert_eq!(percent_of(1000, 1000), 100);
        assert_eq!(percent_of(5, 1000), 1); // 0.5 -> 1
        assert_eq!(percent_of(-5, 1000), -1); // -0.5 -> -1
        assert_eq!(percent_of(4, 1000), 0); // 0.4 -> 0
        assert_eq!(percent_of(1999, 2500), 500); // 499.75 -> 500
        assert_eq!(percent_of(i64::MAX, 10_000), i64::MAX);
        assert_eq!(percent_of(i64::MAX, 20_000), i64::MAX);
        assert_eq!(percent_of(i64::MIN, 20_000), i64::MIN);
        assert_eq!(percent_of(0, 1234), 0);
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        prop_oneof![
            Just(Currency::USD),
            Just(Currency::JPY),
            Just(Currency::parse("KWD").unwrap()),
            Just(Currency::parse("CLF").unwrap()),
        ]
    }

    proptest! {
        #[test]
        fn decimal_round_trips(minor in any::<i64>(), cur in any_currency()) {
            let m = Money::new(minor, cur);
            prop_assert_eq!(Money::parse_decimal(&m.format_decimal(), cur), Ok(m));
        }

        #[test]
        fn parse_decimal_never_panics(s in "\\PC{0,30}", cur in any_currency()) {
            let _ = Money::parse_decimal(&s, cur);
        }

        #[test]
        fn currency_parse_never_panics(s in "\\PC{0,5}") {
            if let Ok(c) = Currency::parse(&s) {
                prop_assert_eq!(c.code(), s.as_str());
            }
        }

        #[test]
        fn kept_share_is_the_kept_part(
            amount in -1_000_000_000_000_000i64..1_000_000_000_000_000,
            total in 1i64..1_000_000_000_000_000,
            refunded_part in 0u32..=1000,
        ) {
            let refunded = i64::try_from(i128::from(total) * i128::from(refunded_part) / 1000).unwrap();
            let got = kept_share(amount, total, refunded);
            prop_assert!(got.abs() <= amount.abs());
            prop_assert_eq!(kept_share(amount, total, 0), amount);
            prop_assert_eq!(kept_share(amount, total, total), 0);
            prop_assert_eq!(kept_share(-amount, total, refunded), -got);
            let exact = amount as f64 * (total - refunded) as f64 / total as f64;
            prop_assert!((got as f64 - exact).abs() <= 1.0 + 1e-9 * exact.abs());
        }

        #[test]
        fn percent_of_is_close(amount in -1_000_000_000_000i64..1_000_000_000_000, bp in 0i64..=10_000) {
            let exact = amount as f64 * bp as f64 / 10_000.0;
            let got = percent_of(amount, bp);
            prop_assert!((got as f64 - exact).abs() <= 0.5 + 1e-6 * exact.abs());
            prop_assert!(got.abs() <= amount.abs());
            prop_assert_eq!(percent_of(-amount, bp), -got);
        }
    }
}
