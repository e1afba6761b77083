//! Customers' records: what they see of their zone and the rules of what they may write.
//!
//! A record set is a name, a type, a TTL and its values. Names are given relative to the
//! zone (`www`, `@` or empty for the apex) or absolute (`www.example.com`, with or without
//! the final dot, which then must be inside the zone). Values are as in a zone file, except
//! TXT (the text itself, quoted by Lodge) and CAA (the value may be unquoted).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::pdns::{RRset, Zone};
use crate::Validator;

/// The types customers may edit.
pub const EDITABLE: &[&str] = &["A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA"];
pub const MIN_TTL: u32 = 60;
pub const MAX_TTL: u32 = 604_800;
/// At most this many record sets in a zone, and values in a set.
pub const MAX_SETS: usize = 500;
pub const MAX_VALUES: usize = 100;

/// One record set as a customer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// The absolute name without its final dot (`www.example.com`).
    pub name: String,
    pub kind: String,
    pub ttl: u32,
    pub values: Vec<String>,
}

/// One record set as a customer writes it.
#[derive(Debug, Clone, Default)]
pub struct RecordInput {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub ttl: Option<i64>,
    pub values: Option<Vec<String>>,
}

/// A zone as a customer sees it.
#[derive(Debug, Clone)]
pub struct ZoneView {
    pub zone: String,
    /// The zone's nameservers (Lodge's: not editable).
    pub nameservers: Vec<String>,
    pub records: Vec<RecordSet>,
}

fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_owned()
}

/// TXT's text from its quoted strings (`"a" "b"` → `ab`).
fn unquote_txt(content: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match (inside, c) {
            (false, '"') => inside = true,
            (true, '"') => inside = false,
            (true, '\\') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (true, c) => out.push(c),
            (false, _) => {}
        }
    }
    out
}

/// TXT content: the text in quoted strings of at most 255 characters.
fn quote_txt(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(255)
        .map(|chunk| {
            let s: String = chunk.iter().collect();
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn view(zone: &Zone) -> ZoneView {
    let mut records: Vec<RecordSet> = zone
        .rrsets
        .iter()
        .filter(|r| EDITABLE.contains(&r.kind.as_str()))
        .map(|r| RecordSet {
            name: bare(&r.name),
            kind: r.kind.clone(),
            ttl: r.ttl,
            values: r
                .records
                .iter()
                .map(|c| {
                    if r.kind == "TXT" {
                        unquote_txt(&c.content)
                    } else {
                        c.content.clone()
                    }
                })
                .collect(),
        })
        .collect();
    records.sort_by(|a, b| (&a.name, &a.kind).cmp(&(&b.name, &b.kind)));
    let mut nameservers: Vec<String> = zone
        .rrsets
        .iter()
        .filter(|r| r.kind == "NS" && r.name == zone.name)
        .flat_map(|r| r.records.iter().map(|c| bare(&c.content)))
        .collect();
    nameservers.sort();
    ZoneView {
        zone: bare(&zone.name),
        nameservers,
        records,
    }
}

/// A host name (labels of letters, digits, `-` and `_`), absolute with its final dot, or
/// `.` (no host: a null MX or SRV).
fn host_name(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    if s == "." {
        return Some(s);
    }
    let body = s.strip_suffix('.').unwrap_or(&s);
    // A host's top-level label is never all digits (RFC 3696 2): `1.2.3.4` is an address,
    // and an MX or a CNAME must name a host (found by the stack audit: `10 1.2.3.4` was
    // stored as `10 1.2.3.4.`).
    let numeric_top = body
        .rsplit('.')
        .next()
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    let ok = !body.is_empty()
        && !numeric_top
        && body.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| format!("{body}."))
}

/// The absolute name (final dot) of a record set's `name` in `zone` (absolute).
fn record_name(name: &str, zone: &str) -> Result<String, String> {
    let n = name.trim().to_ascii_lowercase();
    let zone_bare = zone.trim_end_matches('.');
    let full = if n.is_empty() || n == "@" {
        zone.to_owned()
    } else if let Some(abs) = n.strip_suffix('.') {
        if abs != zone_bare && !abs.ends_with(&format!(".{zone_bare}")) {
            return Err(format!("{name} is not inside the zone {zone_bare}."));
        }
        format!("{abs}.")
    } else if n == zone_bare || n.ends_with(&format!(".{zone_bare}")) {
        format!("{n}.")
    } else {
        format!("{n}.{zone}")
    };
    let body = full.trim_end_matches('.');
    let labels: Vec<&str> = body.split('.').collect();
    let ok = body.len() <= 253
        && labels.iter().enumerate().all(|(i, l)| {
            (i == 0 && *l == "*")
                || (!l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        });
    if ok {
        Ok(full)
    } else {
        Err(format!("{name:?} is not a valid record name."))
    }
}

fn number<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    s?.parse().ok()
}

/// One value of `kind`, as PowerDNS stores it; `Err` says what is wrong.
fn value(kind: &str, raw: &str) -> Result<String, String> {
    let v = raw.trim();
    let mut w = v.split_whitespace();
    match kind {
        "A" => v
            .parse::<Ipv4Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| format!("{v:?} is not an IPv4 address.")),
        "AAAA" => v
            .parse::<Ipv6Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| format!("{v:?} is not an IPv6 address.")),
        "CNAME" => host_name(v)
            .filter(|h| h != ".")
            .ok_or_else(|| format!("{v:?} is not a host name.")),
        "MX" => {
            let pref = number::<u16>(w.next());
            let host = w.next().and_then(host_name);
            match (pref, host, w.next()) {
                (Some(p), Some(h), None) => Ok(format!("{p} {h}")),
                _ => Err(format!(
                    "{v:?} is not \"<preference 0-65535> <host name>\"."
                )),
            }
        }
        "SRV" => {
            let prio = number::<u16>(w.next());
            let weight = number::<u16>(w.next());
            let port = number::<u16>(w.next());
            let target = w.next().and_then(host_name);
            match (prio, weight, port, target, w.next()) {
                (Some(p), Some(we), Some(po), Some(t), None) => Ok(format!("{p} {we} {po} {t}")),
                _ => Err(format!(
                    "{v:?} is not \"<priority> <weight> <port> <target host>\"."
                )),
            }
        }
        "TXT" => {
            if raw.is_empty() || raw.len() > 4000 {
                Err("Give between 1 and 4000 characters of text.".into())
            } else if raw.chars().any(char::is_control) {
                Err("Text may not contain control characters.".into())
            } else {
                Ok(quote_txt(raw))
            }
        }
        "CAA" => {
            let flags = number::<u8>(w.next());
            let tag = w.next().map(str::to_ascii_lowercase);
            let rest: Vec<&str> = w.collect();
            let val = rest.join(" ");
            let val = val
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(&val)
                .to_owned();
            match (flags, tag) {
                (Some(f), Some(t))
                    if ["issue", "issuewild", "iodef"].contains(&t.as_str())
                        && !val.contains('"')
                        && !val.chars().any(char::is_control) =>
                {
                    Ok(format!("{f} {t} \"{val}\""))
                }
                _ => Err(format!(
                    "{v:?} is not \"<flags 0-255> <issue|issuewild|iodef> <value>\"."
                )),
            }
        }
        _ => Err("Unknown type.".into()),
    }
}

/// Checks what a customer sent against `zone`; returns the record sets to have, by
/// (absolute name, type). Errors go to `v` (`records[i].field`).
pub fn validate(
    zone: &Zone,
    input: &[RecordInput],
    default_ttl: u32,
    v: &mut Validator,
) -> BTreeMap<(String, String), RRset> {
    let mut out: BTreeMap<(String, String), RRset> = BTreeMap::new();
    if input.len() > MAX_SETS {
        v.add(
            "records",
            format!("Ensure there are no more than {MAX_SETS} record sets."),
        );
        return out;
    }
    for (i, r) in input.iter().enumerate() {
        let f = |field: &str| format!("records[{i}].{field}");
        let name = match r.name.as_deref() {
            None => {
                v.required(&f("name"));
                None
            }
            Some(n) => match record_name(n, &zone.name) {
                Ok(n) => Some(n),
                Err(e) => {
                    v.add(&f("name"), e);
                    None
                }
            },
        };
        let kind = match r.kind.as_deref().map(|k| k.trim().to_ascii_uppercase()) {
            None => {
                v.required(&f("type"));
                None
            }
            Some(k) if k == "NS" || k == "SOA" => {
                v.add(
                    &f("type"),
                    format!("{k} records are managed by Lodge and cannot be edited."),
                );
                None
            }
            Some(k) if !EDITABLE.contains(&k.as_str()) => {
                v.add(
                    &f("type"),
                    format!("\"{k}\" is not a valid choice: {}.", EDITABLE.join(", ")),
                );
                None
            }
            Some(k) => Some(k),
        };
        let ttl = match r.ttl {
            None => Some(default_ttl),
            Some(t) if (i64::from(MIN_TTL)..=i64::from(MAX_TTL)).contains(&t) => {
                u32::try_from(t).ok()
            }
            Some(_) => {
                v.add(
                    &f("ttl"),
                    format!("Give a TTL between {MIN_TTL} and {MAX_TTL} seconds."),
                );
                None
            }
        };
        let values = match r.values.as_deref() {
            None | Some([]) => {
                v.add(&f("values"), "Give at least one value.");
                None
            }
            Some(vals) if vals.len() > MAX_VALUES => {
                v.add(
                    &f("values"),
                    format!("Ensure there are no more than {MAX_VALUES} values."),
                );
                None
            }
            Some(vals) => Some(vals),
        };
        let (Some(name), Some(kind), Some(ttl), Some(values)) = (name, kind, ttl, values) else {
            continue;
        };
        let mut contents = vec![];
        let mut ok = true;
        for (j, raw) in values.iter().enumerate() {
            match value(&kind, raw) {
                Ok(c) => {
                    if !contents.contains(&c) {
                        contents.push(c);
                    }
                }
                Err(e) => {
                    v.add(&format!("records[{i}].values[{j}]"), e);
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        if kind == "CNAME" {
            if name == zone.name {
                v.add(
                    &f("type"),
                    "A CNAME cannot be at the zone's apex (it holds the SOA and NS records).",
                );
                continue;
            }
            if contents.len() > 1 {
                v.add(&f("values"), "A CNAME has exactly one value.");
                continue;
            }
            if contents.first() == Some(&name) {
                v.add(&f("values"), "A CNAME cannot point to its own name.");
                continue;
            }
        }
        let key = (name.clone(), kind.clone());
        if out.contains_key(&key) {
            v.add(
                &f("name"),
                format!(
                    "{} {kind} is given twice: give its values in one record set.",
                    bare(&name)
                ),
            );
            continue;
        }
        out.insert(key, RRset::new(&name, &kind, ttl, &contents));
    }
    // A CNAME is alone at its name: no other record there (Lodge's NS and SOA included).
    let names_with_other: Vec<String> = out
        .keys()
        .filter(|(_, k)| k != "CNAME")
        .map(|(n, _)| n.clone())
        .chain(
            zone.rrsets
                .iter()
                .filter(|r| !EDITABLE.contains(&r.kind.as_str()))
                .map(|r| r.name.clone()),
        )
        .collect();
    for (i, r) in input.iter().enumerate() {
        let is_cname = r
            .kind
            .as_deref()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case("CNAME"));
        if !is_cname {
            continue;
        }
        let Some(name) = r
            .name
            .as_deref()
            .and_then(|n| record_name(n, &zone.name).ok())
        else {
            continue;
        };
        if names_with_other.contains(&name) {
            v.add(
                &format!("records[{i}].name"),
                format!(
                    "{} has other records: a CNAME must be the only record at its name.",
                    bare(&name)
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        Zone {
            name: "example.com.".into(),
            account: String::new(),
            rrsets: vec![RRset::new(
                "example.com.",
                "NS",
                3600,
                &["ns1.host.test.".into()],
            )],
        }
    }

    fn input(name: &str, kind: &str, values: &[&str]) -> RecordInput {
        RecordInput {
            name: Some(name.into()),
            kind: Some(kind.into()),
            ttl: None,
            values: Some(values.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn names_are_inside_the_zone() {
        let z = "example.com.";
        assert_eq!(record_name("@", z).unwrap(), "example.com.");
        assert_eq!(record_name("", z).unwrap(), "example.com.");
        assert_eq!(record_name("www", z).unwrap(), "www.example.com.");
        assert_eq!(
            record_name("WWW.Example.com", z).unwrap(),
            "www.example.com."
        );
        assert_eq!(
            record_name("a.b.example.com.", z).unwrap(),
            "a.b.example.com."
        );
        assert_eq!(record_name("*.dev", z).unwrap(), "*.dev.example.com.");
        assert!(record_name("www.other.com.", z).is_err());
        assert!(record_name("bad name", z).is_err());
        assert!(record_name("a.*", z).is_err());
        assert_eq!(
            record_name("www.other.com", z).unwrap(),
            "www.other.com.example.com."
        );
    }

    #[test]
    fn values_are_checked_and_normalised() {
        assert_eq!(value("A", " 192.0.2.1 ").unwrap(), "192.0.2.1");
        assert!(value("A", "192.0.2.300").is_err());
        assert_eq!(value("AAAA", "2001:DB8::1").unwrap(), "2001:db8::1");
        assert_eq!(
            value("MX", "10 Mail.Example.com").unwrap(),
            "10 mail.example.com."
        );
        assert!(value("MX", "mail.example.com").is_err());
        assert!(value("MX", "10 1.2.3.4").is_err(), "an address is no host");
        assert!(value("CNAME", "192.0.2.1").is_err());
        assert!(value("SRV", "1 1 443 10.0.0.1").is_err());
        assert_eq!(
            value("MX", "10 mx1.example.com").unwrap(),
            "10 mx1.example.com."
        );
        assert_eq!(
            value("SRV", "0 5 5060 sip.example.com.").unwrap(),
            "0 5 5060 sip.example.com."
        );
        assert_eq!(value("TXT", "v=spf1 -all").unwrap(), "\"v=spf1 -all\"");
        assert_eq!(
            unquote_txt(&value("TXT", "say \"hi\"").unwrap()),
            "say \"hi\""
        );
        let long = "x".repeat(300);
        assert_eq!(unquote_txt(&value("TXT", &long).unwrap()), long);
        assert_eq!(
            value("CAA", "0 issue letsencrypt.org").unwrap(),
            "0 issue \"letsencrypt.org\""
        );
        assert!(value("CAA", "0 bogus x").is_err());
    }

    #[test]
    fn zone_rules_hold() {
        let z = zone();
        let mut v = Validator::new();
        let out = validate(
            &z,
            &[
                input("@", "CNAME", &["other.test"]),
                input("www", "NS", &["ns.test"]),
                input("www", "PTR", &["x"]),
                input("x", "CNAME", &["a.test"]),
                input("x", "A", &["192.0.2.1"]),
                input("y", "A", &["192.0.2.1"]),
                input("y", "A", &["192.0.2.2"]),
                RecordInput {
                    ttl: Some(5),
                    ..input("z", "A", &["192.0.2.1"])
                },
            ],
            3600,
            &mut v,
        );
        let Err(crate::ServiceError::Invalid(fields)) = v.finish() else {
            panic!("invalid");
        };
        for f in [
            "records[0].type",
            "records[1].type",
            "records[2].type",
            "records[3].name",
            "records[6].name",
            "records[7].ttl",
        ] {
            assert!(fields.contains_key(f), "{f}: {fields:?}");
        }
        // The valid sets (x A, x CNAME, y A); with errors reported nothing is written.
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn a_cname_cannot_point_to_itself() {
        let mut v = Validator::new();
        validate(
            &zone(),
            &[input("www", "CNAME", &["www.example.com"])],
            3600,
            &mut v,
        );
        let Err(crate::ServiceError::Invalid(fields)) = v.finish() else {
            panic!("invalid");
        };
        assert!(fields.contains_key("records[0].values"), "{fields:?}");
    }
}
