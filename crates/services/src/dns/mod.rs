//! DNS zones on PowerDNS (off unless configured): a zone per hosted domain, created with
//! the account (SOA, NS from the server's ns1/ns2, A/AAAA for the apex and `www` at the
//! server's address, MX and `mail` when the plan has mailboxes), kept while the account is
//! suspended (its suspension page is still served), removed on termination. Every step is
//! idempotent: a zone that exists already is adopted when it is the same account's
//! (PowerDNS's `account` field, `lodge:<hosting id>`), and refused for good otherwise.
//!
//! Customers edit their zone's records through `/v1/…/domains/{id}/records`
//! ([`Lodge::domain_records`], [`Lodge::set_domain_records`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use lodge_core::{DomainId, HostingId, ProjectId};
use lodge_store::hosting::{self, HostingRow};
use lodge_store::servers::{self, ServerRow};

use crate::auth::Access;
use crate::{Lodge, Result, ServiceError, Validator};

pub mod pdns;
pub mod records;

pub use pdns::{DnsSettings, PowerDns};
pub use records::RecordSet;

/// The `account` of the zone Lodge makes for a hosting account.
pub fn zone_account(id: HostingId) -> String {
    format!("lodge:{id}")
}

fn dns_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("dns: {e}"))
}

/// The addresses of a server: its hostname when that is an address, else what it resolves
/// to.
async fn server_addresses(server: &ServerRow) -> Result<Vec<IpAddr>> {
    let host = server.hostname.trim().trim_end_matches('.');
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let found = tokio::net::lookup_host((host, 0)).await.map_err(|e| {
        dns_err(format!(
            "cannot resolve the server's hostname {host:?}: {e}"
        ))
    })?;
    let mut ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(dns_err(format!(
            "the server's hostname {host:?} has no address"
        )));
    }
    Ok(ips)
}

impl Lodge {
    /// The zone of a newly provisioned account: created, or adopted when it is already
    /// this account's. Nothing when DNS is off.
    pub(crate) async fn create_zone(&self, h: &HostingRow) -> Result<()> {
        let Some(dns) = self.dns.clone() else {
            return Ok(());
        };
        let Some(server_id) = h.server_id.as_deref() else {
            return Ok(());
        };
        let server_id: lodge_core::ServerId = server_id
            .parse()
            .map_err(|_| ServiceError::Internal("bad server id".into()))?;
        let server = servers::by_id(self.store.reader(), server_id)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("server {server_id} is gone")))?;
        let nameservers: Vec<String> = [&server.ns1, &server.ns2]
            .into_iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(pdns::absolute)
            .collect();
        let Some(primary) = nameservers.first().cloned() else {
            return Err(dns_err(format!(
                "{}the server {} has no nameservers (ns1, ns2) for its zones",
                crate::drivers::REFUSED,
                server.name
            )));
        };
        let mail = self
            .catalog()
            .await?
            .plan(h.plan_id)
            .is_some_and(|p| p.row.max_email_accounts > 0);
        let zone = pdns::absolute(&h.domain_name);
        let ttl = dns.settings().ttl;
        let ips = server_addresses(&server).await?;
        let v4: Vec<String> = ips
            .iter()
            .filter(|i| i.is_ipv4())
            .map(ToString::to_string)
            .collect();
        let v6: Vec<String> = ips
            .iter()
            .filter(|i| i.is_ipv6())
            .map(ToString::to_string)
            .collect();
        let mut rrsets = vec![pdns::RRset::new(
            &zone,
            "SOA",
            ttl,
            &[format!(
                "{primary} hostmaster.{zone} 1 10800 3600 604800 3600"
            )],
        )];
        let mut hosts = vec![zone.clone(), format!("www.{zone}")];
        if mail {
            hosts.push(format!("mail.{zone}"));
            rrsets.push(pdns::RRset::new(
                &zone,
                "MX",
                ttl,
                &[format!("10 mail.{zone}")],
            ));
        }
        for host in &hosts {
            if !v4.is_empty() {
                rrsets.push(pdns::RRset::new(host, "A", ttl, &v4));
            }
            if !v6.is_empty() {
                rrsets.push(pdns::RRset::new(host, "AAAA", ttl, &v6));
            }
        }
        let account = zone_account(h.id);
        match dns
            .create_zone(&zone, &account, &nameservers, &rrsets)
            .await
            .map_err(dns_err)?
        {
            pdns::Created::New => Ok(()),
            pdns::Created::Exists => {
                // A retry after a create whose answer was lost: the zone is ours. Anyone
                // else's is never taken over.
                let existing = dns.zone(&zone).await.map_err(dns_err)?;
                match existing {
                    Some(z) if z.account == account => Ok(()),
                    Some(z) => Err(dns_err(format!(
                        "{}the zone {zone} already exists on PowerDNS and belongs to {}",
                        crate::drivers::REFUSED,
                        if z.account.is_empty() {
                            "no Lodge account".to_owned()
                        } else {
                            format!("another account ({})", z.account)
                        }
                    ))),
                    // Deleted in between: the retry creates it.
                    None => Err(dns_err(format!("the zone {zone} vanished while created"))),
                }
            }
        }
    }

    /// Removes a terminated account's zone (only its own; a zone already gone is fine).
    pub(crate) async fn remove_zone(&self, h: &HostingRow) -> Result<()> {
        let Some(dns) = self.dns.clone() else {
            return Ok(());
        };
        let zone = pdns::absolute(&h.domain_name);
        match dns.zone(&zone).await.map_err(dns_err)? {
            Some(z) if z.account == zone_account(h.id) => {
                dns.delete_zone(&zone).await.map_err(dns_err)?;
                Ok(())
            }
            Some(z) => {
                tracing::info!(zone = %zone, account = %z.account, "the zone is not this account's: left in place");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The zone of a customer's domain, with the hosting account it belongs to: 409 when
    /// DNS is off or the domain has no zone here.
    async fn customer_zone(
        &self,
        access: &Access,
        project: ProjectId,
        id: DomainId,
    ) -> Result<(PowerDns, pdns::Zone)> {
        let d = self.project_domain(access, project, id).await?;
        let Some(dns) = self.dns.clone() else {
            return Err(ServiceError::Conflict(
                "DNS hosting is not enabled on this installation.".into(),
            ));
        };
        let no_zone = || {
            ServiceError::Conflict(format!(
                "{} has no DNS zone here: it is served by no active hosting account.",
                d.name
            ))
        };
        let zone = dns
            .zone(&d.name)
            .await
            .map_err(dns_err)?
            .ok_or_else(no_zone)?;
        // Only a zone of one of this organization's accounts.
        let owner = zone
            .account
            .strip_prefix("lodge:")
            .and_then(|h| h.parse::<HostingId>().ok());
        let Some(owner) = owner else {
            return Err(no_zone());
        };
        match hosting::hosting(self.store.reader(), owner).await? {
            Some(h) if h.organization_id == access.organization => Ok(((*dns).clone(), zone)),
            _ => Err(no_zone()),
        }
    }

    /// The records of a domain's zone a customer may edit, and its nameservers.
    pub async fn domain_records(
        &self,
        access: &Access,
        project: ProjectId,
        id: DomainId,
    ) -> Result<records::ZoneView> {
        let (_, zone) = self.customer_zone(access, project, id).await?;
        Ok(records::view(&zone))
    }

    /// Replaces the editable records of a domain's zone (NS and SOA stay Lodge's).
    pub async fn set_domain_records(
        &self,
        access: &Access,
        project: ProjectId,
        id: DomainId,
        input: &[records::RecordInput],
    ) -> Result<records::ZoneView> {
        access.require_write()?;
        let (dns, zone) = self.customer_zone(access, project, id).await?;
        let default_ttl = dns.settings().ttl;
        let mut v = Validator::new();
        let wanted = records::validate(&zone, input, default_ttl, &mut v);
        v.finish()?;
        let current: BTreeMap<(String, String), pdns::RRset> = zone
            .rrsets
            .iter()
            .filter(|r| records::EDITABLE.contains(&r.kind.as_str()))
            .map(|r| ((r.name.clone(), r.kind.clone()), r.clone()))
            .collect();
        let mut replace = vec![];
        for (key, set) in &wanted {
            let same = current.get(key).is_some_and(|c| {
                c.ttl == set.ttl && {
                    let mut a: Vec<&str> = c.records.iter().map(|r| r.content.as_str()).collect();
                    let mut b: Vec<&str> = set.records.iter().map(|r| r.content.as_str()).collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    a == b
                }
            });
            if !same {
                replace.push(set.clone());
            }
        }
        let delete: Vec<pdns::RRset> = current
            .iter()
            .filter(|(k, _)| !wanted.contains_key(*k))
            .map(|(_, r)| r.clone())
            .collect();
        dns.patch(&zone.name, replace, delete).await.map_err(|e| {
            ServiceError::Conflict(format!("The DNS server refused the change: {e}"))
        })?;
        let zone = dns
            .zone(&zone.name)
            .await
            .map_err(dns_err)?
            .ok_or_else(|| dns_err("the zone vanished"))?;
        Ok(records::view(&zone))
    }
}
