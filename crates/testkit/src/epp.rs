//! An in-process EPP registry for registrar tests: a stateful server on `127.0.0.1:0` that
//! speaks the Extensible Provisioning Protocol as the RFCs write it.
//!
//! * RFC 5730 (EPP): the greeting, `hello`, `login` (client id and password checked: 2200 on a
//!   wrong one; 2002 for a command before login), `logout` (1500, then the connection
//!   closes), `poll` `req`/`ack` (1300 empty queue, 1301 with `msgQ`, 1000 on ack) and the
//!   result codes 1000/1001/1300/1301/1500/2001/2002/2004/2005/2104/2106/2200/2201/2202/2300/
//!   2301/2302/2303/2304/2306.
//! * RFC 5731 (domain mapping): `check`, `create` (2302 if it exists; the registrant and
//!   contacts must exist, else 2303), `info` (2303 if it does not exist; the `authInfo`
//!   only to the sponsoring client or with the right password), `renew` (`curExpDate` must
//!   be the current expiry date, else 2306), `transfer` `request` (1001 pending, a poll
//!   message queued for the losing registrar) / `query` / `approve` / `reject` / `cancel`,
//!   `update` (`ns` `hostObj`, the `clientTransferProhibited` status, `authInfo`).
//! * RFC 5732 (host mapping): `check`, `create` (2302 if it exists; a host under a domain
//!   the registry holds is internal: that domain must be the client's, else 2201, and it
//!   needs an address, else 2003; an external host takes none, else 2306) and `info`. A
//!   domain's `create` and `update` refuse a `hostObj` the registry does not hold (2303),
//!   as registries do.
//! * RFC 5733 (contact mapping): `create` (2302 if it exists).
//! * RFC 5734 (transport over TCP): TLS (a throwaway CA made with rcgen, a server certificate
//!   for `localhost` and `127.0.0.1`, optionally a client certificate required), each frame a
//!   4-byte big-endian length that counts itself, then the XML.
//!
//! Pending actions (RFC 5731 §3.3): with [`EppServer::set_pending_creates`] a domain
//! `create` answers 1001 and the domain holds `pendingCreate` until the test finishes it
//! ([`EppServer::finish_create`]), which queues a `<domain:panData>` poll message for the
//! sponsor. [`EppServer::push_message`] queues any other message (e.g. an extension's the
//! client does not know).
//!
//! Simplifications: `hostAttr` names are taken as given; the registry's date is the one the test gives ([`EppConfig::today`], [`EppServer::set_today`]).
//!
//! For tests: every command is recorded ([`EppServer::commands`]); a pending transfer is
//! approved or rejected by the losing side ([`EppServer::approve_transfer`],
//! [`EppServer::reject_transfer`]), which queues a poll message for the gaining client; a
//! fault switch ([`Fault::DropAfterCreate`]) commits the next domain create and then closes
//! the connection without answering (the lost-answer case).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, Context as _, Result};
use jiff::civil::Date;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

const EPP_NS: &str = "urn:ietf:params:xml:ns:epp-1.0";
const DOMAIN_NS: &str = "urn:ietf:params:xml:ns:domain-1.0";
const CONTACT_NS: &str = "urn:ietf:params:xml:ns:contact-1.0";
const HOST_NS: &str = "urn:ietf:params:xml:ns:host-1.0";
/// The largest frame the server reads.
const MAX_FRAME: usize = 1 << 20;

/// A fault the next matching command suffers (one shot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next `domain:create` is committed, then the connection drops without an answer.
    DropAfterCreate,
    /// The next command (after login) is not run: the connection drops.
    DropNextCommand,
    /// The next `domain:renew` is committed, then the connection drops without an answer.
    DropAfterRenew,
    /// The next command (after login) is not run and never answered; the connection stays
    /// open until the client closes it (a registry that stopped answering).
    StallNextCommand,
    /// The next command logged as starting with the text (`"domain:create"`, `"domain:transfer
    /// request"`) is not run and is answered with the result code: a registry's refusal
    /// the test server would not make on its own (2306 for its policy, 2201 for a wrong
    /// transfer code, as some registries answer it).
    RefuseNext(&'static str, u16),
}

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct EppConfig {
    /// The registrar accounts: client id → password.
    pub clients: Vec<(String, String)>,
    /// Require a client certificate issued by the test CA.
    pub require_client_cert: bool,
    /// The registry's date (tests pass their clock's; [`EppServer::set_today`] moves it).
    pub today: Date,
}

impl Default for EppConfig {
    fn default() -> Self {
        EppConfig {
            clients: vec![
                ("lodge".into(), "lodge-secret".into()),
                ("other".into(), "other-secret".into()),
            ],
            require_client_cert: false,
            today: jiff::civil::date(2026, 1, 1),
        }
    }
}

/// A domain as the registry holds it (a snapshot for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryDomain {
    pub name: String,
    pub roid: String,
    /// The sponsoring client.
    pub sponsor: String,
    pub created: Date,
    pub expires: Date,
    pub nameservers: Vec<String>,
    /// Client-set statuses (e.g. `clientTransferProhibited`).
    pub statuses: BTreeSet<String>,
    pub auth_info: String,
    pub registrant: Option<String>,
    pub transfer: Option<Transfer>,
}

/// A host object (RFC 5732) as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    pub name: String,
    pub sponsor: String,
    /// Its addresses (internal hosts only), as given.
    pub addresses: Vec<String>,
    pub created: Date,
}

/// The latest transfer of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// `pending`, `clientApproved`, `clientRejected`, `clientCancelled`.
    pub status: String,
    pub requester: String,
    pub loser: String,
    pub requested: Date,
    pub act_by: Date,
}

#[derive(Debug, Clone)]
struct Message {
    id: u64,
    date: Date,
    text: String,
    res_data: String,
}

#[derive(Debug)]
struct Registry {
    today: Date,
    passwords: HashMap<String, String>,
    domains: BTreeMap<String, RegistryDomain>,
    hosts: BTreeMap<String, RegistryHost>,
    pending_creates: bool,
    contacts: BTreeMap<String, String>,
    /// Each contact's postal info types (`int`, `loc`).
    contacts_postal: BTreeMap<String, Vec<String>>,
    /// Each contact's city, as created or last updated.
    contacts_city: BTreeMap<String, String>,
    queues: HashMap<String, VecDeque<Message>>,
    next_id: u64,
    fault: Option<Fault>,
    commands: Vec<String>,
}

/// The running server. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct EppServer {
    addr: SocketAddr,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    state: Arc<Mutex<Registry>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EppServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EppServer {
    /// Starts a registry with the default accounts (`lodge`/`lodge-secret`, `other`/`other-secret`).
    pub async fn start() -> Result<EppServer> {
        Self::start_with(EppConfig::default()).await
    }

    pub async fn start_with(config: EppConfig) -> Result<EppServer> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Lodge test EPP CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca, &ca_key)?;

        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(vec!["lodge-client".to_owned()])?;
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &ca, &ca_key)?;

        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if config.require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der().clone())?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let tls = builder.with_single_cert(
            vec![server_cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Registry {
            today: config.today,
            passwords: config.clients.iter().cloned().collect(),
            domains: BTreeMap::new(),
            hosts: BTreeMap::new(),
            pending_creates: false,
            contacts: BTreeMap::new(),
            contacts_postal: BTreeMap::new(),
            contacts_city: BTreeMap::new(),
            queues: HashMap::new(),
            next_id: 1,
            fault: None,
            commands: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, state).await;
                    }
                });
            }
        });
        Ok(EppServer {
            addr,
            ca_pem: ca.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            state,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The test CA's certificate (PEM): what a client trusts.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate and its PKCS#8 key (PEM), issued by the test CA.
    pub fn client_identity_pem(&self) -> (&str, &str) {
        (&self.client_cert_pem, &self.client_key_pem)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the registry's date (what `crDate`, `exDate` and transfers count from).
    pub fn set_today(&self, today: Date) {
        self.lock().today = today;
    }

    /// Changes a client's password (as a registry's password expiry does).
    pub fn set_password(&self, client: &str, password: &str) {
        self.lock()
            .passwords
            .insert(client.to_owned(), password.to_owned());
    }

    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = Some(fault);
    }

    /// Every command received, as `login`, `domain:create example.com`, `poll req`, … .
    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    /// How many commands start with `prefix` (e.g. `"domain:renew"`).
    pub fn count(&self, prefix: &str) -> usize {
        self.lock()
            .commands
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    pub fn domain(&self, name: &str) -> Option<RegistryDomain> {
        self.lock().domains.get(name).cloned()
    }

    /// Changes a domain as the registry's own staff would (e.g. a registry-side renewal).
    pub fn update_domain(&self, name: &str, change: impl FnOnce(&mut RegistryDomain)) -> bool {
        match self.lock().domains.get_mut(name) {
            Some(d) => {
                change(d);
                true
            }
            None => false,
        }
    }

    /// Puts a domain in the registry, sponsored by `sponsor` (e.g. one to transfer in).
    pub fn add_domain(&self, name: &str, sponsor: &str, auth_info: &str, expires: Date) {
        let mut r = self.lock();
        let roid = format!("D{}-LODGE", r.next_id);
        r.next_id += 1;
        let created = r.today;
        r.domains.insert(
            name.to_owned(),
            RegistryDomain {
                name: name.to_owned(),
                roid,
                sponsor: sponsor.to_owned(),
                created,
                expires,
                nameservers: vec![],
                statuses: BTreeSet::new(),
                auth_info: auth_info.to_owned(),
                registrant: None,
                transfer: None,
            },
        );
    }

    /// The losing registrar approves a pending transfer: the domain moves to the requester
    /// with a year added, and the requester gets a poll message.
    pub fn approve_transfer(&self, name: &str) -> Result<()> {
        self.lock().finish_transfer(name, "clientApproved")
    }

    /// The losing registrar rejects a pending transfer; the requester gets a poll message.
    pub fn reject_transfer(&self, name: &str) -> Result<()> {
        self.lock().finish_transfer(name, "clientRejected")
    }

    /// A contact's city, as created or last updated (`contact:update`).
    pub fn contact_city(&self, id: &str) -> Option<String> {
        self.lock().contacts_city.get(id).cloned()
    }

    /// The postal info types a contact was created with (`int`, `loc`).
    pub fn contact_postal_types(&self, id: &str) -> Vec<String> {
        self.lock()
            .contacts_postal
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn host(&self, name: &str) -> Option<RegistryHost> {
        self.lock().hosts.get(name).cloned()
    }

    /// Puts an external host object in the registry, sponsored by `sponsor`.
    pub fn add_host(&self, name: &str, sponsor: &str) {
        let mut r = self.lock();
        let created = r.today;
        r.hosts.insert(
            name.to_owned(),
            RegistryHost {
                name: name.to_owned(),
                sponsor: sponsor.to_owned(),
                addresses: vec![],
                created,
            },
        );
    }

    /// From now on a domain `create` answers 1001 and leaves the domain `pendingCreate`
    /// until [`EppServer::finish_create`].
    pub fn set_pending_creates(&self, on: bool) {
        self.lock().pending_creates = on;
    }

    /// The registry decides a pending create: approved, the domain loses `pendingCreate`;
    /// refused, it is deleted. Either way its sponsor gets a `<domain:panData>` poll
    /// message (`paResult` 1 or 0).
    pub fn finish_create(&self, name: &str, approve: bool) -> Result<()> {
        let mut r = self.lock();
        let d = r
            .domains
            .get_mut(name)
            .filter(|d| d.statuses.contains("pendingCreate"))
            .ok_or_else(|| anyhow!("{name} has no pending create"))?;
        d.statuses.remove("pendingCreate");
        let sponsor = d.sponsor.clone();
        if !approve {
            r.domains.remove(name);
        }
        let today = stamp(r.today);
        let data = format!(
            r#"<domain:panData xmlns:domain="{DOMAIN_NS}"><domain:name paResult="{}">{}</domain:name><domain:paTRID><clTRID>ABC-12345</clTRID><svTRID>LODGE-PA</svTRID></domain:paTRID><domain:paDate>{today}</domain:paDate></domain:panData>"#,
            u8::from(approve),
            esc(name)
        );
        let text = if approve {
            "Pending create completed."
        } else {
            "Pending create refused."
        };
        r.queue(&sponsor, text, data);
        Ok(())
    }

    /// Queues a message for `client` with `res_data` as its `<resData>` content (empty:
    /// none), e.g. an extension's element the client does not know.
    pub fn push_message(&self, client: &str, text: &str, res_data: &str) {
        self.lock().queue(client, text, res_data.to_owned());
    }

    /// Messages waiting for `client`.
    pub fn queued(&self, client: &str) -> usize {
        self.lock().queues.get(client).map_or(0, VecDeque::len)
    }
}

fn lock(state: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection: the greeting, then a command per frame until logout or EOF.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    state: Arc<Mutex<Registry>>,
) -> Result<()> {
    let greeting = lock(&state).greeting();
    write_frame(&mut s, &greeting).await?;
    let mut session: Option<String> = None;
    loop {
        let Some(frame) = read_frame(&mut s).await? else {
            return Ok(());
        };
        let reply = lock(&state).handle(&frame, &mut session);
        match reply {
            Reply::Send(xml) => write_frame(&mut s, &xml).await?,
            Reply::SendAndClose(xml) => {
                write_frame(&mut s, &xml).await?;
                let _ = s.shutdown().await;
                return Ok(());
            }
            Reply::Drop => return Ok(()),
            Reply::Stall => {
                // Nothing is answered; whatever else comes is ignored until the client
                // closes the connection.
                while read_frame(&mut s).await?.is_some() {}
                return Ok(());
            }
        }
    }
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<String>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let total = usize::try_from(u32::from_be_bytes(len))?;
    let body = total
        .checked_sub(4)
        .filter(|n| *n <= MAX_FRAME)
        .ok_or_else(|| anyhow!("bad frame length {total}"))?;
    let mut buf = vec![0u8; body];
    s.read_exact(&mut buf).await?;
    Ok(Some(String::from_utf8(buf)?))
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, xml: &str) -> Result<()> {
    let total = u32::try_from(xml.len() + 4)?;
    s.write_all(&total.to_be_bytes()).await?;
    s.write_all(xml.as_bytes()).await?;
    s.flush().await?;
    Ok(())
}

enum Reply {
    Send(String),
    SendAndClose(String),
    Drop,
    Stall,
}

/// What a command answers before it is wrapped in `<response>`.
struct Answer {
    code: u16,
    res_data: Option<String>,
    msg_q: Option<String>,
    /// `<value>` of the result (the offending element), for errors.
    value: Option<String>,
}

impl Answer {
    fn code(code: u16) -> Answer {
        Answer {
            code,
            res_data: None,
            msg_q: None,
            value: None,
        }
    }
    fn data(code: u16, res_data: String) -> Answer {
        Answer {
            res_data: Some(res_data),
            ..Answer::code(code)
        }
    }
    fn value(code: u16, value: String) -> Answer {
        Answer {
            value: Some(value),
            ..Answer::code(code)
        }
    }
}

/// RFC 5730 §3's text for a result code.
fn message(code: u16) -> &'static str {
    match code {
        1000 => "Command completed successfully",
        1001 => "Command completed successfully; action pending",
        1300 => "Command completed successfully; no messages",
        1301 => "Command completed successfully; ack to dequeue",
        1500 => "Command completed successfully; ending session",
        2000 => "Unknown command",
        2001 => "Command syntax error",
        2002 => "Command use error",
        2003 => "Required parameter missing",
        2004 => "Parameter value range error",
        2005 => "Parameter value syntax error",
        2104 => "Billing failure",
        2106 => "Object is not eligible for transfer",
        2200 => "Authentication error",
        2201 => "Authorization error",
        2202 => "Invalid authorization information",
        2300 => "Object pending transfer",
        2301 => "Object not pending transfer",
        2302 => "Object exists",
        2303 => "Object does not exist",
        2304 => "Object status prohibits operation",
        2306 => "Parameter value policy error",
        _ => "Command failed",
    }
}

/// Whether an `int` postal info under `node` (a `contact:create` or an update's `chg`) holds
/// anything but 7-bit ASCII, which RFC 5733 §2.3 (the schema's `int` form) refuses.
fn int_not_ascii(node: roxmltree::Node<'_, '_>) -> bool {
    children(node, "postalInfo")
        .filter(|p| p.attribute("type") == Some("int"))
        .any(|p| {
            p.descendants()
                .filter_map(|n| n.text())
                .any(|t| !t.is_ascii())
        })
}

/// The city of the first postal info under `node` (a `contact:create` or its `chg`).
fn city_of(node: roxmltree::Node<'_, '_>) -> Option<String> {
    node.descendants()
        .find(|n| n.tag_name().name() == "city")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_owned())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn stamp(d: Date) -> String {
    format!("{d}T00:00:00.0Z")
}

/// The first child element named `name` (any namespace).
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text(n: Option<roxmltree::Node<'_, '_>>) -> Option<String> {
    n.and_then(|n| n.text()).map(|t| t.trim().to_owned())
}

fn first_element<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element())
}

impl Registry {
    fn greeting(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<epp xmlns="{EPP_NS}"><greeting><svID>Lodge test registry</svID><svDate>{}</svDate><svcMenu><version>1.0</version><lang>en</lang><objURI>{DOMAIN_NS}</objURI><objURI>{CONTACT_NS}</objURI><objURI>{HOST_NS}</objURI></svcMenu><dcp><access><all/></access><statement><purpose><admin/><prov/></purpose><recipient><ours/></recipient><retention><stated/></retention></statement></dcp></greeting></epp>"#,
            stamp(self.today)
        )
    }

    fn response(&mut self, a: Answer, cl_trid: Option<&str>) -> String {
        let sv = self.next_id;
        self.next_id += 1;
        let value = a
            .value
            .map(|v| format!("<value>{v}</value>"))
            .unwrap_or_default();
        let cl = cl_trid
            .map(|c| format!("<clTRID>{}</clTRID>", esc(c)))
            .unwrap_or_default();
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<epp xmlns="{EPP_NS}"><response><result code="{}"><msg>{}</msg>{value}</result>{}{}<trID>{cl}<svTRID>LODGE-{sv}</svTRID></trID></response></epp>"#,
            a.code,
            message(a.code),
            a.msg_q.unwrap_or_default(),
            a.res_data
                .map(|d| format!("<resData>{d}</resData>"))
                .unwrap_or_default(),
        )
    }

    fn handle(&mut self, frame: &str, session: &mut Option<String>) -> Reply {
        let doc = match roxmltree::Document::parse(frame) {
            Ok(d) => d,
            Err(_) => {
                self.commands.push("malformed".into());
                return Reply::Send(self.response(Answer::code(2001), None));
            }
        };
        let root = doc.root_element();
        if root.tag_name().name() != "epp" || root.tag_name().namespace() != Some(EPP_NS) {
            self.commands.push("malformed".into());
            return Reply::Send(self.response(Answer::code(2001), None));
        }
        if child(root, "hello").is_some() {
            self.commands.push("hello".into());
            return Reply::Send(self.greeting());
        }
        let Some(command) = child(root, "command") else {
            self.commands.push("unknown".into());
            return Reply::Send(self.response(Answer::code(2001), None));
        };
        let cl_trid = text(child(command, "clTRID"));
        let Some(verb) = first_element(command) else {
            return Reply::Send(self.response(Answer::code(2001), cl_trid.as_deref()));
        };
        let verb_name = verb.tag_name().name();
        match verb_name {
            "login" => {
                self.commands.push("login".into());
                let id = text(child(verb, "clID")).unwrap_or_default();
                let pw = text(child(verb, "pw")).unwrap_or_default();
                let a = if session.is_some() {
                    Answer::code(2002)
                } else if self.passwords.get(&id) == Some(&pw) {
                    *session = Some(id);
                    Answer::code(1000)
                } else {
                    Answer::code(2200)
                };
                return Reply::Send(self.response(a, cl_trid.as_deref()));
            }
            "logout" => {
                self.commands.push("logout".into());
                let xml = self.response(Answer::code(1500), cl_trid.as_deref());
                return Reply::SendAndClose(xml);
            }
            _ => {}
        }
        let Some(client) = session.clone() else {
            self.commands.push(format!("{verb_name} (not logged in)"));
            return Reply::Send(self.response(Answer::code(2002), cl_trid.as_deref()));
        };
        if self.fault == Some(Fault::DropNextCommand) {
            self.fault = None;
            self.commands.push(format!("{verb_name} (dropped)"));
            return Reply::Drop;
        }
        if self.fault == Some(Fault::StallNextCommand) {
            self.fault = None;
            self.commands.push(format!("{verb_name} (stalled)"));
            return Reply::Stall;
        }
        if verb_name == "poll" {
            let op = verb.attribute("op").unwrap_or("");
            self.commands.push(format!("poll {op}"));
            let a = self.poll(&client, op, verb.attribute("msgID"));
            return Reply::Send(self.response(a, cl_trid.as_deref()));
        }
        let Some(object) = first_element(verb) else {
            return Reply::Send(self.response(Answer::code(2001), cl_trid.as_deref()));
        };
        let ns = object.tag_name().namespace().unwrap_or("");
        let name = text(child(object, "name"))
            .or_else(|| text(child(object, "id")))
            .unwrap_or_default();
        let kind = match ns {
            DOMAIN_NS => "domain",
            CONTACT_NS => "contact",
            HOST_NS => "host",
            _ => "other",
        };
        let op = verb
            .attribute("op")
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        let logged = format!("{kind}:{verb_name}{op} {name}").trim().to_owned();
        if let Some(Fault::RefuseNext(prefix, code)) = self.fault {
            if logged.starts_with(prefix) {
                self.fault = None;
                self.commands.push(format!("{logged} (refused {code})"));
                return Reply::Send(self.response(Answer::code(code), cl_trid.as_deref()));
            }
        }
        self.commands.push(logged);
        let answer = match (kind, verb_name) {
            ("domain", "check") => self.domain_check(object),
            ("domain", "create") => {
                let a = self.domain_create(&client, object);
                if a.code < 2000 && self.fault == Some(Fault::DropAfterCreate) {
                    self.fault = None;
                    return Reply::Drop;
                }
                a
            }
            ("domain", "info") => self.domain_info(&client, object),
            ("domain", "renew") => {
                let a = self.domain_renew(&client, object);
                if a.code == 1000 && self.fault == Some(Fault::DropAfterRenew) {
                    self.fault = None;
                    return Reply::Drop;
                }
                a
            }
            ("domain", "transfer") => self.domain_transfer(&client, verb, object),
            ("domain", "update") => self.domain_update(&client, object),
            ("contact", "create") => self.contact_create(&client, object),
            ("contact", "update") => self.contact_update(&client, object),
            ("host", "check") => self.host_check(object),
            ("host", "create") => self.host_create(&client, object),
            ("host", "info") => self.host_info(object),
            ("contact", "check") => {
                let items: String = children(object, "id")
                    .filter_map(|n| n.text())
                    .map(|id| {
                        let avail = u8::from(!self.contacts.contains_key(id.trim()));
                        format!(
                            r#"<contact:cd><contact:id avail="{avail}">{}</contact:id></contact:cd>"#,
                            esc(id.trim())
                        )
                    })
                    .collect();
                Answer::data(
                    1000,
                    format!(
                        r#"<contact:chkData xmlns:contact="{CONTACT_NS}">{items}</contact:chkData>"#
                    ),
                )
            }
            _ => Answer::code(2101),
        };
        Reply::Send(self.response(answer, cl_trid.as_deref()))
    }

    fn domain_check(&self, object: roxmltree::Node<'_, '_>) -> Answer {
        let items: String = children(object, "name")
            .filter_map(|n| n.text())
            .map(|n| {
                let n = n.trim().to_ascii_lowercase();
                if self.domains.contains_key(&n) {
                    format!(
                        r#"<domain:cd><domain:name avail="0">{}</domain:name><domain:reason>In use</domain:reason></domain:cd>"#,
                        esc(&n)
                    )
                } else {
                    format!(
                        r#"<domain:cd><domain:name avail="1">{}</domain:name></domain:cd>"#,
                        esc(&n)
                    )
                }
            })
            .collect();
        Answer::data(
            1000,
            format!(r#"<domain:chkData xmlns:domain="{DOMAIN_NS}">{items}</domain:chkData>"#),
        )
    }

    /// The period in years (`<domain:period unit="y|m">`), default 1; `None` if out of range.
    fn period_years(object: roxmltree::Node<'_, '_>) -> Option<i16> {
        let Some(p) = child(object, "period") else {
            return Some(1);
        };
        let n: i16 = p.text()?.trim().parse().ok()?;
        let years = match p.attribute("unit") {
            Some("m") if n % 12 == 0 => n / 12,
            Some("y") | None => n,
            _ => return None,
        };
        (1..=10).contains(&years).then_some(years)
    }

    fn domain_create(&mut self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let Some(name) = text(child(object, "name")).map(|n| n.to_ascii_lowercase()) else {
            return Answer::code(2003);
        };
        if !name.contains('.') || name.starts_with('.') || name.ends_with('.') {
            return Answer::value(
                2005,
                format!(
                    "<domain:name xmlns:domain=\"{DOMAIN_NS}\">{}</domain:name>",
                    esc(&name)
                ),
            );
        }
        if self.domains.contains_key(&name) {
            return Answer::value(
                2302,
                format!(
                    "<domain:name xmlns:domain=\"{DOMAIN_NS}\">{}</domain:name>",
                    esc(&name)
                ),
            );
        }
        let Some(years) = Self::period_years(object) else {
            return Answer::code(2004);
        };
        let registrant = text(child(object, "registrant"));
        let mut referenced: Vec<String> = registrant.iter().cloned().collect();
        referenced.extend(children(object, "contact").filter_map(|c| text(Some(c))));
        if let Some(missing) = referenced.iter().find(|c| !self.contacts.contains_key(*c)) {
            return Answer::value(
                2303,
                format!(
                    "<contact:id xmlns:contact=\"{CONTACT_NS}\">{}</contact:id>",
                    esc(missing)
                ),
            );
        }
        let Some(auth) = text(child(object, "authInfo").and_then(|a| child(a, "pw"))) else {
            return Answer::code(2003);
        };
        let nameservers: Vec<String> = child(object, "ns")
            .map(|ns| {
                children(ns, "hostObj")
                    .filter_map(|h| text(Some(h)))
                    .chain(children(ns, "hostAttr").filter_map(|h| text(child(h, "hostName"))))
                    .map(|h| h.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(missing) = self.unknown_host(object) {
            return missing;
        }
        let created = self.today;
        let Ok(expires) = created.checked_add(jiff::Span::new().years(years)) else {
            return Answer::code(2004);
        };
        let pending = self.pending_creates;
        let roid = format!("D{}-LODGE", self.next_id);
        self.next_id += 1;
        self.domains.insert(
            name.clone(),
            RegistryDomain {
                name: name.clone(),
                roid,
                sponsor: client.to_owned(),
                created,
                expires,
                nameservers,
                statuses: if pending {
                    BTreeSet::from(["pendingCreate".to_owned()])
                } else {
                    BTreeSet::new()
                },
                auth_info: auth,
                registrant,
                transfer: None,
            },
        );
        if pending {
            // RFC 5731 §3.2.1: 1001, the creData without the expiry the registry has yet
            // to decide.
            return Answer::data(
                1001,
                format!(
                    r#"<domain:creData xmlns:domain="{DOMAIN_NS}"><domain:name>{}</domain:name><domain:crDate>{}</domain:crDate></domain:creData>"#,
                    esc(&name),
                    stamp(created)
                ),
            );
        }
        Answer::data(
            1000,
            format!(
                r#"<domain:creData xmlns:domain="{DOMAIN_NS}"><domain:name>{}</domain:name><domain:crDate>{}</domain:crDate><domain:exDate>{}</domain:exDate></domain:creData>"#,
                esc(&name),
                stamp(created),
                stamp(expires)
            ),
        )
    }

    /// A `hostObj` of a domain command (its `ns`, or its `add`'s) that the registry does
    /// not hold: 2303 with the name.
    fn unknown_host(&self, object: roxmltree::Node<'_, '_>) -> Option<Answer> {
        let lists = [Some(object), child(object, "add")];
        let missing = lists
            .into_iter()
            .flatten()
            .filter_map(|p| child(p, "ns"))
            .flat_map(|ns| children(ns, "hostObj").filter_map(|h| text(Some(h))))
            .map(|h| h.to_ascii_lowercase())
            .find(|h| !self.hosts.contains_key(h))?;
        Some(Answer::value(
            2303,
            format!(
                "<domain:hostObj xmlns:domain=\"{DOMAIN_NS}\">{}</domain:hostObj>",
                esc(&missing)
            ),
        ))
    }

    /// The domain this registry holds that `host` is under (an internal host's
    /// superordinate domain), if any.
    fn superordinate(&self, host: &str) -> Option<&RegistryDomain> {
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(d) = self.domains.get(parent) {
                return Some(d);
            }
            rest = parent;
        }
        None
    }

    fn host_check(&self, object: roxmltree::Node<'_, '_>) -> Answer {
        let items: String = children(object, "name")
            .filter_map(|n| n.text())
            .map(|n| {
                let n = n.trim().to_ascii_lowercase();
                let avail = u8::from(!self.hosts.contains_key(&n));
                format!(
                    r#"<host:cd><host:name avail="{avail}">{}</host:name></host:cd>"#,
                    esc(&n)
                )
            })
            .collect();
        Answer::data(
            1000,
            format!(r#"<host:chkData xmlns:host="{HOST_NS}">{items}</host:chkData>"#),
        )
    }

    fn host_create(&mut self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let Some(name) = text(child(object, "name")).map(|n| n.to_ascii_lowercase()) else {
            return Answer::code(2003);
        };
        let valid = name.split('.').count() >= 3
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Answer::value(
                2005,
                format!(
                    "<host:name xmlns:host=\"{HOST_NS}\">{}</host:name>",
                    esc(&name)
                ),
            );
        }
        if self.hosts.contains_key(&name) {
            return Answer::code(2302);
        }
        let addresses: Vec<String> = children(object, "addr")
            .filter_map(|a| text(Some(a)))
            .collect();
        match self.superordinate(&name) {
            Some(d) if d.sponsor != client => return Answer::code(2201),
            Some(_) if addresses.is_empty() => return Answer::code(2003),
            None if !addresses.is_empty() => return Answer::code(2306),
            _ => {}
        }
        let created = self.today;
        self.hosts.insert(
            name.clone(),
            RegistryHost {
                name: name.clone(),
                sponsor: client.to_owned(),
                addresses,
                created,
            },
        );
        Answer::data(
            1000,
            format!(
                r#"<host:creData xmlns:host="{HOST_NS}"><host:name>{}</host:name><host:crDate>{}</host:crDate></host:creData>"#,
                esc(&name),
                stamp(created)
            ),
        )
    }

    fn host_info(&self, object: roxmltree::Node<'_, '_>) -> Answer {
        let name = text(child(object, "name"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(h) = self.hosts.get(&name) else {
            return Answer::code(2303);
        };
        let linked = self.domains.values().any(|d| d.nameservers.contains(&name));
        let status = if linked { "linked" } else { "ok" };
        let addrs: String = h
            .addresses
            .iter()
            .map(|a| {
                let ip = if a.contains(':') { "v6" } else { "v4" };
                format!(r#"<host:addr ip="{ip}">{}</host:addr>"#, esc(a))
            })
            .collect();
        Answer::data(
            1000,
            format!(
                r#"<host:infData xmlns:host="{HOST_NS}"><host:name>{}</host:name><host:roid>H{}-LODGE</host:roid><host:status s="{status}"/>{addrs}<host:clID>{}</host:clID><host:crID>{}</host:crID><host:crDate>{}</host:crDate></host:infData>"#,
                esc(&h.name),
                h.name.len(),
                esc(&h.sponsor),
                esc(&h.sponsor),
                stamp(h.created)
            ),
        )
    }

    fn domain_info(&self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let name = text(child(object, "name"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(d) = self.domains.get(&name) else {
            return Answer::value(
                2303,
                format!(
                    "<domain:name xmlns:domain=\"{DOMAIN_NS}\">{}</domain:name>",
                    esc(&name)
                ),
            );
        };
        let given = text(child(object, "authInfo").and_then(|a| child(a, "pw")));
        let full = d.sponsor == client || given.as_deref() == Some(d.auth_info.as_str());
        if given.is_some() && !full {
            return Answer::code(2202);
        }
        let mut statuses: Vec<String> = d.statuses.iter().cloned().collect();
        if matches!(&d.transfer, Some(t) if t.status == "pending") {
            statuses.push("pendingTransfer".into());
        }
        if statuses.is_empty() {
            statuses.push("ok".into());
        }
        let statuses: String = statuses
            .iter()
            .map(|s| format!(r#"<domain:status s="{s}"/>"#))
            .collect();
        let mut body = format!(
            "<domain:name>{}</domain:name><domain:roid>{}</domain:roid>{statuses}",
            esc(&d.name),
            esc(&d.roid)
        );
        if full {
            if let Some(r) = &d.registrant {
                body.push_str(&format!(
                    "<domain:registrant>{}</domain:registrant>",
                    esc(r)
                ));
            }
            if !d.nameservers.is_empty() {
                body.push_str("<domain:ns>");
                for ns in &d.nameservers {
                    body.push_str(&format!("<domain:hostObj>{}</domain:hostObj>", esc(ns)));
                }
                body.push_str("</domain:ns>");
            }
        }
        body.push_str(&format!(
            "<domain:clID>{}</domain:clID><domain:crID>{}</domain:crID><domain:crDate>{}</domain:crDate><domain:exDate>{}</domain:exDate>",
            esc(&d.sponsor),
            esc(&d.sponsor),
            stamp(d.created),
            stamp(d.expires)
        ));
        if full {
            body.push_str(&format!(
                "<domain:authInfo><domain:pw>{}</domain:pw></domain:authInfo>",
                esc(&d.auth_info)
            ));
        }
        Answer::data(
            1000,
            format!(r#"<domain:infData xmlns:domain="{DOMAIN_NS}">{body}</domain:infData>"#),
        )
    }

    fn domain_renew(&mut self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let name = text(child(object, "name"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(years) = Self::period_years(object) else {
            return Answer::code(2004);
        };
        let Some(cur) = text(child(object, "curExpDate")) else {
            return Answer::code(2003);
        };
        let Ok(cur) = cur.parse::<Date>() else {
            return Answer::code(2005);
        };
        let Some(d) = self.domains.get_mut(&name) else {
            return Answer::code(2303);
        };
        if d.sponsor != client {
            return Answer::code(2201);
        }
        if cur != d.expires {
            return Answer::value(
                2306,
                format!(
                    "<domain:curExpDate xmlns:domain=\"{DOMAIN_NS}\">{cur}</domain:curExpDate>"
                ),
            );
        }
        let Ok(expires) = d.expires.checked_add(jiff::Span::new().years(years)) else {
            return Answer::code(2004);
        };
        d.expires = expires;
        Answer::data(
            1000,
            format!(
                r#"<domain:renData xmlns:domain="{DOMAIN_NS}"><domain:name>{}</domain:name><domain:exDate>{}</domain:exDate></domain:renData>"#,
                esc(&name),
                stamp(expires)
            ),
        )
    }

    fn trn_data(d: &RegistryDomain) -> String {
        let Some(t) = &d.transfer else {
            return String::new();
        };
        format!(
            r#"<domain:trnData xmlns:domain="{DOMAIN_NS}"><domain:name>{}</domain:name><domain:trStatus>{}</domain:trStatus><domain:reID>{}</domain:reID><domain:reDate>{}</domain:reDate><domain:acID>{}</domain:acID><domain:acDate>{}</domain:acDate><domain:exDate>{}</domain:exDate></domain:trnData>"#,
            esc(&d.name),
            t.status,
            esc(&t.requester),
            stamp(t.requested),
            esc(&t.loser),
            stamp(t.act_by),
            stamp(d.expires)
        )
    }

    fn queue(&mut self, client: &str, text: &str, res_data: String) {
        let id = self.next_id;
        self.next_id += 1;
        let date = self.today;
        self.queues
            .entry(client.to_owned())
            .or_default()
            .push_back(Message {
                id,
                date,
                text: text.to_owned(),
                res_data,
            });
    }

    fn domain_transfer(
        &mut self,
        client: &str,
        verb: roxmltree::Node<'_, '_>,
        object: roxmltree::Node<'_, '_>,
    ) -> Answer {
        let name = text(child(object, "name"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let given = text(child(object, "authInfo").and_then(|a| child(a, "pw")));
        let today = self.today;
        let Some(d) = self.domains.get_mut(&name) else {
            return Answer::code(2303);
        };
        match verb.attribute("op").unwrap_or("") {
            "request" => {
                if d.sponsor == client {
                    return Answer::code(2106);
                }
                if given.as_deref() != Some(d.auth_info.as_str()) {
                    return Answer::code(2202);
                }
                if matches!(&d.transfer, Some(t) if t.status == "pending") {
                    return Answer::code(2300);
                }
                if d.statuses.contains("clientTransferProhibited") {
                    return Answer::code(2304);
                }
                let Ok(act_by) = today.checked_add(jiff::Span::new().days(5)) else {
                    return Answer::code(2400);
                };
                d.transfer = Some(Transfer {
                    status: "pending".into(),
                    requester: client.to_owned(),
                    loser: d.sponsor.clone(),
                    requested: today,
                    act_by,
                });
                let data = Self::trn_data(d);
                let loser = d.sponsor.clone();
                self.queue(&loser, "Transfer requested.", data.clone());
                Answer::data(1001, data)
            }
            "query" => {
                let party =
                    d.sponsor == client || matches!(&d.transfer, Some(t) if t.requester == client);
                if !party && given.as_deref() != Some(d.auth_info.as_str()) {
                    return Answer::code(2202);
                }
                if d.transfer.is_none() {
                    return Answer::code(2301);
                }
                Answer::data(1000, Self::trn_data(d))
            }
            op @ ("approve" | "reject") => {
                if d.sponsor != client {
                    return Answer::code(2201);
                }
                let status = if op == "approve" {
                    "clientApproved"
                } else {
                    "clientRejected"
                };
                match self.finish_transfer(&name, status) {
                    Ok(()) => Answer::data(
                        1000,
                        self.domains
                            .get(&name)
                            .map(Self::trn_data)
                            .unwrap_or_default(),
                    ),
                    Err(_) => Answer::code(2301),
                }
            }
            "cancel" => {
                match &mut d.transfer {
                    Some(t) if t.status == "pending" && t.requester == client => {
                        t.status = "clientCancelled".into();
                    }
                    Some(t) if t.status == "pending" => return Answer::code(2201),
                    _ => return Answer::code(2301),
                }
                let data = Self::trn_data(d);
                let loser = d.sponsor.clone();
                self.queue(&loser, "Transfer cancelled.", data.clone());
                Answer::data(1000, data)
            }
            _ => Answer::code(2005),
        }
    }

    fn finish_transfer(&mut self, name: &str, status: &str) -> Result<()> {
        let d = self
            .domains
            .get_mut(name)
            .ok_or_else(|| anyhow!("no domain {name}"))?;
        let t = d
            .transfer
            .as_mut()
            .filter(|t| t.status == "pending")
            .ok_or_else(|| anyhow!("{name} has no pending transfer"))?;
        t.status = status.to_owned();
        let requester = t.requester.clone();
        if status == "clientApproved" {
            d.sponsor = requester.clone();
            d.expires = d
                .expires
                .checked_add(jiff::Span::new().years(1))
                .context("expiry overflow")?;
        }
        let data = Self::trn_data(d);
        let text = if status == "clientApproved" {
            "Transfer approved."
        } else {
            "Transfer rejected."
        };
        self.queue(&requester, text, data);
        Ok(())
    }

    fn domain_update(&mut self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let name = text(child(object, "name"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(d) = self.domains.get_mut(&name) else {
            return Answer::code(2303);
        };
        if d.sponsor != client {
            return Answer::code(2201);
        }
        if matches!(&d.transfer, Some(t) if t.status == "pending") {
            return Answer::code(2304);
        }
        let hosts = |part: Option<roxmltree::Node<'_, '_>>| -> Vec<String> {
            part.and_then(|p| child(p, "ns"))
                .map(|ns| {
                    children(ns, "hostObj")
                        .filter_map(|h| text(Some(h)))
                        .map(|h| h.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default()
        };
        let statuses = |part: Option<roxmltree::Node<'_, '_>>| -> Vec<String> {
            part.map(|p| {
                children(p, "status")
                    .filter_map(|s| s.attribute("s").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
        };
        let add = child(object, "add");
        let rem = child(object, "rem");
        let missing = add
            .and_then(|p| child(p, "ns"))
            .into_iter()
            .flat_map(|ns| children(ns, "hostObj").filter_map(|h| text(Some(h))))
            .map(|h| h.to_ascii_lowercase())
            .find(|h| !self.hosts.contains_key(h));
        if let Some(missing) = missing {
            return Answer::value(
                2303,
                format!(
                    "<domain:hostObj xmlns:domain=\"{DOMAIN_NS}\">{}</domain:hostObj>",
                    esc(&missing)
                ),
            );
        }
        for s in statuses(add).iter().chain(statuses(rem).iter()) {
            if !s.starts_with("client") {
                return Answer::code(2005);
            }
        }
        for h in hosts(rem) {
            d.nameservers.retain(|n| *n != h);
        }
        for h in hosts(add) {
            if !d.nameservers.contains(&h) {
                d.nameservers.push(h);
            }
        }
        if d.nameservers.len() > 13 {
            return Answer::code(2306);
        }
        for s in statuses(rem) {
            d.statuses.remove(&s);
        }
        for s in statuses(add) {
            d.statuses.insert(s);
        }
        if let Some(pw) = text(
            child(object, "chg")
                .and_then(|c| child(c, "authInfo"))
                .and_then(|a| child(a, "pw")),
        ) {
            d.auth_info = pw;
        }
        Answer::code(1000)
    }

    fn contact_create(&mut self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let Some(id) = text(child(object, "id")) else {
            return Answer::code(2003);
        };
        if child(object, "email").is_none() || child(object, "postalInfo").is_none() {
            return Answer::code(2003);
        }
        if int_not_ascii(object) {
            return Answer::code(2005);
        }
        // RFC 5733's e164StringType: `(\+[0-9]{1,3}\.[0-9]{1,14})?`; a schema-checking
        // registry refuses anything else (2001).
        if let Some(voice) = text(child(object, "voice")) {
            let ok = voice
                .strip_prefix('+')
                .and_then(|v| v.split_once('.'))
                .is_some_and(|(cc, n)| {
                    (1..=3).contains(&cc.len())
                        && (1..=14).contains(&n.len())
                        && cc.bytes().chain(n.bytes()).all(|b| b.is_ascii_digit())
                });
            if !ok {
                return Answer::code(2001);
            }
        }
        if self.contacts.contains_key(&id) {
            return Answer::code(2302);
        }
        self.contacts_postal.insert(
            id.clone(),
            children(object, "postalInfo")
                .filter_map(|p| p.attribute("type").map(str::to_owned))
                .collect(),
        );
        if let Some(city) = city_of(object) {
            self.contacts_city.insert(id.clone(), city);
        }
        self.contacts.insert(id.clone(), client.to_owned());
        Answer::data(
            1000,
            format!(
                r#"<contact:creData xmlns:contact="{CONTACT_NS}"><contact:id>{}</contact:id><contact:crDate>{}</contact:crDate></contact:creData>"#,
                esc(&id),
                stamp(self.today)
            ),
        )
    }

    /// RFC 5733 §3.2.5: only the sponsor updates a contact; `chg` carries the new postal
    /// info (checked as at create: `int` is 7-bit ASCII), voice and email.
    fn contact_update(&mut self, client: &str, object: roxmltree::Node<'_, '_>) -> Answer {
        let Some(id) = text(child(object, "id")) else {
            return Answer::code(2003);
        };
        match self.contacts.get(&id) {
            None => return Answer::code(2303),
            Some(sponsor) if sponsor != client => return Answer::code(2201),
            Some(_) => {}
        }
        let Some(chg) = child(object, "chg") else {
            return Answer::code(2003);
        };
        if int_not_ascii(chg) {
            return Answer::code(2005);
        }
        if let Some(city) = city_of(chg) {
            self.contacts_city.insert(id, city);
        }
        Answer::code(1000)
    }

    fn poll(&mut self, client: &str, op: &str, msg_id: Option<&str>) -> Answer {
        let queue = self.queues.entry(client.to_owned()).or_default();
        match op {
            "req" => match queue.front() {
                None => Answer::code(1300),
                Some(m) => Answer {
                    code: 1301,
                    msg_q: Some(format!(
                        r#"<msgQ count="{}" id="{}"><qDate>{}</qDate><msg>{}</msg></msgQ>"#,
                        queue.len(),
                        m.id,
                        stamp(m.date),
                        esc(&m.text)
                    )),
                    res_data: (!m.res_data.is_empty()).then(|| m.res_data.clone()),
                    value: None,
                },
            },
            "ack" => {
                let Some(id) = msg_id else {
                    return Answer::code(2003);
                };
                if queue.front().map(|m| m.id.to_string()).as_deref() != Some(id) {
                    return Answer::code(2303);
                }
                queue.pop_front();
                let next = queue
                    .front()
                    .map(|m| m.id.to_string())
                    .unwrap_or_else(|| id.to_owned());
                Answer {
                    msg_q: Some(format!(r#"<msgQ count="{}" id="{next}"/>"#, queue.len())),
                    ..Answer::code(1000)
                }
            }
            _ => Answer::code(2005),
        }
    }
}
