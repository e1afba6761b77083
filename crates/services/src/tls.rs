//! TLS certificates for hosted sites from an ACME CA (Let's Encrypt in production; off
//! unless configured). Issuance is a job (`issue_certificate`), queued when an account on an
//! nginx server becomes active and by the scheduler 30 days before a certificate expires:
//! the CA checks the domain and `www.` by HTTP-01 (the nginx driver serves the key
//! authorization) or DNS-01 (a TXT record in the account's PowerDNS zone), the order is
//! finalized with a CSR whose key Lodge made and sealed first, and the chain is installed into
//! the site's server block. The ACME account is shared by all nodes (sealed in the database);
//! each certificate's private key is sealed at rest too.
//!
//! Every step is idempotent: a retried job reuses the CA's order it began (valid: its
//! certificate is downloaded; ready: finalized with the stored key) or begins a new one, and
//! an installed certificate that is not due is only installed again, never re-issued.

use lodge_store::DAY_US;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use lodge_core::{HostingId, HostingStatus};
use lodge_store::certificates::{self, CertificateRow};
use lodge_store::hosting::{self, HostingRow};
use lodge_store::StoreError;

use crate::{Lodge, Result, ServiceError};

/// The job that issues (or renews) a hosting account's certificate.
pub const JOB_ISSUE_CERTIFICATE: &str = "issue_certificate";

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// A certificate is renewed when it expires within this many days.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// How the CA checks that Lodge controls a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A file under `/.well-known/acme-challenge/` served by the site's nginx.
    Http01,
    /// A TXT record `_acme-challenge.<name>` in the account's PowerDNS zone.
    Dns01,
}

/// The ACME CA (from `[acme]`).
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub directory_url: String,
    pub contact_email: Option<String>,
    pub challenge: Challenge,
    /// A root CA (PEM file) to trust for the ACME server instead of the public roots, e.g.
    /// pebble's test CA.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A certificate as the hosting detail shows it.
#[derive(Debug, Clone)]
pub struct CertificateStatus {
    /// `pending`, `issued`, `failed` or `removed`.
    pub status: String,
    pub not_after: Option<i64>,
    pub error: Option<String>,
}

fn tls_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("tls: {e}"))
}

/// The payload of an `issue_certificate` job.
#[derive(Debug, serde::Deserialize)]
struct IssuePayload {
    hosting_id: HostingId,
}

/// The dedupe key of the job for a certificate generation: one job per (account, current
/// certificate's `not_after`, 0 when none), so never two at once for the same renewal.
pub(crate) fn dedupe_key(id: HostingId, not_after: i64) -> String {
    format!("tls:{id}:{not_after}")
}

impl Lodge {
    /// Queues the first certificate of an account just provisioned on a server of
    /// `driver` (nothing when ACME is off or the driver serves no TLS).
    pub(crate) async fn enqueue_certificate(
        &self,
        conn: &mut lodge_store::AnyConnection,
        id: HostingId,
        driver: &str,
    ) -> Result<()> {
        if self.acme.is_none() || driver != "nginx" {
            return Ok(());
        }
        certificates::ensure(conn, &id.to_string(), self.now_us()).await?;
        self.enqueue(
            conn,
            JOB_ISSUE_CERTIFICATE,
            serde_json::json!({ "hosting_id": id }),
            &dedupe_key(id, 0),
        )
        .await?;
        Ok(())
    }

    /// The scheduler's part: queues `issue_certificate` for live accounts on nginx servers
    /// whose certificate expires within 30 days (by Lodge's clock) or that have none, and
    /// again (once a day) for those whose job ran out of attempts.
    /// Returns how many were queued.
    pub(crate) async fn enqueue_certificate_renewals(&self) -> Result<usize> {
        if self.acme.is_none() {
            return Ok(0);
        }
        let before = self.now_us() + RENEW_BEFORE_DAYS * DAY_US;
        let due = certificates::due(self.store.reader(), "nginx", before, 500).await?;
        let mut added = 0;
        for (id, not_after) in due {
            let Ok(hosting_id) = id.parse::<HostingId>() else {
                continue;
            };
            let mut tx = self.store.begin().await?;
            certificates::ensure(&mut tx, &id, self.now_us()).await?;
            if self
                .enqueue(
                    &mut tx,
                    JOB_ISSUE_CERTIFICATE,
                    serde_json::json!({ "hosting_id": hosting_id }),
                    // One a day at most: a generation whose job died is tried again
                    // the next day (never while one runs: `due` leaves those out).
                    &format!(
                        "{}:{}",
                        dedupe_key(hosting_id, not_after),
                        self.now_us().div_euclid(DAY_US)
                    ),
                )
                .await?
            {
                added += 1;
            }
            tx.commit().await.map_err(StoreError::from)?;
        }
        Ok(added)
    }

    /// The certificate of an account, for its detail (`None`: none was ever asked for).
    pub async fn certificate_status(&self, h: &HostingRow) -> Result<Option<CertificateStatus>> {
        Ok(
            certificates::by_hosting(self.store.reader(), &h.id.to_string())
                .await?
                .map(|c| CertificateStatus {
                    status: c.status,
                    not_after: c.not_after,
                    error: c.last_error,
                }),
        )
    }

    /// A terminated account's certificate: no renewals any more (its files left nginx
    /// with the site).
    pub(crate) async fn retire_certificate(
        &self,
        conn: &mut lodge_store::AnyConnection,
        id: HostingId,
    ) -> Result<()> {
        certificates::set_removed(conn, &id.to_string(), self.now_us()).await?;
        Ok(())
    }

    /// The worker's `issue_certificate` job. A failure is recorded on the certificate
    /// (shown on the hosting) and retried by the worker.
    pub(crate) async fn run_issue_certificate(
        &self,
        job: &lodge_store::jobs::JobRow,
    ) -> Result<()> {
        let p: IssuePayload = serde_json::from_str(&job.payload).map_err(|e| {
            ServiceError::Internal(format!("job {} has a bad payload: {e}", job.id))
        })?;
        match self.issue_certificate(p.hosting_id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = match &e {
                    ServiceError::Internal(m) => m.clone(),
                    other => other.to_string(),
                };
                let mut tx = self.store.begin().await?;
                certificates::set_failed(
                    &mut tx,
                    &p.hosting_id.to_string(),
                    &message,
                    self.now_us(),
                )
                .await?;
                tx.commit().await.map_err(StoreError::from)?;
                Err(e)
            }
        }
    }

    async fn issue_certificate(&self, id: HostingId) -> Result<()> {
        let Some(acme) = self.acme.clone() else {
            return Ok(()); // ACME turned off since
        };
        let Some(h) = hosting::hosting(self.store.reader(), id).await? else {
            return Ok(());
        };
        let suspended = match h.status {
            HostingStatus::Active => false,
            HostingStatus::Suspended => true,
            _ => return Ok(()), // not live (yet, or any more)
        };
        let Some((account, target)) = self.account(&h).await? else {
            return Ok(());
        };
        let hid = id.to_string();
        {
            let mut tx = self.store.begin().await?;
            certificates::ensure(&mut tx, &hid, self.now_us()).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        let row = certificates::by_hosting(self.store.reader(), &hid)
            .await?
            .ok_or_else(|| tls_err("the certificate row vanished"))?;
        if row.status == "removed" {
            return Ok(());
        }
        let driver_err = |e: crate::drivers::DriverError| tls_err(format!("{}: {e}", target.name));
        // Installed and not due: only make sure the files are there (a retry after the
        // install), never re-issue.
        if row.status == "issued"
            && row
                .not_after
                .is_some_and(|t| t > self.now_us() + RENEW_BEFORE_DAYS * DAY_US)
        {
            let installed = target
                .driver
                .has_certificate(&account)
                .await
                .map_err(driver_err)?;
            if installed.as_deref() != row.chain_pem.as_deref() {
                if let (Some(chain), Some(key)) = (&row.chain_pem, &row.private_key) {
                    let key = self.sealer.open(key)?;
                    target
                        .driver
                        .install_certificate(&account, chain, &key, suspended)
                        .await
                        .map_err(driver_err)?;
                }
            }
            return Ok(());
        }

        let acme_account = self.acme_account(&acme).await?;
        let names = vec![h.domain_name.clone(), format!("www.{}", h.domain_name)];
        let (mut order, key_pem) = self.order_for(&acme_account, &row, &names).await?;

        // Authorizations: answer each pending challenge.
        if matches!(order.state().status, OrderStatus::Pending) {
            let mut dns_records: Vec<(String, String)> = vec![];
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(tls_err)?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(tls_err(format!(
                            "the CA's authorization for {} is {other:?}",
                            authz.identifier()
                        )))
                    }
                }
                let kind = match acme.challenge {
                    Challenge::Http01 => ChallengeType::Http01,
                    Challenge::Dns01 => ChallengeType::Dns01,
                };
                let mut challenge = authz
                    .challenge(kind.clone())
                    .ok_or_else(|| tls_err(format!("the CA offers no {kind:?} challenge")))?;
                let key_authorization = challenge.key_authorization();
                match acme.challenge {
                    Challenge::Http01 => {
                        let served = target
                            .driver
                            .put_acme_challenge(
                                &account,
                                &challenge.token,
                                key_authorization.as_str(),
                            )
                            .await
                            .map_err(driver_err)?;
                        if !served {
                            return Err(tls_err(format!(
                                "the {} driver cannot answer HTTP-01 challenges",
                                target.name
                            )));
                        }
                    }
                    Challenge::Dns01 => {
                        let name = challenge.identifier().to_string();
                        dns_records.push((
                            format!("_acme-challenge.{name}"),
                            key_authorization.dns_value(),
                        ));
                    }
                }
                if acme.challenge == Challenge::Dns01 {
                    self.put_dns_challenges(&h, &dns_records).await?;
                }
                challenge.set_ready().await.map_err(tls_err)?;
            }
            let polled = order.poll_ready(&retry_policy()).await;
            if acme.challenge == Challenge::Dns01 {
                self.remove_dns_challenges(&h, &dns_records).await;
            }
            let _ = target.driver.remove_acme_challenges(&account).await;
            let status = polled.map_err(|e| {
                tls_err(format!("the CA did not validate {}: {e}", names.join(", ")))
            })?;
            if status != OrderStatus::Ready {
                return Err(tls_err(format!(
                    "the CA did not validate {}: the order is {}{}",
                    names.join(", "),
                    format!("{status:?}").to_lowercase(),
                    order_problem(&mut order).await
                )));
            }
        }
        if matches!(order.state().status, OrderStatus::Ready) {
            let csr = csr(&key_pem, &names)?;
            order.finalize_csr(&csr).await.map_err(tls_err)?;
        }
        if matches!(order.state().status, OrderStatus::Invalid) {
            return Err(tls_err(format!(
                "the CA's order is invalid{}",
                order_problem(&mut order).await
            )));
        }
        let chain = order
            .poll_certificate(&retry_policy())
            .await
            .map_err(tls_err)?;
        let not_after = not_after_us(&chain)?;
        target
            .driver
            .install_certificate(&account, &chain, &key_pem, suspended)
            .await
            .map_err(driver_err)?;
        let sealed = self.sealer.seal(&key_pem)?;
        let mut tx = self.store.begin().await?;
        certificates::set_issued(&mut tx, &hid, &chain, &sealed, not_after, self.now_us()).await?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(domain = %h.domain_name, not_after, "certificate installed");
        Ok(())
    }

    /// The order to go on with: the one this account began (reused while pending, ready or
    /// valid, with its stored key), else a new one, its URL and sealed key stored first.
    async fn order_for(
        &self,
        account: &Account,
        row: &CertificateRow,
        names: &[String],
    ) -> Result<(Order, String)> {
        if let (Some(url), Some(sealed)) = (&row.order_url, &row.order_key) {
            match account.order(url.clone()).await {
                Ok(mut order) => {
                    if matches!(
                        order.state().status,
                        OrderStatus::Pending | OrderStatus::Ready | OrderStatus::Valid
                    ) {
                        return Ok((order, self.sealer.open(sealed)?));
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "the stored ACME order is gone: a new one");
                }
            }
        }
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(tls_err)?;
        let key = rcgen::KeyPair::generate().map_err(tls_err)?;
        let key_pem = key.serialize_pem();
        let sealed = self.sealer.seal(&key_pem)?;
        let mut tx = self.store.begin().await?;
        certificates::set_order(
            &mut tx,
            &row.hosting_id,
            Some(order.url()),
            Some(&sealed),
            self.now_us(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((order, key_pem))
    }

    /// The ACME account shared by all nodes: read from the database, or created (the CA
    /// and the insert are both idempotent; the first stored wins).
    async fn acme_account(&self, acme: &AcmeSettings) -> Result<Account> {
        let builder = || -> Result<instant_acme::AccountBuilder> {
            match &acme.ca_file {
                Some(path) => builder_with_roots(path),
                None => Account::builder().map_err(tls_err),
            }
        };
        if let Some(sealed) =
            certificates::acme_account(self.store.reader(), &acme.directory_url).await?
        {
            let credentials: AccountCredentials =
                serde_json::from_str(&self.sealer.open(&sealed)?).map_err(tls_err)?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(tls_err);
        }
        let contact: Vec<String> = acme
            .contact_email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (_, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                acme.directory_url.clone(),
                None,
            )
            .await
            .map_err(tls_err)?;
        let json = serde_json::to_string(&credentials).map_err(tls_err)?;
        let sealed = self.sealer.seal(&json)?;
        let mut tx = self.store.begin().await?;
        certificates::put_acme_account(&mut tx, &acme.directory_url, &sealed, self.now_us())
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        // Another node may have stored its account first: use the stored one.
        let stored = certificates::acme_account(self.store.reader(), &acme.directory_url)
            .await?
            .ok_or_else(|| tls_err("the ACME account was not stored"))?;
        let credentials: AccountCredentials =
            serde_json::from_str(&self.sealer.open(&stored)?).map_err(tls_err)?;
        builder()?
            .from_credentials(credentials)
            .await
            .map_err(tls_err)
    }

    /// DNS-01: the TXT records in the account's zone.
    async fn put_dns_challenges(&self, h: &HostingRow, records: &[(String, String)]) -> Result<()> {
        let Some(dns) = self.dns.clone() else {
            return Err(tls_err("DNS-01 needs DNS hosting on PowerDNS"));
        };
        let zone = crate::dns::pdns::absolute(&h.domain_name);
        let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (name, value) in records {
            by_name
                .entry(crate::dns::pdns::absolute(name))
                .or_default()
                .push(format!("\"{value}\""));
        }
        let sets = by_name
            .iter()
            .map(|(name, values)| crate::dns::pdns::RRset::new(name, "TXT", 60, values))
            .collect();
        dns.patch(&zone, sets, vec![])
            .await
            .map_err(|e| tls_err(format!("dns: {e}")))
    }

    async fn remove_dns_challenges(&self, h: &HostingRow, records: &[(String, String)]) {
        let Some(dns) = self.dns.clone() else {
            return;
        };
        let zone = crate::dns::pdns::absolute(&h.domain_name);
        let mut names: Vec<String> = records
            .iter()
            .map(|(n, _)| crate::dns::pdns::absolute(n))
            .collect();
        names.dedup();
        let sets = names
            .iter()
            .map(|n| crate::dns::pdns::RRset::new(n, "TXT", 60, &[]))
            .collect();
        if let Err(e) = dns.patch(&zone, vec![], sets).await {
            tracing::warn!(error = %e, "removing the DNS-01 records failed");
        }
    }
}

/// Polls every 250 ms growing to 2 s, for at most 90 s.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(90))
}

/// What the CA said about a failed order's authorizations (`: …`, or nothing).
async fn order_problem(order: &mut Order) -> String {
    let mut problems = vec![];
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        // Its state now, not as read before the validation.
        if authz.refresh().await.is_err() {
            continue;
        }
        for c in &authz.challenges {
            if let Some(e) = &c.error {
                problems.push(format!("{}: {e}", authz.identifier()));
            }
        }
    }
    if problems.is_empty() {
        String::new()
    } else {
        format!(": {}", problems.join("; "))
    }
}

/// A CSR for `names` (the first is the subject's CN) with the key in `key_pem`.
fn csr(key_pem: &str, names: &[String]) -> Result<Vec<u8>> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(tls_err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(tls_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(tls_err)?;
    Ok(csr.der().to_vec())
}

/// The `notAfter` of the first certificate of a PEM chain, unix microseconds.
pub fn not_after_us(chain_pem: &str) -> Result<i64> {
    let der = first_pem_der(chain_pem).ok_or_else(|| tls_err("the CA sent no certificate"))?;
    let t = der_not_after(&der).ok_or_else(|| tls_err("cannot read the certificate's expiry"))?;
    Ok(t.as_microsecond())
}

fn first_pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let rest = pem.get(start..)?;
    let end = rest.find("-----END CERTIFICATE-----")?;
    let b64: String = rest
        .get(..end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One DER element: (tag, contents, the rest after it).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (body, after) = rest.split_at(len);
    Some((tag, body, after))
}

/// Certificate → TBSCertificate → validity → notAfter.
fn der_not_after(cert: &[u8]) -> Option<jiff::Timestamp> {
    let (_, cert_body, _) = der_next(cert)?;
    let (_, tbs, _) = der_next(cert_body)?;
    let mut rest = tbs;
    let (tag, _, after) = der_next(rest)?;
    if tag == 0xa0 {
        rest = after; // version
    }
    let (_, _, after) = der_next(rest)?; // serial
    let (_, _, after) = der_next(after)?; // signature algorithm
    let (_, _, after) = der_next(after)?; // issuer
    let (_, validity, _) = der_next(after)?;
    let (_, _, after) = der_next(validity)?; // notBefore
    let (tag, time, _) = der_next(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ: 50..99 are 19xx.
            let yy: i32 = text.get(..2)?.parse().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            format!("{century}{text}")
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    let s = full.strip_suffix('Z')?;
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s.get(0..4)?,
        s.get(4..6)?,
        s.get(6..8)?,
        s.get(8..10)?,
        s.get(10..12)?,
        s.get(12..14)?
    );
    iso.parse().ok()
}

/// An ACME account builder whose HTTPS client trusts every certificate in the PEM file at
/// `path` (a private CA's bundle: its roots and intermediates, in any order), and only
/// those. instant-acme's own `builder_with_root` takes the file's first certificate alone.
fn builder_with_roots(path: &std::path::Path) -> Result<instant_acme::AccountBuilder> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let file_err =
        |e: &dyn std::fmt::Display| tls_err(format!("the ACME CA file {}: {e}", path.display()));
    let pem = std::fs::read(path).map_err(|e| file_err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| file_err(&e))?;
        roots.add(cert).map_err(|e| file_err(&e))?;
    }
    if roots.is_empty() {
        return Err(file_err(&"no PEM certificate in it"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Account::builder_with_http(Box::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acme_ca_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let pem = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            rcgen::CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap()
                .pem()
        };
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", pem("a.test"), pem("b.test"))).unwrap();
        assert!(builder_with_roots(&bundle).is_ok());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = builder_with_roots(&empty).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = builder_with_roots(&dir.path().join("missing.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn reads_the_expiry_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let t = not_after_us(&cert.pem()).unwrap();
        assert_eq!(
            jiff::Timestamp::from_microsecond(t).unwrap().to_string(),
            "2031-05-17T00:00:00Z"
        );
        assert!(not_after_us("no certificate").is_err());
    }

    #[test]
    fn a_csr_names_the_domain_and_www() {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = csr(
            &key.serialize_pem(),
            &["shop.test".to_owned(), "www.shop.test".to_owned()],
        )
        .unwrap();
        assert!(der
            .windows(b"www.shop.test".len())
            .any(|w| w == b"www.shop.test"));
    }
}
