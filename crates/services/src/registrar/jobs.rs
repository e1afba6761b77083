//! The registry's side of Lodge's domains: the registrar jobs after payment (idempotent), the
//! poll queue, the daily sync, and what customers and staff do to a registered domain
//! (nameservers, lock, transfer code, availability).
//!
//! States: a paid registration is `pending_registration` with stage `registering` while the
//! registry is asked, then `active` with the registry's dates; a transfer is
//! `pending_transfer` with stage `transferring` until the poll queue says approved
//! (`active`) or rejected (`cancelled`, and its paid line goes back to credit).

use std::sync::Arc;

use lodge_core::{DomainEvent, DomainId, DomainName, DomainStatus, RefundTo};
use lodge_store::hosting::{self, DomainRow};
use lodge_store::{billing, orgs, registry, StoreError};

use super::{Availability, Contact, Outcome, Registration, RegistryInfo};
use crate::refunds::{RefundRequest, Refunded};
use crate::{Lodge, Result, ServiceError};

/// Stage of a registration the registry was asked for (its answer may have been lost).
pub const REGISTERING: &str = "registering";
/// Stage of a transfer the registry is deciding.
pub const TRANSFERRING: &str = "transferring";
/// Domains read back per sync batch.
pub const SYNC_BATCH: i64 = 100;
/// Pending domains read back from their registry per scheduler pass.
const RECONCILE_BATCH: i64 = 20;
/// Poll messages handled per queue and scheduler pass.
const POLL_BATCH: usize = 100;

/// What a registry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegistryPass {
    /// Poll messages handled and acknowledged.
    pub messages: usize,
    /// Transfers that finished (approved or rejected).
    pub transfers: usize,
    /// Registrations the registry had left pending (1001) and has now decided.
    pub registrations: usize,
    /// Domains read back from their registry.
    pub synced: usize,
    pub failed: usize,
}

/// What a pending action's result finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    Registration,
    Transfer,
}

/// Availability and the first year's price of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCheck {
    pub name: String,
    /// `available`, `unavailable` or `unknown`.
    pub availability: &'static str,
    /// Registration price for a year, in minor units (`None`: the TLD is not sold).
    pub register_minor: Option<i64>,
    pub transfer_minor: Option<i64>,
    pub renew_minor: Option<i64>,
    pub currency: lodge_core::Currency,
}

fn registrar_err(e: super::RegistrarError) -> ServiceError {
    ServiceError::Internal(format!("registrar: {e}"))
}

fn parse_name(d: &DomainRow) -> Result<DomainName> {
    DomainName::parse(&d.name).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// A registry contact handle for an organization: `L` and 15 hex digits of a digest of its
/// id (RFC 5733 ids are 3 to 16 characters). Not the id's own first digits: those of a
/// time-ordered UUID are its creation time, so organizations made in the same
/// millisecond shared a handle, and the second's domains were registered to the first's
/// contact (found by review of the EPP client).
fn handle_of(org: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("lodge registry contact\0{org}").as_bytes());
    let hex: String = hex::encode(digest).chars().take(15).collect();
    format!("L{hex}")
}

impl Lodge {
    fn registrar(&self) -> Result<std::sync::Arc<dyn super::Registrar>> {
        self.registrar
            .clone()
            .ok_or_else(|| ServiceError::Internal("no registrar is configured".into()))
    }

    /// The registrar serving a domain.
    /// - Not yet at any registry (a pending registration or transfer whose job has not asked
    ///   one): the one its TLD goes to now; its job records it on the domain when it asks
    ///   ([`Lodge::record_registrar`]).
    /// - Otherwise the one recorded on it, not the one its TLD goes to now: a domain
    ///   registered by hand stays the manual registrar's when its TLD is later given to a
    ///   registry, so its renewals, nameservers, lock and code are staff's tasks, not
    ///   commands to a registry that knows nothing of it (they went by TLD before).
    /// - Recorded `manual` where its TLD now goes to a registry that shows it as Lodge's (an
    ///   installation that routed the TLD after the order: its job then asked the registry
    ///   by TLD, and the domain kept `manual`): that registry, recorded from then on. A
    ///   pending one already asked (its stage set) goes by TLD too.
    /// - Recorded with a registrar no longer configured (renamed or removed in lodge.toml):
    ///   an error, so its jobs retry and say why, until the name is configured again.
    /// - Recorded before names were kept per domain (the aggregate's name) or ordered with
    ///   no registrar (`none`): by TLD.
    pub(crate) async fn registrar_of(&self, d: &DomainRow) -> Result<Arc<dyn super::Registrar>> {
        let registrar = self.registrar()?;
        let name = parse_name(d)?;
        let recorded = d.registrar.as_str();
        let pending = matches!(
            d.status,
            DomainStatus::PendingRegistration | DomainStatus::PendingTransfer
        );
        if (pending && (d.registry_stage.is_none() || recorded == "manual"))
            || recorded == "none"
            || recorded == registrar.name()
            || recorded == registrar.name_for(&name)
        {
            return Ok(registrar);
        }
        if recorded != "manual" {
            if let Some(part) = registrar.part_named(recorded) {
                return Ok(part);
            }
            return Err(ServiceError::Internal(format!(
                "{name} is recorded with registrar {recorded:?}, which is not configured \
                 (renamed or removed in lodge.toml?): its registry work waits until it is"
            )));
        }
        if registrar.has_registry(&name) && d.status == DomainStatus::Active {
            // A registry that does not answer is an error (the job retries), not "not
            // Lodge's": that turned an EPP renewal into a staff task (found by review).
            let info = registrar.info(&name).await.map_err(registrar_err)?;
            if info.is_some_and(|i| i.ours) {
                self.record_registrar(d.id, registrar.name_for(&name))
                    .await?;
                return Ok(registrar);
            }
        }
        Ok(Arc::new(super::ManualRegistrar))
    }

    /// Records on a domain the registrar that serves it (when its job asks one).
    pub(crate) async fn record_registrar(&self, id: DomainId, registrar: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        registry::set_registrar(&mut tx, id, registrar, self.now_us()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Availability (the registrar's `check`) and price (the TLD table) of a name, before
    /// ordering. A name that does not parse is a field error.
    pub async fn check(&self, name: &str) -> Result<NameCheck> {
        let parsed = DomainName::parse(name.trim()).map_err(|e| {
            ServiceError::field_coded("name", crate::FieldCode::InvalidDomain, e.to_string())
        })?;
        let catalog = self.catalog().await?;
        let tld = crate::orders::validate::tld_for(&catalog, &parsed);
        let price = tld.and_then(|t| t.price_for_years(1));
        // A name inside a domain of a TLD sold here (`blog.example.com`) is not one an
        // order may register: not available, and not asked of the registry (found by the
        // domains audit: it was said available, and the order then refused).
        let inside_a_domain = match tld {
            Some(t) => parsed.split_registrable(&t.row.tld).is_none(),
            None => crate::orders::validate::under_sold_tld(&catalog, &parsed).is_some(),
        };
        // A name a domain object in Lodge holds (any organization's) is not available,
        // whatever the registrar says (the manual one knows nothing): ordering it is
        // refused (found by the /v1 audit: it was said "unknown").
        let held =
            hosting::live_domain_for_name(&mut self.store.read_conn().await?, parsed.as_str())
                .await?;
        let availability = match &self.registrar {
            // A name no registry registers (an emoji, reserved hyphens): not asked.
            _ if parsed.registration_problem().is_some() || inside_a_domain => "unavailable",
            _ if held => "unavailable",
            None => "unknown",
            Some(r) => match r.check(&parsed).await {
                Ok(Availability::Available) => "available",
                Ok(Availability::Unavailable) => "unavailable",
                Ok(Availability::Unknown) => "unknown",
                Err(e) => {
                    tracing::warn!(error = %e, "registrar availability check failed");
                    return Err(ServiceError::Unavailable(
                        crate::registrar::CHECK_UNAVAILABLE.into(),
                    ));
                }
            },
        };
        Ok(NameCheck {
            name: parsed.as_str().to_owned(),
            availability,
            register_minor: price.map(|p| p.register_minor),
            transfer_minor: price.map(|p| p.transfer_minor),
            renew_minor: price.map(|p| p.renew_minor),
            currency: catalog.currency,
        })
    }

    /// The registrant contact of an organization's domains.
    async fn registrant(&self, d: &DomainRow) -> Result<Contact> {
        let org = orgs::by_id(self.store.reader(), d.organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let email = registry::owner_email(self.store.reader(), d.organization_id)
            .await?
            .unwrap_or_else(|| format!("hostmaster@{}", d.name));
        let or = |s: &str, default: &str| {
            if s.trim().is_empty() {
                default.to_owned()
            } else {
                s.trim().to_owned()
            }
        };
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Ok(Contact {
            handle: handle_of(&d.organization_id.to_string()),
            name: or(&org.name, "Registrant"),
            organization: some(&org.company_name),
            email,
            street: or(&org.address_1, "-"),
            city: or(&org.city, "-"),
            state: some(&org.state),
            postcode: some(&org.postcode),
            country: or(&org.country, "US").to_ascii_uppercase(),
            phone: some(&org.phone),
        })
    }

    async fn set_stage(
        &self,
        id: DomainId,
        stage: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        registry::set_stage(&mut tx, id, stage, error, self.now_us()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn note_error(&self, id: DomainId, error: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        registry::set_error(&mut tx, id, Some(error), self.now_us()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Makes the domain active with the registry's dates and nameservers; `locked`: whether
    /// the registry holds it locked against transfers (`clientTransferProhibited`), when read
    /// (the column's default says locked: a new registration showed `is_locked: true` until
    /// the daily read-back while the registry held no lock, found by the domains audit).
    async fn activate(
        &self,
        id: DomainId,
        registration: &str,
        expiration: &str,
        ns: &[String],
        locked: Option<bool>,
    ) -> Result<()> {
        let ns = serde_json::to_string(ns).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut tx = self.store.begin().await?;
        hosting::activate_domain(
            &mut tx,
            id,
            registration,
            expiration,
            &ns,
            self.now_us(),
            false,
        )
        .await?;
        if let Some(locked) = locked {
            registry::set_locked(&mut tx, id, locked, self.now_us()).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The job of a paid registration on a registrar with a registry. Idempotent: a
    /// registration already asked for (stage `registering`, e.g. its answer was lost) is
    /// looked up with `info` first and adopted when the registry holds it for this
    /// registrar; only a name the registry does not have is created (again).
    pub(crate) async fn register_at_registry(&self, d: &DomainRow) -> Result<()> {
        let result = self.try_register(d).await;
        if let Err(ServiceError::Internal(msg)) = &result {
            // Shown to staff with the domain; the job keeps it too and retries.
            self.note_error(d.id, msg).await?;
        }
        result
    }

    async fn try_register(&self, d: &DomainRow) -> Result<()> {
        let registrar = self.registrar_of(d).await?;
        let name = parse_name(d)?;
        let ns: Vec<String> = serde_json::from_str(&d.nameservers).unwrap_or_default();
        if d.registry_stage.as_deref() == Some(REGISTERING) {
            match registrar.info(&name).await.map_err(registrar_err)? {
                // Still deciding (1001 answered before): the poll queue finishes it.
                Some(info) if info.ours && info.statuses.iter().any(|s| s == "pendingCreate") => {
                    // The lost answer's error no longer stands.
                    return self.set_stage(d.id, Some(REGISTERING), None).await;
                }
                Some(info) if info.ours => {
                    return self.adopt(d.id, &info).await;
                }
                // Taken by someone else meanwhile: it will not become the customer's, so the
                // domain is given up and its line goes back to credit, as a refused transfer
                // (found by the domains audit: retried until the job died, nothing refunded).
                Some(_) => {
                    let why =
                        format!("Registration refused: {name} is registered to another registrar");
                    return self.domain_failed(d, &why, "registrar").await.map(drop);
                }
                None => {}
            }
        } else {
            self.set_stage(d.id, Some(REGISTERING), None).await?;
        }
        let registrant = self.registrant(d).await?;
        let req = Registration {
            name: &name,
            years: 1,
            registrant: &registrant,
            nameservers: &ns,
        };
        match registrar.create(&req).await {
            Ok(Outcome::Completed {
                registration_date,
                expiration_date,
            }) => {
                let (ns, locked) = match registrar.info(&name).await {
                    Ok(Some(i)) => (i.nameservers.clone(), Some(i.locked())),
                    _ => (ns, None),
                };
                self.activate(d.id, &registration_date, &expiration_date, &ns, locked)
                    .await
            }
            Ok(Outcome::Pending) => Ok(()),
            // A create whose answer was lost, sent again, is refused (2302) as Lodge's own.
            Ok(Outcome::Refused(why)) => self.refused(d, registrar.as_ref(), &name, &why).await,
            Err(e) => Err(registrar_err(e)),
        }
    }

    /// A registration or transfer the registry refused for good: the domain is given up and
    /// its line goes back to credit ([`Lodge::domain_failed`]), unless the registry shows it
    /// as Lodge's after all (a retry after a lost answer, refused because the first request
    /// went through: found by review), which activates it.
    async fn refused(
        &self,
        d: &DomainRow,
        registrar: &dyn super::Registrar,
        name: &DomainName,
        why: &str,
    ) -> Result<()> {
        match registrar.info(name).await {
            Ok(Some(info)) if info.ours => self.adopt(d.id, &info).await,
            Ok(_) => self.domain_failed(d, why, "registrar").await.map(drop),
            Err(e) => {
                let msg = format!("registrar: {why}; and reading the domain back: {e}");
                self.note_error(d.id, &msg).await?;
                Err(ServiceError::Internal(msg))
            }
        }
    }

    async fn adopt(&self, id: DomainId, info: &RegistryInfo) -> Result<()> {
        let (Some(reg), Some(exp)) = (&info.registration_date, &info.expiration_date) else {
            return Err(ServiceError::Internal(
                "the registry reported no dates for the domain".into(),
            ));
        };
        self.activate(id, reg, exp, &info.nameservers, Some(info.locked()))
            .await
    }

    /// The job of a paid transfer on a registrar with a registry: the request (1001,
    /// pending) and stage `transferring`; the poll queue finishes it.
    pub(crate) async fn transfer_at_registry(&self, d: &DomainRow, epp_code: &str) -> Result<()> {
        let registrar = self.registrar_of(d).await?;
        let name = parse_name(d)?;
        self.set_stage(d.id, Some(TRANSFERRING), None).await?;
        match registrar.transfer(&name, epp_code).await {
            Ok(Outcome::Completed {
                registration_date,
                expiration_date,
            }) => {
                self.activate(d.id, &registration_date, &expiration_date, &[], None)
                    .await
            }
            Ok(Outcome::Pending) => Ok(()),
            // Cancelled with its line back to credit, as a transfer the losing registrar
            // rejects.
            Ok(Outcome::Refused(why)) => self.refused(d, registrar.as_ref(), &name, &why).await,
            Err(e) => {
                let msg = format!("registrar: {e}");
                self.note_error(d.id, &msg).await?;
                Err(ServiceError::Internal(msg))
            }
        }
    }

    /// The scheduler's registry step: keeps sessions alive, reads and acknowledges each
    /// registry's poll queue (finishing transfers), then syncs a batch of domains not read
    /// back today. Failures are logged and counted; the next pass goes on.
    pub async fn registry_pass(&self) -> Result<RegistryPass> {
        let mut pass = RegistryPass::default();
        let Some(registrar) = self.registrar.clone() else {
            return Ok(pass);
        };
        if let Err(e) = registrar.keepalive().await {
            tracing::warn!(error = %e, "EPP keep-alive failed; the next command reconnects");
        }
        for probe in registrar.queues() {
            for _ in 0..POLL_BATCH {
                let msg = match registrar.poll(&probe).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the registry's poll queue failed");
                        pass.failed += 1;
                        break;
                    }
                };
                if let Some((name, status)) = &msg.transfer {
                    match self.transfer_news(name, status).await {
                        Ok(true) => pass.transfers += 1,
                        Ok(false) => {}
                        Err(e) => {
                            // Not acknowledged: read again next pass.
                            tracing::warn!(error = %e, domain = %name, "handling a transfer message failed");
                            pass.failed += 1;
                            break;
                        }
                    }
                }
                if let Some((name, ok)) = &msg.pending_action {
                    match self.pending_news(name, *ok).await {
                        Ok(Some(PendingKind::Registration)) => pass.registrations += 1,
                        Ok(Some(PendingKind::Transfer)) => pass.transfers += 1,
                        Ok(None) => {}
                        Err(e) => {
                            // Not acknowledged: read again next pass.
                            tracing::warn!(error = %e, domain = %name, "handling a pending action's result failed");
                            pass.failed += 1;
                            break;
                        }
                    }
                }
                if let Err(e) = registrar.ack(&probe, &msg.id).await {
                    tracing::warn!(error = %e, "acknowledging a poll message failed");
                    pass.failed += 1;
                    break;
                }
                pass.messages += 1;
            }
        }
        match self.reconcile_pending(RECONCILE_BATCH).await {
            Ok(n) => pass.registrations += n,
            Err(e) => {
                tracing::warn!(error = %e, "reading pending domains back from the registry failed");
                pass.failed += 1;
            }
        }
        let (synced, failed) = self.sync_batch(SYNC_BATCH).await?;
        pass.synced = synced;
        pass.failed += failed;
        Ok(pass)
    }

    /// Domains left waiting for their registry for an hour (a registration answered 1001,
    /// a transfer requested) are read back with `info`, a few each pass: one the registry
    /// now shows as Lodge's, with its dates and nothing pending, is made active, whatever
    /// became of its poll message (lost, or acknowledged by another client of the same
    /// registrar account; found by review: nothing else would ever finish it). Returns how
    /// many it finished.
    async fn reconcile_pending(&self, limit: i64) -> Result<usize> {
        if self.registrar.is_none() {
            return Ok(0);
        }
        let before = self.now_us() - 3_600_000_000;
        let stale = registry::stale_pending(self.store.reader(), before, limit).await?;
        let mut finished = 0;
        for d in stale {
            let Ok(name) = parse_name(&d) else { continue };
            // One this pass cannot read goes to the back (its error for staff), so that 20
            // of them cannot hold every pass (found by review).
            let registrar = match self.registrar_of(&d).await {
                Ok(r) if r.has_registry(&name) => r,
                Ok(_) => {
                    self.note_error(d.id, "its registrar keeps no registry to read back")
                        .await?;
                    continue;
                }
                Err(e) => {
                    self.note_error(d.id, &e.to_string()).await?;
                    continue;
                }
            };
            let info = match registrar.info(&name).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, domain = %d.name, "reading a pending domain back failed");
                    continue;
                }
            };
            let done = info.as_ref().is_some_and(|i| {
                i.ours
                    && i.registration_date.is_some()
                    && i.expiration_date.is_some()
                    && !i
                        .statuses
                        .iter()
                        .any(|s| s == "pendingCreate" || s == "pendingTransfer")
            });
            match info {
                Some(info) if done => {
                    self.adopt(d.id, &info).await?;
                    finished += 1;
                }
                // Still pending: looked at again after the others.
                _ => {
                    let mut tx = self.store.begin().await?;
                    registry::set_error(&mut tx, d.id, d.registry_error.as_deref(), self.now_us())
                        .await?;
                    tx.commit().await.map_err(StoreError::from)?;
                }
            }
        }
        Ok(finished)
    }

    /// A pending action's result from the poll queue (RFC 5731's `panData`): a registration
    /// the registry answered 1001 becomes active with the registry's dates, or, refused, is
    /// cancelled with its line back to credit; a transfer finishes as its `trnData` would
    /// have. `None` when no domain of Lodge's waited for it.
    async fn pending_news(&self, name: &str, ok: bool) -> Result<Option<PendingKind>> {
        let Some(d) = registry::awaiting_registry(self.store.reader(), name).await? else {
            return Ok(None);
        };
        if d.status == DomainStatus::PendingTransfer {
            let status = if ok {
                "serverApproved"
            } else {
                "serverRejected"
            };
            return Ok(self
                .transfer_news(name, status)
                .await?
                .then_some(PendingKind::Transfer));
        }
        if !ok {
            let reason = format!("The registry refused the registration of {name}");
            return Ok(self
                .domain_failed(&d, &reason, "registrar")
                .await?
                .then_some(PendingKind::Registration));
        }
        // The registry whose queue told it, by TLD (not the recorded name: one no longer
        // configured failed the read, and the message held the queue for good: found by
        // review).
        let registrar = self.registrar()?;
        let parsed = parse_name(&d)?;
        if !registrar.has_registry(&parsed) {
            self.news_unreadable(&d, "registration as done").await?;
            return Ok(None);
        }
        let info = registrar.info(&parsed).await.map_err(registrar_err)?;
        // What the registry says that Lodge cannot act on (the domain not there, or not
        // Lodge's, or without dates) is kept on the domain for staff and the message is
        // acknowledged: left unacknowledged it would hold every message behind it (found
        // by review). A failure to ask (the registry not answering) is retried next pass.
        match info.filter(|i| i.ours) {
            Some(info) if info.registration_date.is_some() && info.expiration_date.is_some() => {
                self.adopt(d.id, &info).await?;
                Ok(Some(PendingKind::Registration))
            }
            _ => {
                let why = format!(
                    "The registry reported the registration of {name} done, but does not show it \
                     as this registrar's with its dates: check it at the registry"
                );
                tracing::warn!(domain = %name, "{why}");
                self.note_error(d.id, &why).await?;
                Ok(None)
            }
        }
    }

    /// News of a domain whose TLD went since to a registrar without a registry: nothing to
    /// read it back from, so it is kept on the domain for staff, and the caller has the
    /// message acknowledged (left, it would hold the queue for good: found by review).
    async fn news_unreadable(&self, d: &DomainRow, what: &str) -> Result<()> {
        let why = format!(
            "The registry reported the {what} of {}, but its TLD no longer goes to a registry \
             Lodge can read: check it at the registry",
            d.name
        );
        self.note_error(d.id, &why).await
    }

    /// A transfer's news from the poll queue; `true` when it finished one of Lodge's.
    async fn transfer_news(&self, name: &str, status: &str) -> Result<bool> {
        let Some(d) = registry::transferring(self.store.reader(), name).await? else {
            return Ok(false);
        };
        match status {
            "clientApproved" | "serverApproved" => {
                // The registry whose queue told it, by TLD (see `pending_news`).
                let registrar = self.registrar()?;
                let parsed = parse_name(&d)?;
                if !registrar.has_registry(&parsed) {
                    self.news_unreadable(&d, "transfer as approved").await?;
                    return Ok(false);
                }
                let info = registrar
                    .info(&parsed)
                    .await
                    .map_err(registrar_err)?
                    .ok_or_else(|| {
                        ServiceError::Internal(format!("{name} is not at the registry"))
                    })?;
                // Approved, but the registry does not show it as Lodge's (news of another
                // registrar's transfer, or a queue that disagrees with the registry): not
                // taken as done, and left to staff (found by the domains audit: it was
                // activated, then found transferred away, the fee kept).
                if !info.ours {
                    tracing::warn!(domain = %name, "a transfer reported approved is not Lodge's at the registry");
                    self.note_error(
                        d.id,
                        "the registry reported the transfer approved, but shows the domain \
                         sponsored by another registrar: check it at the registry, then \
                         complete or fail it",
                    )
                    .await?;
                    return Ok(false);
                }
                self.adopt(d.id, &info).await?;
                Ok(true)
            }
            "clientRejected" | "serverRejected" | "clientCancelled" | "serverCancelled" => {
                self.transfer_failed(&d, status).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A transfer the registry refused: the domain is cancelled and the line that paid for
    /// it goes back to the organization's credit (once: with the cancellation, in one transaction).
    async fn transfer_failed(&self, d: &DomainRow, status: &str) -> Result<()> {
        let reason = format!(
            "Transfer of {} {}",
            d.name,
            match status {
                "clientCancelled" | "serverCancelled" => "cancelled",
                _ => "rejected by the current registrar",
            }
        );
        self.domain_failed(d, &reason, "registrar").await.map(drop)
    }

    /// A registration or transfer that will not happen: the domain is cancelled (its name is
    /// free again) with `reason` kept as its registry error, and the line that paid for it
    /// goes back to the organization's credit, in one transaction: the cancellation moves
    /// only a pending domain, so whichever path fails it (the registry, a retry, staff)
    /// refunds once, and a registration completed meanwhile is neither cancelled nor
    /// refunded. What is left to refund on the invoice bounds the refund (staff may have
    /// refunded part of it by hand). `false` when the domain was no longer pending.
    pub(crate) async fn domain_failed(
        &self,
        d: &DomainRow,
        reason: &str,
        actor: &str,
    ) -> Result<bool> {
        // The reason may carry a registry's words: one line of at most 500 characters, as
        // a refund's reason must be (the refund would otherwise be refused, and the domain
        // left pending).
        let reason: String = reason
            .chars()
            .map(|c| {
                if c.is_control() || crate::errors::is_bidi_control(c) {
                    ' '
                } else {
                    c
                }
            })
            .take(500)
            .collect();
        let reason = reason.as_str();
        let paid = registry::paid_line(self.store.reader(), d.id).await?;
        let now = self.now_us();
        let org = d.organization_id;
        let mut tx = self.store.begin().await?;
        // The money paths' lock order: the organization, then the invoice.
        billing::lock_credit(&mut tx, org)
            .await?
            .ok_or(ServiceError::NotFound)?;
        // Only from pending (the move is conditional on the status read): a registration
        // completed meanwhile stays active.
        let pending = hosting::domain(&mut *tx, d.id).await?.is_some_and(|d| {
            matches!(
                d.status,
                DomainStatus::PendingRegistration | DomainStatus::PendingTransfer
            )
        });
        let cancelled =
            pending && hosting::set_domain_status(&mut tx, d.id, DomainEvent::Cancel, now).await?;
        if !cancelled {
            tx.rollback().await.map_err(StoreError::from)?;
            return Ok(false);
        }
        registry::set_stage(&mut tx, d.id, None, Some(reason), now).await?;
        if let Some((invoice, amount)) = paid {
            let left = match billing::lock_invoice(&mut tx, invoice).await? {
                Some(inv) if inv.organization_id == org => {
                    crate::refunds::left_to_refund(&mut tx, &inv).await?
                }
                _ => 0,
            };
            let amount = amount.min(left);
            if amount > 0 {
                let req = RefundRequest {
                    amount_minor: amount,
                    to: RefundTo::Credit,
                    reason,
                    reference: None,
                };
                match self
                    .refund_locked(&mut tx, org, invoice, &req, actor, None)
                    .await?
                {
                    Refunded::Done(_) => {}
                    Refunded::Recorded(_) => {
                        // Only a cash refund with a reference is ever "recorded already".
                        return Err(ServiceError::Internal(
                            "a refund to credit was found recorded".into(),
                        ));
                    }
                }
            } else if left == 0 {
                tracing::warn!(domain = %d.id, invoice, "a failed domain's invoice has nothing left to refund");
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Reads back up to `limit` active domains not synced today: expiry, statuses,
    /// nameservers and lock from the registry. Returns (synced, failed).
    pub async fn sync_batch(&self, limit: i64) -> Result<(usize, usize)> {
        let Some(registrar) = self.registrar.clone() else {
            return Ok((0, 0));
        };
        if registrar.queues().is_empty() {
            return Ok((0, 0)); // no registry to read back (the manual registrar)
        }
        let today = self.today().to_string();
        let due = registry::due_for_sync(self.store.reader(), &today, limit).await?;
        let (mut synced, mut failed) = (0, 0);
        for d in due {
            let now = self.now_us();
            let Ok(name) = DomainName::parse(&d.name) else {
                continue;
            };
            // Read from its own registrar's registry (`registrar_of`): one registered by hand
            // before its TLD was given to a registry is not read there, where reading it
            // made it "transferred away" (found by the stack audit).
            let registrar = match self.registrar_of(&d).await {
                Ok(r) => r,
                Err(e) => {
                    let mut tx = self.store.begin().await?;
                    registry::mark_synced(&mut tx, d.id, &today, Some(&e.to_string()), now).await?;
                    tx.commit().await.map_err(StoreError::from)?;
                    failed += 1;
                    continue;
                }
            };
            if !registrar.has_registry(&name) {
                let mut tx = self.store.begin().await?;
                registry::mark_synced(&mut tx, d.id, &today, None, now).await?;
                tx.commit().await.map_err(StoreError::from)?;
                continue;
            }
            let read = registrar.info(&name).await;
            let mut tx = self.store.begin().await?;
            match read {
                Ok(Some(info)) if info.ours => {
                    let statuses = serde_json::to_string(&info.statuses)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    let ns = serde_json::to_string(&info.nameservers)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    registry::record(
                        &mut tx,
                        d.id,
                        &registry::Reported {
                            expiration_date: info.expiration_date.as_deref(),
                            statuses: &statuses,
                            nameservers: Some(&ns),
                            locked: info.locked(),
                            synced_on: &today,
                        },
                        now,
                    )
                    .await?;
                    synced += 1;
                }
                Ok(Some(_)) => {
                    // Another registrar sponsors it now: it left.
                    hosting::set_domain_status(&mut tx, d.id, DomainEvent::TransferAway, now)
                        .await?;
                    registry::mark_synced(
                        &mut tx,
                        d.id,
                        &today,
                        Some("sponsored by another registrar"),
                        now,
                    )
                    .await?;
                    synced += 1;
                }
                Ok(None) => {
                    registry::mark_synced(
                        &mut tx,
                        d.id,
                        &today,
                        Some("not found at the registry"),
                        now,
                    )
                    .await?;
                    failed += 1;
                }
                Err(e) => {
                    // Not marked: tried again by the next pass.
                    tracing::warn!(error = %e, domain = %d.name, "registry sync failed");
                    registry::set_error(&mut tx, d.id, Some(&format!("sync: {e}")), now).await?;
                    failed += 1;
                }
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok((synced, failed))
    }

    /// A change a registrar without a registry (`manual`) cannot make: a task on staff's
    /// list (`GET /v1/admin/registry-tasks`), superseding the domain's open one of its kind.
    async fn task_by_hand(
        &self,
        conn: &mut lodge_store::AnyConnection,
        domain: DomainId,
        kind: &str,
        detail: &str,
        now: i64,
    ) -> Result<()> {
        let source = format!("{kind}:{domain}:{now}:{:016x}", rand::random::<u64>());
        registry::add_task(conn, domain, kind, detail, &source, now).await?;
        tracing::info!(%domain, kind, "a registry change was left to staff");
        Ok(())
    }

    /// Staff's registry tasks: the open ones (or all), optionally of one domain.
    pub async fn registry_tasks(
        &self,
        open: bool,
        domain: Option<DomainId>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<registry::RegistryTaskRow>, i64)> {
        Ok(registry::tasks(self.store.reader(), open, domain, limit, offset).await?)
    }

    /// Staff did a task at the registry. A renewal's names the expiration date the registry
    /// now reports, recorded on the domain (it must be later than the one recorded).
    pub async fn finish_registry_task(
        &self,
        id: i64,
        staff: &str,
        expiration_date: Option<&str>,
    ) -> Result<registry::RegistryTaskRow> {
        let task = registry::task(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if task.done_at.is_some() {
            return Err(ServiceError::Conflict(format!(
                "This task is {} already.",
                task.outcome.as_deref().unwrap_or("done")
            )));
        }
        let expiration = match (task.kind.as_str(), expiration_date) {
            ("renew", None) => {
                return Err(ServiceError::field(
                    "expiration_date",
                    "The expiration date the registry now reports (YYYY-MM-DD) is required for a renewal.",
                ))
            }
            ("renew", Some(e)) => {
                let date: jiff::civil::Date = e.parse().map_err(|_| {
                    ServiceError::field("expiration_date", "A date, YYYY-MM-DD.")
                })?;
                Some(date)
            }
            (_, Some(_)) => {
                return Err(ServiceError::field(
                    "expiration_date",
                    "Only a renewal's task takes an expiration date.",
                ))
            }
            (_, None) => None,
        };
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        if let Some(date) = expiration {
            let d = hosting::domain(&mut *tx, task.domain_id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            let current = d
                .expiration_date
                .as_deref()
                .and_then(|c| c.parse::<jiff::civil::Date>().ok());
            if current.is_some_and(|c| date <= c) {
                return Err(ServiceError::field(
                    "expiration_date",
                    format!(
                        "Later than the expiration date recorded ({}): a renewal moves it on.",
                        d.expiration_date.unwrap_or_default()
                    ),
                ));
            }
            lodge_store::renewals::set_expiration(&mut *tx, task.domain_id, &date.to_string(), now)
                .await?;
        }
        if !registry::finish_task(&mut tx, id, staff, now).await? {
            return Err(ServiceError::Conflict(
                "This task was done meanwhile.".into(),
            ));
        }
        tx.commit().await.map_err(StoreError::from)?;
        registry::task(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// A customer's active domain, for a registry read (its auth code) or change.
    async fn registry_domain(
        &self,
        access: &crate::auth::Access,
        project: lodge_core::ProjectId,
        id: DomainId,
    ) -> Result<(DomainRow, DomainName, std::sync::Arc<dyn super::Registrar>)> {
        let d = self.project_domain(access, project, id).await?;
        if d.status != DomainStatus::Active {
            return Err(ServiceError::Conflict(format!(
                "the domain is {}; only an active domain is read or changed at its registry",
                d.status
            )));
        }
        let name = parse_name(&d)?;
        let registrar = self
            .registrar_of(&d)
            .await
            .map_err(|e| ServiceError::Conflict(format!("{e}; ask staff to change it by hand")))?;
        Ok((d, name, registrar))
    }

    /// Replaces a domain's nameservers at the registry, then in Lodge.
    pub async fn set_nameservers(
        &self,
        access: &crate::auth::Access,
        project: lodge_core::ProjectId,
        id: DomainId,
        nameservers: &[String],
    ) -> Result<DomainRow> {
        access.require_write()?;
        let clean = clean_nameservers(nameservers)?;
        let (d, name, registrar) = self.registry_domain(access, project, id).await?;
        registrar
            .set_nameservers(&name, &clean)
            .await
            .map_err(|e| {
                ServiceError::Conflict(format!("The registrar refused the change: {e}"))
            })?;
        let ns =
            serde_json::to_string(&clean).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        registry::set_nameservers(&mut tx, d.id, &ns, now).await?;
        if !registrar.has_registry(&name) {
            let detail = serde_json::json!({ "nameservers": clean }).to_string();
            self.task_by_hand(&mut tx, d.id, "nameservers", &detail, now)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.project_domain(access, project, id).await
    }

    /// Locks or unlocks a domain against transfer at the registry, then in Lodge.
    pub async fn set_domain_lock(
        &self,
        access: &crate::auth::Access,
        project: lodge_core::ProjectId,
        id: DomainId,
        locked: bool,
    ) -> Result<DomainRow> {
        access.require_write()?;
        let (d, name, registrar) = self.registry_domain(access, project, id).await?;
        registrar.set_lock(&name, locked).await.map_err(|e| {
            ServiceError::Conflict(format!("The registrar refused the change: {e}"))
        })?;
        let now = self.now_us();
        let mut tx = self.store.begin().await?;
        registry::set_locked(&mut tx, d.id, locked, now).await?;
        if !registrar.has_registry(&name) {
            let detail = serde_json::json!({ "locked": locked }).to_string();
            self.task_by_hand(&mut tx, d.id, "lock", &detail, now)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.project_domain(access, project, id).await
    }

    /// The transfer code of an active domain (to move it away), from the registry.
    pub async fn domain_auth_code(
        &self,
        access: &crate::auth::Access,
        project: lodge_core::ProjectId,
        id: DomainId,
    ) -> Result<Option<String>> {
        access.require_write()?;
        let (_, name, registrar) = self.registry_domain(access, project, id).await?;
        registrar
            .auth_code(&name)
            .await
            .map_err(|e| ServiceError::Conflict(format!("The registrar could not tell: {e}")))
    }

    /// Every domain with its registry state (staff).
    pub async fn all_domains(&self, limit: i64, offset: i64) -> Result<(Vec<DomainRow>, i64)> {
        Ok(registry::all_domains(self.store.reader(), limit, offset).await?)
    }
}

/// A domain's nameservers as given: each a host name (normalized, duplicates dropped), 2 to
/// 13 of them; a field error on `nameservers` otherwise.
pub(crate) fn clean_nameservers(nameservers: &[String]) -> Result<Vec<String>> {
    let mut clean: Vec<String> = Vec::new();
    let mut repeated = None;
    for n in nameservers {
        let host = DomainName::parse(n.trim())
            .map_err(|_| ServiceError::field("nameservers", format!("{n:?} is not a host name")))?;
        if clean.iter().any(|c| c == host.as_str()) {
            repeated.get_or_insert_with(|| host.as_str().to_owned());
        } else {
            clean.push(host.as_str().to_owned());
        }
    }
    // Two given, one of them twice (in another case): said so, not "give 2" (found by the
    // attacker audit).
    if let (Some(twice), true) = (&repeated, clean.len() < 2) {
        return Err(ServiceError::field(
            "nameservers",
            format!("Give at least 2 different nameservers: {twice} is given twice."),
        ));
    }
    if !(2..=13).contains(&clean.len()) {
        return Err(ServiceError::field(
            "nameservers",
            "Give between 2 and 13 nameservers.",
        ));
    }
    Ok(clean)
}

#[cfg(test)]
mod nameserver_tests {
    #[test]
    fn a_repeated_nameserver_is_named() {
        let e = super::clean_nameservers(&["ns1.example.net".into(), "NS1.example.net".into()])
            .unwrap_err();
        let e = format!("{e:?}");
        assert!(e.contains("ns1.example.net is given twice"), "{e}");
        let ok = super::clean_nameservers(&[
            "ns1.example.net".into(),
            "ns1.example.net".into(),
            "ns2.example.net".into(),
        ])
        .unwrap();
        assert_eq!(ok, ["ns1.example.net", "ns2.example.net"]);
    }
}

#[cfg(test)]
mod handle_tests {
    #[test]
    fn handles_are_short_distinct_and_stable() {
        // Two time-ordered ids of the same millisecond (their first 15 digits equal).
        let a = super::handle_of("01a24865-4129-7280-8000-000000000001");
        let b = super::handle_of("01a24865-4129-7280-8000-000000000002");
        assert_ne!(a, b);
        assert_eq!(a, super::handle_of("01a24865-4129-7280-8000-000000000001"));
        for h in [&a, &b] {
            assert_eq!(h.len(), 16, "{h}");
            assert!(h.starts_with('L') && h[1..].bytes().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
