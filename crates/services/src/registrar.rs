//! Domain registrars behind one narrow trait, so orders never depend on which one is
//! configured. The built-in `manual` registrar leaves the work to staff, who complete it
//! elsewhere and mark it done through the admin API.

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
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistrarError(pub String);

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
