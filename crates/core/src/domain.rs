//! Validated domain names in their ASCII (punycode) lowercase form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Longest input accepted before IDNA processing, to bound the work done on
/// hostile input. Far above anything that can map to a 253-octet name.
const MAX_INPUT: usize = 1024;

/// A syntactically valid, fully qualified domain name such as
/// `xn--bcher-kva.example`, stored lowercase in ASCII form without a
/// trailing dot.
///
/// Serialized as that string; deserialization goes through [`DomainName::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    /// Parses and normalizes a domain name.
    ///
    /// Trims whitespace, strips one trailing dot, converts to ASCII with
    /// IDNA (UTS #46: `"Bücher.example"` becomes `"xn--bcher-kva.example"`),
    /// then requires: at most 253 octets, at least two labels, each label
    /// 1 to 63 octets of `a-z`, `0-9` and `-`, no label starting or ending
    /// with `-`, and a top-level label that is not all digits.
    pub fn parse(input: &str) -> Result<DomainName, CoreError> {
        let err = |reason: &str| CoreError::InvalidDomain {
            input: input.chars().take(300).collect(),
            reason: reason.to_owned(),
        };
        let trimmed = input.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(err("empty"));
        }
        if trimmed.len() > MAX_INPUT {
            return Err(err("longer than 253 characters"));
        }
        let ascii = idna::domain_to_ascii_cow(trimmed.as_bytes(), idna::AsciiDenyList::EMPTY)
            .map_err(|_| err("not a valid internationalized domain name (IDNA)"))?;
        if ascii.len() > 253 {
            return Err(err("longer than 253 characters"));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(err("needs at least two labels, e.g. example.com"));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(err("empty label"));
            }
            if label.len() > 63 {
                return Err(err("label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err(
                    "label contains a character other than letters, digits and '-'",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("label starts or ends with '-'"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("top-level domain is all digits"));
        }
        for label in &labels {
            if let Some(rest) = label.strip_prefix("xn--") {
                let (unicode, _) = idna::domain_to_unicode(&format!("xn--{rest}"));
                if let Some(scripts) = mixed_scripts(&unicode) {
                    return Err(err(&format!(
                        "label {unicode:?} mixes scripts ({scripts}): a look-alike name is \
                         not accepted"
                    )));
                }
            }
        }
        Ok(DomainName(ascii.into_owned()))
    }

    /// The ASCII lowercase form, e.g. `"xn--bcher-kva.example"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels from left to right (`www`, `example`, `com`).
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0.split('.')
    }

    /// The last label, e.g. `"com"` (or `"uk"` for `example.co.uk`).
    pub fn tld(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }

    /// The label before the last one, e.g. `"example"` for `www.example.com`
    /// (or `"co"` for `example.co.uk`; see [`DomainName::split_registrable`]).
    pub fn sld(&self) -> &str {
        self.0.rsplit('.').nth(1).unwrap_or("")
    }

    /// The second-level label when this name is exactly `<label>.<tld>`.
    ///
    /// `tld` may have several labels (`"co.uk"`), a leading dot, uppercase or
    /// Unicode; it is normalized like a domain name. `example.co.uk` with
    /// `"co.uk"` gives `Some("example")`; `www.example.co.uk` or a different
    /// TLD gives `None`.
    pub fn split_registrable(&self, tld: &str) -> Option<&str> {
        self.under(tld).filter(|sld| !sld.contains('.'))
    }

    /// The labels before `tld` when this name lies under it at any depth (normalized as
    /// in [`DomainName::split_registrable`]): `blog.example.com` under `"com"` gives
    /// `Some("blog.example")`; `None` for another TLD or the TLD itself.
    pub fn under(&self, tld: &str) -> Option<&str> {
        let tld = tld.trim();
        let tld = tld.strip_prefix('.').unwrap_or(tld);
        let tld = idna::domain_to_ascii_cow(tld.as_bytes(), idna::AsciiDenyList::EMPTY).ok()?;
        if tld.is_empty() {
            return None;
        }
        let before = self.0.strip_suffix(tld.as_ref())?.strip_suffix('.')?;
        (!before.is_empty()).then_some(before)
    }

    /// Why a registry would refuse to register this name as it is, `None` when it would
    /// not: a label with hyphens in its third and fourth positions that is not an IDN
    /// (`ab--cd`, reserved by RFC 5891 §4.2.3.1), or an IDN label with a character outside
    /// IDNA2008's letters, marks and digits (RFC 5892: emoji, symbols, punctuation), which
    /// UTS #46 lets through for lookups but registries do not register.
    pub fn registration_problem(&self) -> Option<String> {
        use unicode_general_category::{get_general_category, GeneralCategory as G};
        for label in self.labels() {
            if label.get(2..4) == Some("--") && !label.starts_with("xn--") {
                return Some(format!(
                    "{label} has hyphens in its third and fourth positions, which are reserved"
                ));
            }
            if label.starts_with("xn--") {
                let (unicode, decoded) = idna::domain_to_unicode(label);
                if decoded.is_err() {
                    return Some(format!("{label} is not a valid internationalized label"));
                }
                let refused = unicode.chars().find(|&c| {
                    c != '-'
                        && !matches!(
                            get_general_category(c),
                            G::LowercaseLetter
                                | G::OtherLetter
                                | G::ModifierLetter
                                | G::DecimalNumber
                                | G::NonspacingMark
                                | G::SpacingMark
                        )
                });
                if let Some(c) = refused {
                    return Some(format!(
                        "{c:?} (U+{:04X}) is not a letter, mark or digit (IDNA2008)",
                        u32::from(c)
                    ));
                }
            }
        }
        None
    }

    /// The Unicode form for display, e.g. `"bücher.example"`.
    pub fn to_unicode(&self) -> String {
        idna::domain_to_unicode(&self.0).0
    }
}

/// The site a hosting account's name serves: the name without a leading `www.` label. An
/// account answers to both forms, so `example.com` and `www.example.com` are one site.
pub fn site_of(name: &str) -> &str {
    match name.strip_prefix("www.") {
        Some(rest) if rest.contains('.') => rest,
        _ => name,
    }
}

/// The names a hosting account for `name` answers to: its site and `www.` before it.
pub fn site_forms(name: &str) -> [String; 2] {
    let site = site_of(name);
    [site.to_owned(), format!("www.{site}")]
}

/// The registrable domain of `name`'s site by the Public Suffix List (`shop.example.co.uk`:
/// `example.co.uk`), or the site itself when it has none (a public suffix, which no site
/// may be): the one name that `name`'s site and every site above or below it share.
pub fn registrable_site(name: &str) -> &str {
    let site = site_of(name);
    psl::domain_str(site).unwrap_or(site)
}

/// The sites above `name`'s, down to its registrable domain by the Public Suffix List
/// (`shop.victim.co.uk`: `victim.co.uk`; `a.b.example.com`: `b.example.com`, `example.com`),
/// nearest first; none for a registrable domain itself. `None` when the site is a public
/// suffix (`co.uk`, `github.io`): no one's site can be there.
pub fn parent_sites(name: &str) -> Option<Vec<&str>> {
    let site = site_of(name);
    let registrable = psl::domain_str(site)?;
    let mut parents = Vec::new();
    let mut rest = site;
    while rest.len() > registrable.len() {
        match rest.split_once('.') {
            Some((_, up)) => {
                parents.push(up);
                rest = up;
            }
            None => break,
        }
    }
    Some(parents)
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DomainName::parse(s)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DomainName {
    type Error = CoreError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        DomainName::parse(&s)
    }
}

impl From<DomainName> for String {
    fn from(d: DomainName) -> String {
        d.0
    }
}

/// The scripts of a label when it mixes them, `None` when it is one script. Follows UTS
/// #39's "highly restrictive" level, as registries do: characters common to all scripts
/// (digits, `-`) and combining marks do not count; one script per label, except the
/// combinations a language writes with (Han with Hiragana and Katakana for Japanese, with
/// Bopomofo for Chinese, with Hangul for Korean), which may also carry Latin.
pub(crate) fn mixed_scripts(label: &str) -> Option<String> {
    use unicode_script::{Script, UnicodeScript};
    let mut scripts: Vec<Script> = Vec::new();
    for c in label.chars() {
        let s = c.script();
        if matches!(s, Script::Common | Script::Inherited | Script::Unknown) {
            continue;
        }
        if !scripts.contains(&s) {
            scripts.push(s);
        }
    }
    if scripts.len() <= 1 {
        return None;
    }
    let allowed: [&[Script]; 3] = [
        &[
            Script::Latin,
            Script::Han,
            Script::Hiragana,
            Script::Katakana,
        ],
        &[Script::Latin, Script::Han, Script::Bopomofo],
        &[Script::Latin, Script::Han, Script::Hangul],
    ];
    let fits = |set: &[Script]| scripts.iter().all(|s| set.contains(s));
    if allowed.iter().any(|set| fits(set)) {
        return None;
    }
    Some(
        scripts
            .iter()
            .map(|s| s.full_name())
            .collect::<Vec<_>>()
            .join(" + "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_registries_refuse_are_named() {
        let problem = |n: &str| DomainName::parse(n).unwrap().registration_problem();
        for ok in [
            "example.com",
            "my-shop.com",
            "a-b-c.de",
            "bücher.de",
            "münchen.de",
            "日本語.jp",
            "हिन्दी.in",
            "παράδειγμα.gr",
            "xn--bcher-kva.de",
            "x1.com",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        for bad in [
            "😀😀.com",
            "💩-shop.net",
            "ab--cd.com",
            "i♥ny.com",
            "shop.ab--cd.com",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
        assert!(problem("ab--cd.com").unwrap().contains("third and fourth"));
        assert!(problem("😀.com").unwrap().contains("U+1F600"));
    }

    #[test]
    fn a_name_lies_under_a_tld_at_any_depth() {
        let n = DomainName::parse("blog.example.co.uk").unwrap();
        assert_eq!(n.under("co.uk"), Some("blog.example"));
        assert_eq!(n.under(".UK"), Some("blog.example.co"));
        assert_eq!(n.split_registrable("co.uk"), None);
        assert_eq!(n.under("k"), None, "a whole label, not a suffix of one");
        assert_eq!(n.under("com"), None);
        assert_eq!(DomainName::parse("co.uk").unwrap().under("co.uk"), None);
    }

    #[test]
    fn a_site_is_its_name_with_or_without_www() {
        assert_eq!(site_of("www.example.com"), "example.com");
        assert_eq!(site_of("example.com"), "example.com");
        assert_eq!(site_of("www.com"), "www.com");
        assert_eq!(site_of("wwwexample.com"), "wwwexample.com");
        assert_eq!(site_of("www.www.example.com"), "www.example.com");
        assert_eq!(
            site_forms("www.example.com"),
            ["example.com".to_owned(), "www.example.com".to_owned()]
        );
        assert_eq!(site_forms("example.com"), site_forms("www.example.com"));
    }

    #[test]
    fn a_site_and_those_above_and_below_share_one_registrable_site() {
        for name in [
            "example.co.uk",
            "www.example.co.uk",
            "shop.example.co.uk",
            "a.b.example.co.uk",
        ] {
            assert_eq!(registrable_site(name), "example.co.uk", "{name}");
        }
        assert_eq!(registrable_site("www.example.com"), "example.com");
        assert_eq!(registrable_site("co.uk"), "co.uk");
        assert_ne!(
            registrable_site("example.com"),
            registrable_site("example.net")
        );
    }

    #[test]
    fn parent_sites_stop_at_the_registrable_domain() {
        assert_eq!(parent_sites("example.com"), Some(vec![]));
        assert_eq!(parent_sites("www.example.com"), Some(vec![]));
        assert_eq!(parent_sites("shop.example.com"), Some(vec!["example.com"]));
        assert_eq!(
            parent_sites("a.b.example.com"),
            Some(vec!["b.example.com", "example.com"])
        );
        assert_eq!(
            parent_sites("shop.victim.co.uk"),
            Some(vec!["victim.co.uk"])
        );
        assert_eq!(parent_sites("victim.co.uk"), Some(vec![]));
        assert_eq!(parent_sites("me.github.io"), Some(vec![]));
        assert_eq!(parent_sites("co.uk"), None);
        assert_eq!(parent_sites("www.co.uk"), None);
        assert_eq!(parent_sites("github.io"), None);
        assert_eq!(parent_sites("xn--mnchen-3ya.de"), Some(vec![]));
        assert_eq!(
            parent_sites("shop.example.invalidtld"),
            Some(vec!["example.invalidtld"])
        );
    }
    use proptest::prelude::*;

    fn parse(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn reason(s: &str) -> String {
        DomainName::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn normalizes() {
        assert_eq!(parse("Example.COM").as_str(), "example.com");
        assert_eq!(parse("  example.com.  ").as_str(), "example.com");
        assert_eq!(parse("bücher.example").as_str(), "xn--bcher-kva.example");
        assert_eq!(parse("BÜCHER.example").as_str(), "xn--bcher-kva.example");
        assert_eq!(
            parse("xn--bcher-kva.example").to_unicode(),
            "bücher.example"
        );
        assert_eq!(parse("例え.テスト").as_str(), "xn--r8jz45g.xn--zckzah");
        assert_eq!(parse("a-b.c0.io").as_str(), "a-b.c0.io");
        assert_eq!(parse("123.com").as_str(), "123.com");
    }

    #[test]
    fn accessors() {
        let d = parse("www.example.co.uk");
        assert_eq!(
            d.labels().collect::<Vec<_>>(),
            ["www", "example", "co", "uk"]
        );
        assert_eq!(d.tld(), "uk");
        assert_eq!(d.sld(), "co");
        assert_eq!(d.split_registrable("co.uk"), None);
        let d = parse("example.co.uk");
        assert_eq!(d.split_registrable("co.uk"), Some("example"));
        assert_eq!(d.split_registrable(".CO.UK"), Some("example"));
        assert_eq!(d.split_registrable("uk"), None);
        assert_eq!(d.split_registrable("o.uk"), None);
        assert_eq!(d.split_registrable(""), None);
        let d = parse("example.com");
        assert_eq!(d.sld(), "example");
        assert_eq!(d.split_registrable("com"), Some("example"));
        assert_eq!(d.split_registrable("net"), None);
        assert_eq!(d.split_registrable("example.com"), None);
        assert_eq!(
            parse("пример.рф").split_registrable("рф"),
            Some("xn--e1afmkfd")
        );
    }

    #[test]
    fn mixed_scripts_are_refused() {
        // A Cyrillic "а" (U+0430) in a Latin name.
        let r = reason("p\u{0430}ypal.com");
        assert!(r.contains("mixes scripts"), "{r}");
        assert!(r.contains("Cyrillic") && r.contains("Latin"), "{r}");
        // Typed as its ASCII form, the same.
        let ascii = parse("bücher.example"); // a genuine one for contrast
        assert_eq!(ascii.as_str(), "xn--bcher-kva.example");
        let lookalike = idna::domain_to_ascii("p\u{0430}ypal.com").unwrap();
        assert!(reason(&lookalike).contains("mixes scripts"));
        // A Greek omicron in a Latin name.
        assert!(reason("g\u{03bf}ogle.com").contains("mixes scripts"));
        // Single scripts, and the languages' own combinations, are fine.
        for ok in [
            "пример.рф",
            "münchen.de",
            "ελληνικά.gr",
            "例え.テスト",
            "東京タワー.jp",
            "ソニーsony.jp",
            "한국어.kr",
            "пример-2.com",
        ] {
            assert!(DomainName::parse(ok).is_ok(), "{ok}");
        }
        // Cyrillic and Greek in one label.
        assert!(reason("\u{0430}\u{03b1}.com").contains("mixes scripts"));
    }

    #[test]
    fn rejects_with_reason() {
        assert!(reason("").contains("empty"));
        assert!(reason(" . ").contains("empty"));
        assert!(reason("localhost").contains("at least two labels"));
        assert!(reason("a..com").contains("empty label"));
        assert!(reason(".com").contains("empty label"));
        assert!(reason("example.com..").contains("empty label"));
        assert!(reason(&format!("{}.com", "a".repeat(64))).contains("label longer than 63"));
        assert!(DomainName::parse(&format!("{}.com", "a".repeat(63))).is_ok());
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(reason(&long).contains("longer than 253"));
        assert!(reason(&"a.".repeat(5000)).contains("longer than 253"));
        assert!(reason("exa_mple.com").contains("other than letters"));
        assert!(reason("exa mple.com").contains("other than letters"));
        assert!(reason("example.com/x").contains("other than letters"));
        assert!(reason("-example.com").contains("starts or ends with '-'"));
        assert!(reason("example-.com").contains("starts or ends with '-'"));
        assert!(reason("1.2.3.4").contains("all digits"));
        assert!(reason("xn--zz.com").contains("IDNA"));
    }

    #[test]
    fn serde() {
        let d = parse("example.com");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"example.com\"");
        assert_eq!(
            serde_json::from_str::<DomainName>("\"EXAMPLE.com\"").unwrap(),
            d
        );
        assert!(serde_json::from_str::<DomainName>("\"nope\"").is_err());
    }

    proptest! {
        #[test]
        fn random_input_never_panics_and_valid_output_round_trips(s in "\\PC{0,80}") {
            if let Ok(d) = DomainName::parse(&s) {
                prop_assert_eq!(DomainName::parse(d.as_str()), Ok(d.clone()));
                prop_assert!(d.as_str().len() <= 253);
                prop_assert!(d.labels().all(|l| (1..=63).contains(&l.len())));
            }
        }

        #[test]
        fn generated_names_round_trip(
            labels in proptest::collection::vec("[a-zA-Z0-9äöüé-]{1,20}", 2..6),
        ) {
            let s = labels.join(".");
            if let Ok(d) = DomainName::parse(&s) {
                prop_assert_eq!(DomainName::parse(d.as_str()), Ok(d.clone()));
                prop_assert_eq!(DomainName::parse(&d.to_unicode()), Ok(d.clone()));
                prop_assert!(d.as_str().len() <= 253);
                prop_assert!(d.labels().count() >= 2);
                prop_assert!(d.labels().all(|l| (1..=63).contains(&l.len())));
                prop_assert_eq!(d.tld(), d.labels().next_back().unwrap());
            }
        }

        #[test]
        fn plain_ascii_names_parse(
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4),
            tld in "[a-z]{2,6}",
        ) {
            let s = format!("{}.{tld}", labels.join("."));
            // Labels with "--" in positions 3-4 that are not valid punycode are
            // legitimately rejected by IDNA; everything else must parse as is.
            if !labels.iter().any(|l| l.get(2..4) == Some("--")) {
                let d = DomainName::parse(&s).unwrap();
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert_eq!(d.tld(), tld.as_str());
            }
        }
    }
}
