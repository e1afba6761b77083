//! An EPP registrar (RFC 5730–5734) on instant-epp: one TLS session per registrar (an
//! optional client certificate), logged in on first use, kept alive with `hello`, and
//! reconnected when the connection breaks. Reads (`check`, `info`, `poll`) are retried
//! once on a fresh connection; writes are not: a write whose answer was lost is reconciled
//! by the caller with `info` before it is tried again (the job worker does so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use instant_epp::client::RustlsConnector;
use instant_epp::common::NoExtension;
use instant_epp::contact::{Address, ContactCreate, ContactUpdate, InfoType, PostalInfo, Voice};
use instant_epp::domain::transfer::TransferData;
use instant_epp::domain::update::{DomainAdd, DomainChangeInfo, DomainRemove};
use instant_epp::domain::{
    DomainAuthInfo, DomainCheck, DomainContact, DomainCreate, DomainInfo, DomainRenew,
    DomainTransfer, DomainUpdate, HostInfo, HostObj, NameServers, Period, PeriodLength, Status,
};
use instant_epp::host::{HostCheck, HostCreate};
use instant_epp::login::Login;
use instant_epp::poll::Ack;
use instant_epp::request::{Command, Transaction};
use instant_epp::response::{Response, ResultCode};
use instant_epp::{EppClient, Error as EppError};
use instant_xml::FromXml;
use lodge_core::DomainName;
use secrecy::{ExposeSecret, SecretString};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{
    Availability, Outcome, PollMessage, Registrar, RegistrarError, Registration, RegistryInfo,
};

/// How to reach and log in to one EPP server.
#[derive(Clone)]
pub struct EppSettings {
    /// The name stored on domains (e.g. `epp-verisign`).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub password: SecretString,
    /// PEM of the CA(s) to trust; `None`: the platform's trust store.
    pub ca_pem: Option<String>,
    /// PEM certificate chain and PKCS#8/PKCS#1/SEC1 key of the client certificate.
    pub client_cert_pem: Option<(String, SecretString)>,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Nameservers of a registration that names none.
    pub default_nameservers: Vec<String>,
}

impl std::fmt::Debug for EppSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EppSettings")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

type Client = EppClient<RustlsConnector>;

/// The EPP registrar.
pub struct EppRegistrar {
    settings: EppSettings,
    /// The TLS settings with the configured CA; `None`: the platform's verifier.
    tls: Option<Arc<ClientConfig>>,
    session: tokio::sync::Mutex<Option<Client>>,
    trid: AtomicU64,
    /// This client's own part of each `clTRID`: random per start, so that transaction ids
    /// are not repeated across restarts or nodes (RFC 5730: the client's id of the command;
    /// they began again at 1 at every start, the same on every node: found by the EPP
    /// audit).
    trid_tag: String,
    /// Until when no login is tried again after the registry refused one (an expired
    /// password, an address not on its list), and why: each command would otherwise log
    /// in afresh, a hundred refused logins a minute from the daily sync alone, which
    /// registries answer by locking the account (found by review of the EPP client).
    refused: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long no login is tried after the registry refused one.
const LOGIN_BACKOFF: Duration = Duration::from_secs(300);

impl std::fmt::Debug for EppRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EppRegistrar")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> RegistrarError {
    RegistrarError(format!("{what}: {e}"))
}

/// How an answer that could not be read (XML instant-epp does not parse) is described:
/// the poll reads such a message again without its data, to acknowledge it.
const UNREADABLE: &str = "the registry's answer could not be read: ";

/// A failed EPP exchange, with the result code when the registry answered.
fn describe(e: &EppError) -> (Option<ResultCode>, String) {
    match e {
        EppError::Xml(x) => (None, format!("{UNREADABLE}{x}")),
        EppError::Command(s) => (
            Some(s.result.code),
            format!(
                "the registry answered {} ({})",
                s.result.code as u16, s.result.message
            ),
        ),
        EppError::Io(io) => (None, format!("the connection failed: {io}")),
        EppError::Timeout => (None, "the registry did not answer in time".into()),
        other => (None, other.to_string()),
    }
}

/// Whether the session is unusable after this error (reconnect before the next command).
fn breaks_session(e: &EppError) -> bool {
    match e {
        EppError::Command(s) => matches!(
            s.result.code,
            ResultCode::CommandFailedServerClosingConnection
                | ResultCode::AuthenticationErrorServerClosingConnection
                | ResultCode::SessionLimitExceededServerClosingConnection
                | ResultCode::CommandUseError
        ),
        _ => true,
    }
}

/// The date (`YYYY-MM-DD`, UTC) of an EPP timestamp.
fn date_of(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.date_naive().format("%Y-%m-%d").to_string())
}

const EPP_XMLNS: &str = "urn:ietf:params:xml:ns:epp-1.0";
const DOMAIN_XMLNS: &str = "urn:ietf:params:xml:ns:domain-1.0";

/// `<poll op="req"/>` read leniently: the messages Lodge acts on are typed, any other
/// `<resData>` (another object's, an extension's: instant-epp's own `Poll` fails to parse
/// RFC 5731's `panData` and every type it does not know, which left the message at the
/// head of the queue for ever and every transfer behind it unfinished) is skipped, so the
/// message is still read and acknowledged.
#[derive(Debug)]
struct PollReq;

impl instant_xml::ToXml for PollReq {
    fn serialize<W: std::fmt::Write + ?Sized>(
        &self,
        _: Option<instant_xml::Id<'_>>,
        serializer: &mut instant_xml::Serializer<W>,
    ) -> Result<(), instant_xml::Error> {
        serializer.write_start("poll", EPP_XMLNS, None::<instant_xml::ser::Context<0>>)?;
        serializer.write_attr("op", EPP_XMLNS, &"req")?;
        serializer.end_empty()
    }
}

impl Transaction<NoExtension> for PollReq {}

impl Command for PollReq {
    type Response = Option<PollNews>;
    const COMMAND: &'static str = "poll";
}

/// The same request, reading nothing of `<resData>`: the fallback when a message's data
/// is of a type Lodge knows but does not parse (it is still acknowledged, and logged).
#[derive(Debug)]
struct PollBare;

impl instant_xml::ToXml for PollBare {
    fn serialize<W: std::fmt::Write + ?Sized>(
        &self,
        field: Option<instant_xml::Id<'_>>,
        serializer: &mut instant_xml::Serializer<W>,
    ) -> Result<(), instant_xml::Error> {
        PollReq.serialize(field, serializer)
    }
}

impl Transaction<NoExtension> for PollBare {}

impl Command for PollBare {
    type Response = Option<Nothing>;
    const COMMAND: &'static str = "poll";
}

/// Matches no element.
#[derive(Debug)]
struct Nothing;

impl<'xml> FromXml<'xml> for Nothing {
    fn matches(_: instant_xml::Id<'_>, _: Option<instant_xml::Id<'_>>) -> bool {
        false
    }

    fn deserialize<'cx>(
        _: &mut Self::Accumulator,
        _: &'static str,
        deserializer: &mut instant_xml::Deserializer<'cx, 'xml>,
    ) -> Result<(), instant_xml::Error> {
        deserializer.ignore()
    }

    type Accumulator = Option<Nothing>;
    const KIND: instant_xml::Kind = instant_xml::Kind::Element;
}

/// The poll messages Lodge acts on.
#[derive(Debug, FromXml)]
#[xml(forward)]
enum PollNews {
    /// `<domain:trnData>`: a transfer's news.
    Transfer(TransferData),
    /// `<domain:panData>`: a pending create's or transfer's result (RFC 5731 §3.3).
    Pending(PanData),
}

#[derive(Debug, FromXml)]
#[xml(rename = "panData", ns(DOMAIN_XMLNS))]
struct PanData {
    name: PanName,
}

#[derive(Debug, FromXml)]
#[xml(rename = "name", ns(DOMAIN_XMLNS))]
struct PanName {
    /// `1`/`true`: the action succeeded; `0`/`false`: it did not.
    #[xml(attribute, rename = "paResult")]
    result: String,
    #[xml(direct)]
    value: String,
}

impl EppRegistrar {
    /// Builds the TLS settings now (bad PEM is a configuration error); connects on first use.
    pub fn new(settings: EppSettings) -> Result<EppRegistrar, RegistrarError> {
        // Checked now, so a bad PEM is a configuration error rather than a failed job.
        identity(&settings)?;
        let Some(pem) = &settings.ca_pem else {
            return Ok(EppRegistrar {
                settings,
                tls: None,
                session: tokio::sync::Mutex::new(None),
                refused: std::sync::Mutex::new(None),
                trid: AtomicU64::new(1),
                trid_tag: trid_tag(),
            });
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS", e))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| err("the registrar's CA certificate", e))?)
                .map_err(|e| err("the registrar's CA certificate", e))?;
        }
        if roots.is_empty() {
            return Err(RegistrarError(
                "the registrar's CA file holds no certificate".into(),
            ));
        }
        let builder = builder.with_root_certificates(roots);
        let config = match identity(&settings)? {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| err("the client certificate", e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(EppRegistrar {
            settings,
            tls: Some(Arc::new(config)),
            session: tokio::sync::Mutex::new(None),
            refused: std::sync::Mutex::new(None),
            trid: AtomicU64::new(1),
            trid_tag: trid_tag(),
        })
    }

    /// `lodge-<client id>-<this start's tag>-<n>`: at most 6 + 16 + 1 + 10 + 1 + 20 = 54
    /// characters, within RFC 5730's 64.
    fn next_trid(&self) -> String {
        format!(
            "lodge-{}-{}-{}",
            self.settings.client_id,
            self.trid_tag,
            self.trid.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Whether a transfer of `name` is pending at the registry and Lodge asked for it.
    async fn pending_transfer_is_ours(&self, name: &DomainName, epp_code: &str) -> bool {
        let q = DomainTransfer::query(name.as_str(), epp_code);
        match self.transact(&q, true).await {
            Ok(r) => r.res_data().is_some_and(|d| {
                d.transfer_status == "pending"
                    && d.requester_id
                        .eq_ignore_ascii_case(&self.settings.client_id)
            }),
            Err(_) => false,
        }
    }

    /// Connects, reads the greeting and logs in.
    async fn connect(&self) -> Result<Client, RegistrarError> {
        let s = &self.settings;
        let builder = RustlsConnector::builder((s.host.clone(), s.port))
            .map_err(|e| err("the registrar's host name", e))?;
        let connector = match &self.tls {
            Some(config) => builder.build_with_config(config.clone()),
            None => {
                let builder = match identity(s)? {
                    Some((certs, key)) => builder.client_auth(certs, key),
                    None => builder,
                };
                builder.build().map_err(|e| err("TLS", e))?
            }
        };
        let mut client = EppClient::new(connector, s.name.clone(), s.timeout)
            .await
            .map_err(|e| err("connecting to the registry", describe(&e).1))?;
        let login = Login::new(&s.client_id, s.password.expose_secret(), None, None);
        let id = self.next_trid();
        if let Err(e) = client.transact(&login, &id).await {
            let (code, text) = describe(&e);
            let why = match code {
                Some(ResultCode::AuthenticationError)
                | Some(ResultCode::AuthenticationErrorServerClosingConnection) => format!(
                    "the registry refused the login of {:?}: {text}; check the client id and password",
                    s.client_id
                ),
                _ => format!("logging in to the registry: {text}"),
            };
            if code.is_some() {
                if let Ok(mut r) = self.refused.lock() {
                    *r = Some((std::time::Instant::now() + LOGIN_BACKOFF, why.clone()));
                }
            }
            return Err(RegistrarError(why));
        }
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
        }
        Ok(client)
    }

    /// Sends one command on the session (connecting and logging in first when needed).
    /// `retry`: a command safe to repeat is sent again once on a new connection when the
    /// old one broke.
    async fn transact<Cmd>(
        &self,
        cmd: &Cmd,
        retry: bool,
    ) -> Result<Response<Cmd::Response, NoExtension>, (Option<ResultCode>, RegistrarError)>
    where
        Cmd: Transaction<NoExtension> + Command + Sync,
    {
        let mut tries = if retry { 2 } else { 1 };
        loop {
            tries -= 1;
            let mut guard = self.session.lock().await;
            // Every wait on the registry is bounded: instant-epp bounds only the TLS
            // handshake, so a registry that stopped answering held the session (and every
            // availability check, registrar job and scheduler pass behind it) for ever
            // (found by review of the EPP client).
            let limit = self.settings.timeout;
            if guard.is_none() {
                let refused = self
                    .refused
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .filter(|(until, _)| std::time::Instant::now() < *until);
                if let Some((until, why)) = refused {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    return Err((
                        None,
                        RegistrarError(format!(
                            "{why} (not trying again for {} s)",
                            left.as_secs() + 1
                        )),
                    ));
                }
                let connected = tokio::time::timeout(limit * 2, self.connect())
                    .await
                    .map_err(|_| (None, timed_out("connecting and logging in", limit * 2)))?;
                *guard = Some(connected.map_err(|e| (None, e))?);
            }
            let Some(client) = guard.as_mut() else {
                return Err((None, RegistrarError("no EPP session".into())));
            };
            let id = self.next_trid();
            let answer = match tokio::time::timeout(limit, client.transact(cmd, &id)).await {
                Ok(a) => a,
                Err(_) => {
                    // The reply may still come on this connection: it is dropped.
                    *guard = None;
                    return Err((None, timed_out("a command", limit)));
                }
            };
            match answer {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let (code, text) = describe(&e);
                    if breaks_session(&e) {
                        *guard = None;
                        if tries > 0 && code.is_none() {
                            continue;
                        }
                    }
                    return Err((code, RegistrarError(text)));
                }
            }
        }
    }

    fn period(years: u32) -> Result<Period, RegistrarError> {
        let n = u8::try_from(years).map_err(|_| RegistrarError("period too long".into()))?;
        Ok(Period::Years(
            PeriodLength::new(n).map_err(|e| err("period", e))?,
        ))
    }

    /// Makes sure the registrant contact exists with the organization's details as they
    /// are now: created, or (2302: it exists) updated with them, so the registry's record
    /// (WHOIS, RDAP) follows the customer's address once given (found by the domains audit:
    /// a registrant created with placeholders before the customer filled in the address
    /// kept them at the registry for good).
    async fn ensure_contact(&self, c: &super::Contact) -> Result<(), RegistrarError> {
        let street = [c.street.as_str()];
        let address = || -> Result<Address<'_>, RegistrarError> {
            let country = c
                .country
                .parse()
                .map_err(|_| RegistrarError(format!("unknown country code {:?}", c.country)))?;
            Ok(Address::new(
                &street,
                &c.city,
                c.state.as_deref(),
                c.postcode.as_deref(),
                country,
            ))
        };
        // RFC 5733 §2.3: the `int` form is 7-bit ASCII only, `loc` any UTF-8: a registrant
        // named "Jürgen" or living in "Zürich" is sent in the local form (a schema-checking
        // registry refuses it as `int`; found by review of the EPP client).
        let ascii = [
            Some(c.name.as_str()),
            c.organization.as_deref(),
            Some(c.street.as_str()),
            Some(c.city.as_str()),
            c.state.as_deref(),
            c.postcode.as_deref(),
        ]
        .into_iter()
        .flatten()
        .all(|s| s.is_ascii());
        let postal = || -> Result<PostalInfo<'_>, RegistrarError> {
            Ok(PostalInfo::new(
                if ascii {
                    InfoType::International
                } else {
                    InfoType::Local
                },
                &c.name,
                c.organization.as_deref(),
                address()?,
            ))
        };
        let phone = c.phone.as_deref().and_then(|p| epp_phone(p, &c.country));
        // The contact's authInfo is never used by Lodge again: random, not derived from
        // the handle (which is derived from the organization; found by review: a
        // guessable registrant authInfo may authorize a transfer at some registries).
        let auth = new_auth_code(self.trid.load(Ordering::Relaxed));
        let create = ContactCreate::new(
            &c.handle,
            &c.email,
            postal()?,
            phone.as_deref().map(Voice::new),
            &auth,
        );
        match self.transact(&create, false).await {
            Ok(_) => Ok(()),
            Err((Some(ResultCode::ObjectExists), _)) => {
                // RFC 5733's update changes postal info, voice and email together (the
                // client library's `chg` takes all three): without a phone it is left as
                // created.
                let Some(phone) = phone.as_deref() else {
                    return Ok(());
                };
                let mut update = ContactUpdate::new(&c.handle);
                update.set_info(&c.email, postal()?, Voice::new(phone), &auth);
                self.transact(&update, false)
                    .await
                    .map(drop)
                    .map_err(|(_, e)| err("updating the registrant contact", e))
            }
            Err((_, e)) => Err(err("creating the registrant contact", e)),
        }
    }

    /// Makes sure each nameserver exists as a host object (RFC 5732) before a domain
    /// names it: registries refuse a `hostObj` they do not hold (2303). An external host
    /// is created without addresses; one under `domain` itself needs its glue addresses,
    /// which Lodge does not have, and is refused here with a clear error. A registry that
    /// does not implement host objects (2000/2101: it takes names as given) is left be.
    async fn ensure_hosts(
        &self,
        names: &[String],
        domain: &DomainName,
    ) -> Result<(), RegistrarError> {
        if names.is_empty() {
            return Ok(());
        }
        let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let list: Vec<&str> = lower.iter().map(String::as_str).collect();
        let checked = match self.transact(&HostCheck { hosts: &list }, true).await {
            Ok(r) => r,
            Err((
                Some(ResultCode::UnknownCommand | ResultCode::UnimplementedCommand)
                | Some(ResultCode::UnimplementedObjectService),
                _,
            )) => return Ok(()),
            Err((_, e)) => return Err(err("checking the nameservers' host objects", e)),
        };
        let missing: Vec<&str> = list
            .iter()
            .copied()
            .filter(|h| {
                checked.res_data().is_some_and(|d| {
                    d.list
                        .iter()
                        .any(|c| c.name.value.eq_ignore_ascii_case(h) && c.name.available)
                })
            })
            .collect();
        let suffix = format!(".{}", domain.as_str());
        for host in missing {
            if host.ends_with(&suffix) {
                return Err(RegistrarError(format!(
                    "the nameserver {host} is under {domain} itself: the registry needs its \
                     IP addresses (glue), which Lodge does not send; use nameservers outside \
                     {domain}, or create the host at the registry first"
                )));
            }
            match self.transact(&HostCreate::new(host, None), false).await {
                // 2302: created meanwhile (by another registrar, or an earlier try).
                Ok(_) | Err((Some(ResultCode::ObjectExists), _)) => {}
                Err((_, e)) => {
                    return Err(err(&format!("creating the host object {host}"), e));
                }
            }
        }
        Ok(())
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate chain and key, parsed from their PEM.
fn identity(s: &EppSettings) -> Result<Option<Identity>, RegistrarError> {
    let Some((chain, key)) = &s.client_cert_pem else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("the client certificate", e))?;
    if certs.is_empty() {
        return Err(RegistrarError(
            "the client certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key.expose_secret().as_bytes())
        .map_err(|e| err("the client certificate's key", e))?;
    Ok(Some((certs, key)))
}

#[async_trait]
impl Registrar for EppRegistrar {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn has_registry(&self, _name: &DomainName) -> bool {
        true
    }

    fn queues(&self) -> Vec<DomainName> {
        DomainName::parse("queue.invalid").into_iter().collect()
    }

    async fn check(&self, name: &DomainName) -> Result<Availability, RegistrarError> {
        let names = [name.as_str()];
        let r = self
            .transact(&DomainCheck { domains: &names }, true)
            .await
            .map_err(|(_, e)| err("check", e))?;
        let avail = r
            .res_data()
            .and_then(|d| {
                d.list
                    .iter()
                    .find(|c| c.name.value.eq_ignore_ascii_case(name.as_str()))
            })
            .map(|c| c.name.available);
        Ok(match avail {
            Some(true) => Availability::Available,
            Some(false) => Availability::Unavailable,
            None => Availability::Unknown,
        })
    }

    async fn register(&self, name: &DomainName, years: u32) -> Result<Outcome, RegistrarError> {
        Err(RegistrarError(format!(
            "an EPP registration of {name} for {years} year(s) needs a registrant contact"
        )))
    }

    async fn create(&self, req: &Registration<'_>) -> Result<Outcome, RegistrarError> {
        self.ensure_contact(req.registrant).await?;
        let ns_names: &[String] = if req.nameservers.is_empty() {
            &self.settings.default_nameservers
        } else {
            req.nameservers
        };
        self.ensure_hosts(ns_names, req.name).await?;
        let hosts: Vec<HostInfo<'_>> = ns_names
            .iter()
            .map(|h| {
                HostInfo::Obj(HostObj {
                    name: h.as_str().into(),
                })
            })
            .collect();
        let contacts = [
            DomainContact {
                contact_type: "admin".into(),
                id: req.registrant.handle.as_str().into(),
            },
            DomainContact {
                contact_type: "tech".into(),
                id: req.registrant.handle.as_str().into(),
            },
        ];
        let auth = new_auth_code(self.trid.fetch_add(1, Ordering::Relaxed));
        let create = DomainCreate::new(
            req.name.as_str(),
            Self::period(req.years)?,
            (!hosts.is_empty()).then_some(hosts.as_slice()),
            Some(&req.registrant.handle),
            &auth,
            Some(&contacts),
        );
        let r = match self.transact(&create, false).await {
            Ok(r) => r,
            // What asking again cannot change (RFC 5730 §3): the name is held (2302; the
            // job reads it back first, in case it is Lodge's own lost create). It was
            // retried until the job died, the customer charged and the domain left pending
            // (found by the domains audit). A policy refusal (2004, 2005, 2306, 2308) is
            // often the installation's own (the registrant's details, the nameservers):
            // left failing, with the registry's words, for staff to mend and retry or give
            // up (found by review: refunding it would drop every order of a TLD).
            Err((Some(ResultCode::ObjectExists), e)) => {
                let name = req.name;
                tracing::info!(domain = %name, error = %e, "the registry refused the registration");
                return Ok(Outcome::Refused(format!(
                    "Registration refused: {name} is registered already"
                )));
            }
            Err((_, e)) => return Err(err("create", e)),
        };
        // 1001: the registry decides later and says so in the poll queue (panData).
        if r.result.code == ResultCode::CommandCompletedSuccessfullyActionPending {
            return Ok(Outcome::Pending);
        }
        let data = r
            .res_data()
            .ok_or_else(|| RegistrarError("create: the registry sent no creData".into()))?;
        match (date_of(Some(data.created_at)), date_of(data.expiring_at)) {
            (Some(registration_date), Some(expiration_date)) => Ok(Outcome::Completed {
                registration_date,
                expiration_date,
            }),
            _ => Ok(Outcome::Pending),
        }
    }

    async fn transfer(&self, name: &DomainName, epp_code: &str) -> Result<Outcome, RegistrarError> {
        let t = DomainTransfer::new(name.as_str(), None, epp_code);
        match self.transact(&t, false).await {
            Ok(r) => {
                let status = r.res_data().map(|d| d.transfer_status.clone());
                match status.as_deref() {
                    Some("clientApproved" | "serverApproved") => {
                        let info = self.info(name).await?;
                        let info = info.ok_or_else(|| {
                            RegistrarError(format!("{name} is gone from the registry"))
                        })?;
                        // Both dates or none: a domain is never made active with an empty
                        // expiry (it was stored as "" and billed from nothing); without
                        // them the transfer is checked again later, as a pending one is.
                        match (info.registration_date, info.expiration_date) {
                            (Some(registration_date), Some(expiration_date)) => {
                                Ok(Outcome::Completed {
                                    registration_date,
                                    expiration_date,
                                })
                            }
                            _ => Ok(Outcome::Pending),
                        }
                    }
                    _ => Ok(Outcome::Pending),
                }
            }
            // A transfer is pending already: Lodge's own request whose answer was lost (a
            // retry), or another registrar's, which must not be taken for Lodge's (found by
            // review: the domain waited for a transfer that was never its own). The query
            // names the requester.
            // A registry may answer a transfer already pending with 2304 (its status
            // `pendingTransfer` prohibits the command) rather than 2300: the same query
            // tells whose it is (found by review).
            Err((
                Some(
                    code @ (ResultCode::ObjectPendingTransfer
                    | ResultCode::ObjectStatusProhibitsOperation),
                ),
                e,
            )) if code == ResultCode::ObjectPendingTransfer
                || self.pending_transfer_is_ours(name, epp_code).await =>
            {
                let q = DomainTransfer::query(name.as_str(), epp_code);
                let r = self
                    .transact(&q, true)
                    .await
                    .map_err(|(_, e2)| err("transfer", format!("{e}; query: {e2}")))?;
                let requester = r
                    .res_data()
                    .map(|d| d.requester_id.clone())
                    .unwrap_or_default();
                if requester.eq_ignore_ascii_case(&self.settings.client_id) {
                    Ok(Outcome::Pending)
                } else {
                    Err(RegistrarError(format!(
                        "transfer: another registrar ({requester}) has a transfer of {name} \
                         pending at the registry"
                    )))
                }
            }
            // What asking again cannot change (RFC 5730 §3): the domain is not transferred,
            // and the customer is told why (it was retried for hours with the same code,
            // then left pending with nothing refunded: found by the EPP audit).
            Err((Some(code), e))
                if matches!(
                    code,
                    ResultCode::InvalidAuthorizationInformation
                        | ResultCode::AuthorizationError
                        | ResultCode::ObjectIsNotEligibleForTransfer
                        | ResultCode::ObjectDoesNotExist
                        | ResultCode::ObjectStatusProhibitsOperation
                ) =>
            {
                let why = match code {
                    // Many registries answer a wrong code with 2201 rather than 2202 (found
                    // by the domains audit: it was sent again until the job died).
                    ResultCode::InvalidAuthorizationInformation
                    | ResultCode::AuthorizationError => "the transfer (EPP) code is wrong",
                    ResultCode::ObjectIsNotEligibleForTransfer => {
                        "the domain is not eligible for transfer yet (e.g. within 60 days of its registration or last transfer)"
                    }
                    ResultCode::ObjectDoesNotExist => "the domain is not registered",
                    _ => "the domain is locked against transfers at its registrar",
                };
                tracing::info!(domain = %name, error = %e, "the registry refused the transfer");
                Ok(Outcome::Refused(format!(
                    "Transfer of {name} refused: {why}"
                )))
            }
            Err((_, e)) => Err(err("transfer", e)),
        }
    }

    async fn renew(
        &self,
        name: &DomainName,
        years: u32,
        expiration: &str,
    ) -> Result<Outcome, RegistrarError> {
        // A renewal whose answer was lost has already moved the registry's expiry: read it
        // first, and renew only from the date Lodge knows (never twice for one period).
        let info = self
            .info(name)
            .await?
            .ok_or_else(|| RegistrarError(format!("{name} does not exist at the registry")))?;
        let current = info.expiration_date.clone().unwrap_or_default();
        if !expiration.is_empty() && current.as_str() > expiration {
            return Ok(Outcome::Completed {
                registration_date: info.registration_date.unwrap_or_default(),
                expiration_date: current,
            });
        }
        // Renewed from the date Lodge billed it from, as RFC 5731's curExpDate is meant to
        // be: a registry whose expiry is another refuses (2306), never renews twice.
        let from = if expiration.is_empty() {
            current.as_str()
        } else {
            expiration
        };
        let cur: chrono::NaiveDate = from.parse().map_err(|_| {
            RegistrarError(format!("the expiry to renew from, {from:?}, is not a date"))
        })?;
        let renew = DomainRenew::new(name.as_str(), cur, Self::period(years)?);
        let r = self
            .transact(&renew, false)
            .await
            .map_err(|(_, e)| err("renew", e))?;
        let expiration_date = r
            .res_data()
            .and_then(|d| date_of(d.expiring_at))
            .ok_or_else(|| RegistrarError("renew: the registry sent no new expiry".into()))?;
        Ok(Outcome::Completed {
            registration_date: info.registration_date.unwrap_or_default(),
            expiration_date,
        })
    }

    async fn info(&self, name: &DomainName) -> Result<Option<RegistryInfo>, RegistrarError> {
        let q = DomainInfo::new(name.as_str(), None);
        let r = match self.transact(&q, true).await {
            Ok(r) => r,
            Err((Some(ResultCode::ObjectDoesNotExist), _)) => return Ok(None),
            Err((_, e)) => return Err(err("info", e)),
        };
        let d = r
            .res_data()
            .ok_or_else(|| RegistrarError("info: the registry sent no infData".into()))?;
        let nameservers =
            d.ns.as_ref()
                .map(|ns| {
                    ns.ns
                        .iter()
                        .map(|h| match h {
                            HostInfo::Obj(o) => o.name.to_string(),
                            HostInfo::Attr(a) => a.name.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
        Ok(Some(RegistryInfo {
            // As the transfer's requester is compared: a registry may write the id in
            // another case than the configuration (every domain was then "not ours", and
            // the daily sync marked them all transferred away).
            ours: d.client_id.eq_ignore_ascii_case(&self.settings.client_id),
            registration_date: date_of(d.created_at),
            expiration_date: date_of(d.expiring_at),
            statuses: d
                .statuses
                .iter()
                .flatten()
                .map(|s| s.as_str().to_owned())
                .collect(),
            nameservers,
            auth_info: d.auth_info.as_ref().map(|a| a.password.to_string()),
        }))
    }

    async fn poll(&self, _probe: &DomainName) -> Result<Option<PollMessage>, RegistrarError> {
        let (code, queue, news) = match self.transact(&PollReq, true).await {
            Ok(r) => {
                let news = r.res_data.map(|d| d.into_inner()).and_then(|n| n);
                (r.result.code, r.message_queue, news)
            }
            Err((None, e)) if e.0.starts_with(UNREADABLE) => {
                // A message whose data could not be read: read it again without its data
                // so that it is acknowledged rather than blocking the queue. Only then: a
                // timeout or a broken connection is an error, and nothing is acknowledged
                // unread (found by review).
                let r = self
                    .transact(&PollBare, true)
                    .await
                    .map_err(|(_, e2)| err("poll", format!("{e}; then {e2}")))?;
                if let Some(q) = &r.message_queue {
                    tracing::warn!(message = %q.id, error = %e, "a poll message's data could not be read; it is acknowledged unread");
                }
                (r.result.code, r.message_queue, None)
            }
            Err((_, e)) => return Err(err("poll", e)),
        };
        if code == ResultCode::CommandCompletedSuccessfullyNoMessages {
            return Ok(None);
        }
        let Some(q) = queue else {
            return Ok(None);
        };
        let (transfer, pending_action) = match news {
            Some(PollNews::Transfer(t)) => (
                Some((t.name.to_ascii_lowercase(), t.transfer_status.clone())),
                None,
            ),
            Some(PollNews::Pending(p)) => {
                let ok = matches!(p.name.result.trim(), "1" | "true");
                (None, Some((p.name.value.trim().to_ascii_lowercase(), ok)))
            }
            None => (None, None),
        };
        Ok(Some(PollMessage {
            id: q.id.clone(),
            text: q
                .message
                .as_ref()
                .map(|m| m.text.clone())
                .unwrap_or_default(),
            transfer,
            pending_action,
        }))
    }

    async fn ack(&self, _probe: &DomainName, id: &str) -> Result<(), RegistrarError> {
        match self.transact(&Ack { message_id: id }, false).await {
            // Acknowledged before (a lost answer): nothing left to remove.
            Ok(_) | Err((Some(ResultCode::ObjectDoesNotExist), _)) => Ok(()),
            Err((_, e)) => Err(err("poll ack", e)),
        }
    }

    async fn set_nameservers(
        &self,
        name: &DomainName,
        nameservers: &[String],
    ) -> Result<(), RegistrarError> {
        let current = self
            .info(name)
            .await?
            .ok_or_else(|| RegistrarError(format!("{name} does not exist at the registry")))?
            .nameservers;
        let add: Vec<HostInfo<'_>> = nameservers
            .iter()
            .filter(|n| !current.iter().any(|c| c.eq_ignore_ascii_case(n)))
            .map(|h| {
                HostInfo::Obj(HostObj {
                    name: h.as_str().into(),
                })
            })
            .collect();
        let rem: Vec<HostInfo<'_>> = current
            .iter()
            .filter(|c| !nameservers.iter().any(|n| n.eq_ignore_ascii_case(c)))
            .map(|h| {
                HostInfo::Obj(HostObj {
                    name: h.as_str().into(),
                })
            })
            .collect();
        if add.is_empty() && rem.is_empty() {
            return Ok(());
        }
        let added: Vec<String> = nameservers
            .iter()
            .filter(|n| !current.iter().any(|c| c.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        self.ensure_hosts(&added, name).await?;
        let mut u = DomainUpdate::new(name.as_str());
        if !add.is_empty() {
            u.add(DomainAdd {
                ns: Some(NameServers { ns: add.into() }),
                contacts: None,
                statuses: None,
            });
        }
        if !rem.is_empty() {
            u.remove(DomainRemove {
                ns: Some(NameServers { ns: rem.into() }),
                contacts: None,
                statuses: None,
            });
        }
        self.transact(&u, false)
            .await
            .map(|_| ())
            .map_err(|(_, e)| err("update", e))
    }

    async fn set_lock(&self, name: &DomainName, locked: bool) -> Result<(), RegistrarError> {
        let info = self
            .info(name)
            .await?
            .ok_or_else(|| RegistrarError(format!("{name} does not exist at the registry")))?;
        if info.locked() == locked {
            return Ok(());
        }
        let statuses = [Status::ClientTransferProhibited];
        let mut u = DomainUpdate::new(name.as_str());
        if locked {
            u.add(DomainAdd {
                ns: None,
                contacts: None,
                statuses: Some(&statuses),
            });
        } else {
            u.remove(DomainRemove {
                ns: None,
                contacts: None,
                statuses: Some(&statuses),
            });
        }
        self.transact(&u, false)
            .await
            .map(|_| ())
            .map_err(|(_, e)| err("update", e))
    }

    async fn auth_code(&self, name: &DomainName) -> Result<Option<String>, RegistrarError> {
        let known = self
            .info(name)
            .await?
            .and_then(|i| i.auth_info)
            .filter(|a| !a.trim().is_empty());
        if known.is_some() {
            return Ok(known);
        }
        // A registry that keeps transfer codes secret (RFC 9154) answers an empty one: a
        // fresh code is set and told (found by review: the customer was shown "").
        let code = new_auth_code(self.trid.fetch_add(1, Ordering::Relaxed));
        let mut u = DomainUpdate::new(name.as_str());
        u.info(DomainChangeInfo {
            registrant: None,
            auth_info: Some(DomainAuthInfo::new(&code)),
        });
        self.transact(&u, false)
            .await
            .map_err(|(_, e)| err("update", e))?;
        Ok(Some(code))
    }

    async fn close(&self) {
        let Some(mut client) = self.session.lock().await.take() else {
            return;
        };
        let id = self.next_trid();
        let logout = instant_epp::logout::Logout;
        match tokio::time::timeout(self.settings.timeout, client.transact(&logout, &id)).await {
            Ok(Ok(_)) => {
                tracing::debug!(registrar = %self.settings.name, "logged out of the registry")
            }
            Ok(Err(e)) => {
                tracing::info!(registrar = %self.settings.name, error = %describe(&e).1, "logging out of the registry failed")
            }
            Err(_) => {
                tracing::info!(registrar = %self.settings.name, "logging out of the registry timed out")
            }
        }
    }

    async fn keepalive(&self) -> Result<(), RegistrarError> {
        let mut guard = self.session.lock().await;
        let Some(client) = guard.as_mut() else {
            return Ok(()); // no session to keep
        };
        match tokio::time::timeout(self.settings.timeout, client.hello()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *guard = None;
                Err(err("hello", describe(&e).1))
            }
            Err(_) => {
                *guard = None;
                Err(timed_out("hello", self.settings.timeout))
            }
        }
    }
}

/// A phone number as RFC 5733 writes it, `+<country code>.<number>` (`+44.2079460958`),
/// read with the contact's country for a number written without its code; `None` when it
/// is no number (left out: a registry refuses the contact over a malformed one). Lodge
/// stores `+442079460958`, which schema-checking registries refused (2001; found by
/// review of the EPP client).
fn epp_phone(raw: &str, country: &str) -> Option<String> {
    let region = country.parse::<phonenumber::country::Id>().ok();
    let n = phonenumber::parse(region, raw).ok()?;
    let code = n.code().value().to_string();
    // From the E.164 form, which keeps a national number's leading zeros (Italy's).
    let e164 = n.format().mode(phonenumber::Mode::E164).to_string();
    let national = e164
        .strip_prefix('+')?
        .strip_prefix(code.as_str())?
        .to_owned();
    (!national.is_empty() && national.len() <= 14 && national.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("+{code}.{national}"))
}

/// The registry did not answer `what` within `limit`.
fn timed_out(what: &str, limit: Duration) -> RegistrarError {
    RegistrarError(format!(
        "the registry did not answer {what} within {} s",
        limit.as_secs()
    ))
}

/// Ten random letters and digits: one start's part of its transaction ids.
fn trid_tag() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 10)
}

/// A fresh transfer code (RFC 5731 `authInfo`): random letters and digits, with the
/// character classes registries commonly require.
fn new_auth_code(salt: u64) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let body: String = (0..14)
        .map(|_| {
            let c = rng.gen_range(0..62u8);
            char::from(match c {
                0..=9 => b'0' + c,
                10..=35 => b'a' + (c - 10),
                _ => b'A' + (c - 36),
            })
        })
        .collect();
    format!("{body}-{}", salt % 10)
}

#[cfg(test)]
mod trid_tests {
    use super::*;

    fn registrar() -> EppRegistrar {
        EppRegistrar::new(EppSettings {
            name: "epp-test".into(),
            host: "127.0.0.1".into(),
            port: 700,
            client_id: "registrar-1234ab".into(),
            password: SecretString::from("secret"),
            ca_pem: None,
            client_cert_pem: None,
            timeout: Duration::from_secs(5),
            default_nameservers: vec![],
        })
        .unwrap()
    }

    /// Two starts (or nodes) never send the same transaction id, and each fits RFC 5730's
    /// 3 to 64 characters even with the longest client id.
    #[test]
    fn transaction_ids_differ_across_starts_and_fit() {
        let (a, b) = (registrar(), registrar());
        let (a1, a2, b1) = (a.next_trid(), a.next_trid(), b.next_trid());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1, "another start begins elsewhere");
        assert!(a1.starts_with("lodge-registrar-1234ab-"), "{a1}");
        a.trid.store(u64::MAX, Ordering::Relaxed);
        let longest = a.next_trid();
        assert!(longest.len() <= 64, "{longest}");
    }
}

#[cfg(test)]
mod phone_tests {
    #[test]
    fn phones_are_written_as_rfc_5733_asks() {
        let p = |raw: &str, country: &str| super::epp_phone(raw, country);
        assert_eq!(p("+442079460958", "GB").as_deref(), Some("+44.2079460958"));
        assert_eq!(
            p("+44 (20) 7946-0958", "US").as_deref(),
            Some("+44.2079460958")
        );
        assert_eq!(p("2125551234", "US").as_deref(), Some("+1.2125551234"));
        assert_eq!(
            p("+39 06 1234 5678", "IT").as_deref(),
            Some("+39.0612345678")
        );
        assert_eq!(p("call me", "US"), None);
    }
}
