//! What the write functions of a money path need besides their connection: the moment
//! (from the node's clock), the currency, the sealer, the registrar's name and the actor.
//! Nothing in it can be awaited, so a write function given a [`WriteCtx`] and a connection
//! can wait on nothing but that connection (what SQLite's batch writer requires).

use std::sync::Arc;

use lodge_core::Clock;

use crate::crypto::Sealer;
use crate::{Lodge, Settings};

/// What a unit of a batch carries from the node that submitted it, to make its
/// [`WriteCtx`] when it is written.
#[derive(Clone)]
pub struct WriteEnv {
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
    sealer: Sealer,
    /// The registrar (`None` without one).
    registrar: Option<Arc<dyn crate::registrar::Registrar>>,
    actor: Arc<str>,
}

impl std::fmt::Debug for WriteEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteEnv")
            .field("registrar", &self.registrar.as_ref().map(|r| r.name()))
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl WriteEnv {
    /// The context of a write on `lodge`'s behalf, read when it is written.
    pub fn ctx(&self) -> WriteCtx<'_> {
        WriteCtx {
            now: lodge_store::micros(self.clock.now()),
            today: self.clock.today(),
            currency: self.settings.currency.code(),
            sealer: &self.sealer,
            registrar: self.registrar.as_deref(),
            actor: &self.actor,
            policy: self.settings.policy,
            invoice_expiry_days: self.settings.invoice_expiry_days,
        }
    }

    /// Now by the node's clock (stored form).
    pub fn now_us(&self) -> i64 {
        lodge_store::micros(self.clock.now())
    }
}

/// The context of one write: read once, before it, so every row it writes carries the same
/// moment.
#[derive(Clone, Copy)]
pub struct WriteCtx<'a> {
    /// Now, in stored form (unix microseconds).
    pub now: i64,
    /// Today (UTC), by the same clock.
    pub today: jiff::civil::Date,
    /// The node's currency code.
    pub currency: &'a str,
    /// Seals the secrets a write stores.
    pub sealer: &'a Sealer,
    /// The registrar (`None` without one): the name of the one serving a domain is recorded
    /// on it ([`WriteCtx::registrar_for`]).
    pub registrar: Option<&'a dyn crate::registrar::Registrar>,
    /// Who writes (recorded in ledgers and histories).
    pub actor: &'a str,
    /// The renewal policy (what paying an overdue renewal lifts).
    pub policy: lodge_core::renewal::Policy,
    /// Days an unpaid first invoice, or a plan change's, is left to be paid.
    pub invoice_expiry_days: i64,
}

impl WriteCtx<'_> {
    /// The name recorded on a domain: of the registrar serving it (of several chosen by
    /// TLD, the one its TLD goes to: a domain registered by hand stays the manual
    /// registrar's when its TLD later goes to a registry), `"none"` without one.
    pub fn registrar_for(&self, name: &lodge_core::DomainName) -> &str {
        self.registrar.map_or("none", |r| r.name_for(name))
    }
}

impl std::fmt::Debug for WriteCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteCtx")
            .field("now", &self.now)
            .field("today", &self.today)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Lodge {
    /// What a batch unit submitted by `actor` carries to write on this node's behalf.
    pub fn write_env(&self, actor: &str) -> WriteEnv {
        WriteEnv {
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            sealer: self.sealer.clone(),
            registrar: self.registrar.clone(),
            actor: Arc::from(actor),
        }
    }

    /// The context of a write by `actor` now (outside a batch).
    pub fn write_ctx<'a>(&'a self, actor: &'a str) -> WriteCtx<'a> {
        WriteCtx {
            now: self.now_us(),
            today: self.today(),
            currency: self.settings.currency.code(),
            sealer: &self.sealer,
            registrar: self.registrar.as_deref(),
            actor,
            policy: self.settings.policy,
            invoice_expiry_days: self.settings.invoice_expiry_days,
        }
    }
}
