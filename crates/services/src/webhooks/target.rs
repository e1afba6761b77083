//! Where a webhook may go: an `http` or `https` URL whose host resolves only to public
//! addresses, unless the operator allows private targets (`--webhooks-allow-private`).
//! Checked when an endpoint is registered and again before every delivery (a name may
//! resolve elsewhere by then); a delivery goes to the addresses that were checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// A URL fit to be an endpoint's, or why not (a message for the `url` field).
pub(crate) fn parse(url: &str) -> Result<Url, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("This field is required.".into());
    }
    if url.len() > 2048 {
        return Err("At most 2048 characters.".into());
    }
    let parsed = Url::parse(url).map_err(|e| format!("Not a valid URL ({e})."))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("Only http and https URLs are accepted.".into());
    }
    if parsed.host().is_none() {
        return Err("The URL has no host.".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("Credentials in the URL are not accepted.".into());
    }
    if parsed.port() == Some(0) {
        return Err("Port 0 is no port a server listens on.".into());
    }
    if parsed.fragment().is_some() {
        return Err("A URL with a fragment (#…) is not accepted.".into());
    }
    Ok(parsed)
}

/// The addresses a delivery to `url` may connect to: its host's addresses, every one of them
/// public unless `allow_private`. `Err`: why not (a message for staff and the delivery log).
pub(crate) async fn resolve(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "The URL has no port.".to_owned())?;
    let host = url
        .host_str()
        .ok_or_else(|| "The URL has no host.".to_owned())?;
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>();
    let addrs: Vec<SocketAddr> = match literal {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        // Bounded as the request is: a resolver that never answers must not hold the
        // worker's round.
        Err(_) => tokio::time::timeout(super::TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| {
                format!(
                    "The host {host:?} was not resolved within {} seconds.",
                    super::TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("The host {host:?} could not be resolved ({e})."))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err("The host has no address.".into());
    }
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(format!(
                "The host resolves to {}, which is not a public address (loopback, private, \
                 link-local and unspecified targets are refused unless the operator allows \
                 them with --webhooks-allow-private).",
                bad.ip()
            ));
        }
    }
    Ok(addrs)
}

/// Whether an address is on the public internet: not loopback, private, link-local,
/// unspecified, shared (CGNAT), multicast, broadcast, reserved or a benchmark network; an
/// IPv4 address inside IPv6 (mapped, NAT64) is judged as IPv4.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let first = s.first().copied().unwrap_or(0);
    // NAT64 (64:ff9b::/96): the IPv4 address in its last 32 bits.
    if first == 0x64 && s.get(1) == Some(&0xff9b) && s.get(2..6) == Some(&[0u16; 4][..]) {
        let [.., hi, lo] = s;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return is_public_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-translated (::ffff:0:a.b.c.d, RFC 2765).
    if s.get(..6) == Some(&[0, 0, 0, 0, 0xffff, 0][..]) {
        let [.., hi, lo] = s;
        return is_public_v4(embedded(hi, lo));
    }
    // 6to4 (2002:a.b.c.d::/48): reaches the IPv4 address in its bits 16–47.
    if first == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first == 0x64 && s.get(1) == Some(&0xff9b) && s.get(2) == Some(&1)) // local NAT64 64:ff9b:1::/48
        || (first == 0x100 && s.get(1..4) == Some(&[0u16; 3][..])) // discard 100::/64
        || (first == 0x2001 && s.get(1).is_some_and(|x| *x < 0x200)) // IETF protocols 2001::/23 (Teredo, …)
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (first == 0x2001 && s.get(1) == Some(&0x0db8)) // documentation
        // IPv4-compatible (deprecated) ::a.b.c.d
        || s.get(..6) == Some(&[0u16; 6][..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_not() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::808:808",
            "100::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "192.88.99.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is not public");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:0:808:808",
            "2001:4860::8888",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls() {
        assert!(parse("https://hooks.example.com/lodge").is_ok());
        assert!(parse("http://hooks.example.com:8080/x?y=1").is_ok());
        for bad in [
            "",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pw@example.com/",
            "not a url",
            "https://example.com/#frag",
            "http://127.0.0.1:0/x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/",
            "http://10.0.0.1/",
            "http://[::1]:8080/",
            "http://localhost/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let u = parse(url).unwrap();
            assert!(resolve(&u, false).await.is_err(), "{url}");
            assert!(resolve(&u, true).await.is_ok(), "{url} allowed");
        }
        let u = parse("http://93.184.216.34/").unwrap();
        assert_eq!(
            resolve(&u, false).await.unwrap(),
            vec!["93.184.216.34:80".parse().unwrap()]
        );
    }
}
