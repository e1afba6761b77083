//! Domain registrars behind one narrow trait, so orders never depend on which one is
//! configured. The built-in `manual` registrar leaves the work to staff, who complete it
//! elsewhere and mark it done through the admin API; [`epp::EppRegistrar`] speaks EPP
//! (RFC 5730–5734) to a registry; [`ByTld`] routes each name to the registrar of its TLD.
//!
//! The interface is the narrow, asynchronous one (initiate, poll, finish): a request may
//! answer `Pending`, and the registry's answer arrives later through [`Registrar::poll`].

pub mod config;
pub mod epp;
pub mod jobs;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use lodge_core::DomainName;

/// Whether a name can be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available,
    Unavailable,
    /// The registrar cannot tell (e.g. manual): the order proceeds and staff check.
    Unknown,
}

/// What a registration or transfer request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the domain is active with these dates (`YYYY-MM-DD`).
    Completed {
        registration_date: String,
        expiration_date: String,
    },
    /// Accepted but not finished (staff or the registry still has to act).
    Pending,
    /// Refused for good by the registry for what the customer gave or the domain's state
    /// (a transfer's wrong auth code, a transfer lock, a domain not eligible or not
    /// registered): asking again changes nothing.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistrarError(pub String);

/// What a caller is told when the registrar cannot say whether a name is available (it is
/// down, or refused Lodge's login): a 503 to retry, never "unavailable" nor a bad field.
pub const CHECK_UNAVAILABLE: &str =
    "The registrar could not check this name at the moment; try again later.";

/// The registrant of a new domain (from the organization's details).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// The registry handle (3–16 characters, RFC 5730 `clIDType`).
    pub handle: String,
    pub name: String,
    pub organization: Option<String>,
    pub email: String,
    pub street: String,
    pub city: String,
    pub state: Option<String>,
    pub postcode: Option<String>,
    /// ISO 3166 alpha-2.
    pub country: String,
    /// `+CC.NUMBER` (RFC 5733), when known.
    pub phone: Option<String>,
}

/// A registration to make.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    pub name: &'a DomainName,
    pub years: u32,
    pub registrant: &'a Contact,
    /// Host names; empty: the registrar's defaults.
    pub nameservers: &'a [String],
}

/// A domain as the registry reports it (`info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryInfo {
    /// Sponsored by this registrar's account (else another registrar holds it).
    pub ours: bool,
    /// `YYYY-MM-DD`.
    pub registration_date: Option<String>,
    pub expiration_date: Option<String>,
    /// EPP statuses (`ok`, `clientTransferProhibited`, `pendingTransfer`, …).
    pub statuses: Vec<String>,
    pub nameservers: Vec<String>,
    /// The transfer code, to the sponsoring registrar only.
    pub auth_info: Option<String>,
}

impl RegistryInfo {
    pub fn locked(&self) -> bool {
        self.statuses
            .iter()
            .any(|s| s == "clientTransferProhibited")
    }
}

/// A message the registry queued for this registrar (`poll`), acknowledged with its id
/// once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollMessage {
    pub id: String,
    pub text: String,
    /// For a transfer message: the domain and the transfer's status (`pending`,
    /// `clientApproved`, `clientRejected`, `clientCancelled`, `serverApproved`, …).
    pub transfer: Option<(String, String)>,
    /// For a pending action's result (RFC 5731 §3.3, `<domain:panData>`: a create or a
    /// transfer the registry decided later): the domain and whether it succeeded.
    pub pending_action: Option<(String, bool)>,
}

#[async_trait]
pub trait Registrar: Send + Sync + std::fmt::Debug {
    /// A short name stored on each domain (`manual`, `epp`, …).
    fn name(&self) -> &str;
    async fn check(&self, name: &DomainName) -> Result<Availability, RegistrarError>;
    async fn register(&self, name: &DomainName, years: u32) -> Result<Outcome, RegistrarError>;
    async fn transfer(&self, name: &DomainName, epp_code: &str) -> Result<Outcome, RegistrarError>;
    /// Renews a domain expiring on `expiration` (`YYYY-MM-DD`) for `years`. `Completed`
    /// carries the new expiration date. By default the work is left to staff (`Pending`),
    /// as with the manual registrar: the domain stays paid through its new period.
    async fn renew(
        &self,
        _name: &DomainName,
        _years: u32,
        _expiration: &str,
    ) -> Result<Outcome, RegistrarError> {
        Ok(Outcome::Pending)
    }

    /// The name of the registrar that serves `name` (itself, unless it routes).
    fn name_for(&self, _name: &DomainName) -> &str {
        self.name()
    }

    /// Whether this registrar keeps a registry Lodge can read back (`info`, `poll`).
    fn has_registry(&self, _name: &DomainName) -> bool {
        false
    }

    /// Of the registrars this one routes to, the one named `recorded` (the name stored on a
    /// domain: [`Registrar::name_for`] when it was ordered). `None` for a registrar that
    /// does not route, or when none of its parts has that name.
    fn part_named(&self, _recorded: &str) -> Option<Arc<dyn Registrar>> {
        None
    }

    /// Registers with a registrant and nameservers (by default: [`Registrar::register`]).
    async fn create(&self, req: &Registration<'_>) -> Result<Outcome, RegistrarError> {
        self.register(req.name, req.years).await
    }

    /// The registry's record of a domain; `None` when it does not exist there.
    async fn info(&self, _name: &DomainName) -> Result<Option<RegistryInfo>, RegistrarError> {
        Err(RegistrarError(format!(
            "{} keeps no registry to read",
            self.name()
        )))
    }

    /// The next queued message of `tld`'s registry (the one serving `probe`), if any.
    async fn poll(&self, _probe: &DomainName) -> Result<Option<PollMessage>, RegistrarError> {
        Ok(None)
    }

    /// Removes a handled message from the queue.
    async fn ack(&self, _probe: &DomainName, _id: &str) -> Result<(), RegistrarError> {
        Ok(())
    }

    /// Replaces the nameservers (`current` as Lodge knows them; the registry's are read).
    async fn set_nameservers(
        &self,
        _name: &DomainName,
        _nameservers: &[String],
    ) -> Result<(), RegistrarError> {
        Ok(())
    }

    /// Locks or unlocks the domain against transfer (`clientTransferProhibited`).
    async fn set_lock(&self, _name: &DomainName, _locked: bool) -> Result<(), RegistrarError> {
        Ok(())
    }

    /// The domain's transfer code (`authInfo`), when the registrar can tell it.
    async fn auth_code(&self, _name: &DomainName) -> Result<Option<String>, RegistrarError> {
        Ok(None)
    }

    /// Keeps idle sessions alive (EPP `hello`); called by the scheduler.
    async fn keepalive(&self) -> Result<(), RegistrarError> {
        Ok(())
    }

    /// Ends open sessions (EPP `<logout>`, RFC 5730 §2.9.1.2) when the node stops, so a
    /// registry capping its sessions does not count them until they time out (found by the
    /// domains audit: a stopped node's connections just ended).
    async fn close(&self) {}

    /// One name per message queue to read ([`Registrar::poll`]): none for a registrar
    /// without a registry.
    fn queues(&self) -> Vec<DomainName> {
        Vec::new()
    }
}

/// Several registrars at once, chosen by the name's TLD (the longest configured suffix:
/// `co.uk` before `uk`), with a fallback for the rest.
#[derive(Debug, Clone)]
pub struct ByTld {
    by_tld: BTreeMap<String, Arc<dyn Registrar>>,
    fallback: Arc<dyn Registrar>,
}

impl ByTld {
    pub fn new(fallback: Arc<dyn Registrar>) -> Self {
        ByTld {
            by_tld: BTreeMap::new(),
            fallback,
        }
    }

    /// Routes `tld` (without the leading dot, any case) to `registrar`.
    pub fn route(mut self, tld: &str, registrar: Arc<dyn Registrar>) -> Self {
        self.by_tld
            .insert(tld.trim_start_matches('.').to_ascii_lowercase(), registrar);
        self
    }

    /// The registrar serving `name`.
    pub fn pick(&self, name: &DomainName) -> &Arc<dyn Registrar> {
        let n = name.as_str();
        let mut suffix = n;
        while let Some((_, rest)) = suffix.split_once('.') {
            if let Some(r) = self.by_tld.get(rest) {
                return r;
            }
            suffix = rest;
        }
        &self.fallback
    }

    /// One name per distinct registrar (to poll each queue once): `probe.<tld>`.
    pub fn probes(&self) -> Vec<DomainName> {
        let mut seen: Vec<*const ()> = Vec::new();
        let mut out = Vec::new();
        for (tld, r) in &self.by_tld {
            let p = Arc::as_ptr(r).cast::<()>();
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            if let Ok(n) = DomainName::parse(&format!("probe.{tld}")) {
                out.push(n);
            }
        }
        out
    }
}

#[async_trait]
impl Registrar for ByTld {
    fn name(&self) -> &str {
        "by-tld"
    }
    fn name_for(&self, name: &DomainName) -> &str {
        self.pick(name).name_for(name)
    }
    fn has_registry(&self, name: &DomainName) -> bool {
        self.pick(name).has_registry(name)
    }
    fn part_named(&self, recorded: &str) -> Option<Arc<dyn Registrar>> {
        self.by_tld
            .values()
            .chain(std::iter::once(&self.fallback))
            .find_map(|r| {
                if r.name() == recorded {
                    Some(r.clone())
                } else {
                    r.part_named(recorded)
                }
            })
    }
    async fn check(&self, name: &DomainName) -> Result<Availability, RegistrarError> {
        self.pick(name).check(name).await
    }
    async fn register(&self, name: &DomainName, years: u32) -> Result<Outcome, RegistrarError> {
        self.pick(name).register(name, years).await
    }
    async fn transfer(&self, name: &DomainName, epp: &str) -> Result<Outcome, RegistrarError> {
        self.pick(name).transfer(name, epp).await
    }
    async fn renew(
        &self,
        name: &DomainName,
        years: u32,
        expiration: &str,
    ) -> Result<Outcome, RegistrarError> {
        self.pick(name).renew(name, years, expiration).await
    }
    async fn create(&self, req: &Registration<'_>) -> Result<Outcome, RegistrarError> {
        self.pick(req.name).create(req).await
    }
    async fn info(&self, name: &DomainName) -> Result<Option<RegistryInfo>, RegistrarError> {
        self.pick(name).info(name).await
    }
    async fn poll(&self, probe: &DomainName) -> Result<Option<PollMessage>, RegistrarError> {
        self.pick(probe).poll(probe).await
    }
    async fn ack(&self, probe: &DomainName, id: &str) -> Result<(), RegistrarError> {
        self.pick(probe).ack(probe, id).await
    }
    async fn set_nameservers(
        &self,
        name: &DomainName,
        nameservers: &[String],
    ) -> Result<(), RegistrarError> {
        self.pick(name).set_nameservers(name, nameservers).await
    }
    async fn set_lock(&self, name: &DomainName, locked: bool) -> Result<(), RegistrarError> {
        self.pick(name).set_lock(name, locked).await
    }
    async fn auth_code(&self, name: &DomainName) -> Result<Option<String>, RegistrarError> {
        self.pick(name).auth_code(name).await
    }
    fn queues(&self) -> Vec<DomainName> {
        self.probes()
            .into_iter()
            .filter(|p| !self.pick(p).queues().is_empty())
            .collect()
    }
    async fn keepalive(&self) -> Result<(), RegistrarError> {
        for p in self.probes() {
            self.pick(&p).keepalive().await?;
        }
        Ok(())
    }

    async fn close(&self) {
        for p in self.probes() {
            self.pick(&p).close().await;
        }
    }
}

/// Staff register and transfer by hand and mark the domain done (`POST
/// /v1/admin/domains/{id}/complete`).
#[derive(Debug, Default, Clone)]
pub struct ManualRegistrar;

#[async_trait]
impl Registrar for ManualRegistrar {
    fn name(&self) -> &str {
        "manual"
    }
    async fn check(&self, _name: &DomainName) -> Result<Availability, RegistrarError> {
        Ok(Availability::Unknown)
    }
    async fn register(&self, _name: &DomainName, _years: u32) -> Result<Outcome, RegistrarError> {
        Ok(Outcome::Pending)
    }
    async fn transfer(&self, _name: &DomainName, _epp: &str) -> Result<Outcome, RegistrarError> {
        Ok(Outcome::Pending)
    }
}
