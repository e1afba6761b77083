//! A stateful fake Plesk XML API, following
//! https://docs.plesk.com/en-US/obsidian/api-rpc/about-xml-api/xml-api-packets/a-sample-packet.50169
//! and the packet references for `customer` (add, get, set, del), `webspace` (add, get,
//! switch-subscription), `service-plan` (get), `ip` (get) and `server` (get, create_session),
//! as plesk/api-php-lib (FOSSBilling) sends them: `POST /enterprise/control/agent.php`,
//! `Content-Type: text/xml`, headers `HTTP_AUTH_LOGIN` / `HTTP_AUTH_PASSWD` or `KEY`. Every
//! answer carries `<status>ok|error</status>`, errors `<errcode>` and `<errtext>` (1001 wrong
//! login, 1007 exists, 1013 not found). Customers (status 0 active, 16 suspended),
//! subscriptions with their service plan, and every request (its operation and XML) are
//! kept; [`FakePlesk::drop_next_create`] commits the next webspace add, then drops the
//! connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::tls::{Cert, HttpServer, Recorded, Reply, Request, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PleskCustomer {
    pub id: u64,
    pub pname: String,
    pub email: String,
    pub passwd: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webspace {
    pub owner_login: String,
    pub plan: String,
    pub ip: String,
    pub ftp_login: String,
}

#[derive(Debug, Default)]
pub struct PleskState {
    pub login: String,
    pub password: String,
    pub customers: BTreeMap<String, PleskCustomer>,
    pub webspaces: BTreeMap<String, Webspace>,
    /// Service plan name → guid.
    pub plans: BTreeMap<String, String>,
    pub requests: Vec<Recorded>,
    pub drop_next_create: bool,
    pub next_id: u64,
    pub sessions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FakePlesk {
    pub server: Arc<HttpServer>,
    pub cert: Option<Cert>,
    state: Arc<Mutex<PleskState>>,
}

pub const IP: &str = "127.0.0.4";

impl FakePlesk {
    /// Starts with admin `admin`, password `password` and the service plans given.
    pub async fn start(password: &str, plans: &[&str], tls: bool) -> anyhow::Result<Self> {
        let cert = if tls {
            Some(Cert::self_signed()?)
        } else {
            None
        };
        let state = Arc::new(Mutex::new(PleskState {
            login: "admin".into(),
            password: password.into(),
            plans: plans
                .iter()
                .enumerate()
                .map(|(i, p)| ((*p).to_owned(), format!("5c0f2a3e-0000-4000-8000-{i:012}")))
                .collect(),
            next_id: 1,
            ..Default::default()
        }));
        let s = state.clone();
        let server = HttpServer::start(cert.as_ref(), Arc::new(move |r| handle(&s, r))).await?;
        Ok(FakePlesk {
            server: Arc::new(server),
            cert,
            state,
        })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn state(&self) -> MutexGuard<'_, PleskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn customer(&self, login: &str) -> Option<PleskCustomer> {
        self.state().customers.get(login).cloned()
    }

    pub fn webspace(&self, name: &str) -> Option<Webspace> {
        self.state().webspaces.get(name).cloned()
    }

    /// A customer someone else made, with a subscription for `domain`.
    pub fn add_foreign_customer(&self, login: &str, domain: &str) {
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.customers.insert(
            login.into(),
            PleskCustomer {
                id,
                pname: "Someone Else".into(),
                email: format!("owner@{domain}"),
                passwd: "x".into(),
                status: "0".into(),
            },
        );
        st.webspaces.insert(
            domain.into(),
            Webspace {
                owner_login: login.into(),
                plan: "other".into(),
                ip: IP.into(),
                ftp_login: login.into(),
            },
        );
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The recorded packets of one operation (`customer.add`, `webspace.add`, …).
    pub fn requests_to(&self, op: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.param("op") == Some(op))
            .collect()
    }

    pub fn drop_next_create(&self) {
        self.state().drop_next_create = true;
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The text of the first `<name>…</name>`.
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let rest = xml.get(start..)?;
    let end = rest.find(&close)?;
    rest.get(..end).map(unescape)
}

/// The operation of a packet: `customer.add`, `server.create_session`, …
fn operation(xml: &str) -> String {
    for family in ["customer", "webspace", "service-plan", "ip", "server"] {
        let Some(inner) = tag(xml, family) else {
            if xml.contains(&format!("<{family}><get/>")) {
                return format!("{family}.get");
            }
            continue;
        };
        let op = inner
            .trim_start()
            .strip_prefix('<')
            .map(|r| {
                r.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect::<String>()
            })
            .unwrap_or_default();
        return format!("{family}.{op}");
    }
    String::new()
}

fn wrap(op: &str, result: &str) -> Reply {
    let (family, verb) = op.split_once('.').unwrap_or((op, ""));
    Reply::Send(Response::new(
        200,
        "text/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><packet version=\"1.6.9.1\"><{family}><{verb}>{result}</{verb}></{family}></packet>"
        ),
    ))
}

fn ok(op: &str, inner: &str) -> Reply {
    wrap(op, &format!("<result><status>ok</status>{inner}</result>"))
}

fn error(op: &str, code: u32, text: &str) -> Reply {
    wrap(
        op,
        &format!(
            "<result><status>error</status><errcode>{code}</errcode><errtext>{}</errtext></result>",
            escape(text)
        ),
    )
}

fn handle(state: &Mutex<PleskState>, r: Request) -> Reply {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let st: &mut PleskState = &mut guard;
    let xml = r.body_text();
    let op = operation(&xml);
    st.requests.push(Recorded {
        method: r.method.clone(),
        path: r.path.clone(),
        params: vec![("op".into(), op.clone()), ("xml".into(), xml.clone())],
    });
    if r.path != "/enterprise/control/agent.php" || r.method != "POST" {
        return Reply::Send(Response::new(404, "text/plain", "Not found"));
    }
    let authed = (r.header("HTTP_AUTH_LOGIN") == Some(st.login.as_str())
        && r.header("HTTP_AUTH_PASSWD") == Some(st.password.as_str()))
        || r.header("KEY") == Some(st.password.as_str());
    if !authed {
        return Reply::Send(Response::new(
            200,
            "text/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><packet version=\"1.6.9.1\"><system><status>error</status><errcode>1001</errcode><errtext>Authentication failed - wrong password.</errtext></system></packet>",
        ));
    }
    let t = |name: &str| tag(&xml, name).unwrap_or_default();
    match op.as_str() {
        "server.get" => ok(&op, "<gen_info><server_name>fake-plesk.test</server_name></gen_info>"),
        "ip.get" => ok(&op, &format!("<addresses><ip_info><ip_address>{IP}</ip_address><type>shared</type></ip_info></addresses>")),
        "customer.add" => {
            let login = t("login");
            if st.customers.contains_key(&login) {
                return error(&op, 1007, &format!("User account {login} already exists."));
            }
            if t("passwd").len() < 8 {
                return error(&op, 1019, "The password is too short.");
            }
            let id = st.next_id;
            st.next_id += 1;
            st.customers.insert(
                login,
                PleskCustomer {
                    id,
                    pname: t("pname"),
                    email: t("email"),
                    passwd: t("passwd"),
                    status: "0".into(),
                },
            );
            ok(&op, &format!("<id>{id}</id><guid>c-{id}</guid>"))
        }
        "customer.get" => {
            let login = t("login");
            match st.customers.get(&login) {
                None => error(&op, 1013, "customer does not exist"),
                Some(c) => ok(
                    &op,
                    &format!(
                        "<filter-id>{l}</filter-id><id>{id}</id><data><gen_info><pname>{p}</pname><login>{l}</login><status>{s}</status><email>{e}</email></gen_info></data>",
                        l = escape(&login),
                        id = c.id,
                        p = escape(&c.pname),
                        s = c.status,
                        e = escape(&c.email)
                    ),
                ),
            }
        }
        "customer.set" => {
            let login = t("login");
            let status = tag(&xml, "status");
            let passwd = tag(&xml, "passwd");
            match st.customers.get_mut(&login) {
                None => error(&op, 1013, "customer does not exist"),
                Some(c) => {
                    if let Some(s) = status {
                        if s != "0" && s != "16" {
                            return error(&op, 1014, "status is 0 or 16");
                        }
                        c.status = s;
                    }
                    if let Some(p) = passwd {
                        if p.len() < 8 {
                            return error(&op, 1019, "The password is too short.");
                        }
                        c.passwd = p;
                    }
                    ok(&op, &format!("<filter-id>{}</filter-id><id>{}</id>", escape(&login), c.id))
                }
            }
        }
        "customer.del" => {
            let login = t("login");
            match st.customers.remove(&login) {
                None => error(&op, 1013, "customer does not exist"),
                Some(c) => {
                    st.webspaces.retain(|_, w| w.owner_login != login);
                    ok(&op, &format!("<filter-id>{}</filter-id><id>{}</id>", escape(&login), c.id))
                }
            }
        }
        "webspace.get" => {
            let owner = t("owner-login");
            let mine: Vec<String> = st
                .webspaces
                .iter()
                .filter(|(_, w)| w.owner_login == owner)
                .map(|(name, _)| {
                    // `name` is what Plesk displays (an IDN in Unicode), `ascii-name` its
                    // ASCII form (domainGenInfoType, siteGenInfoType).
                    let (shown, _) = idna::domain_to_unicode(name);
                    format!(
                        "<result><status>ok</status><filter-id>{o}</filter-id><data><gen_info><name>{n}</name><ascii-name>{a}</ascii-name><owner-login>{o}</owner-login></gen_info></data></result>",
                        o = escape(&owner),
                        n = escape(&shown),
                        a = escape(name)
                    )
                })
                .collect();
            if mine.is_empty() {
                error(&op, 1013, "webspace does not exist")
            } else {
                wrap(&op, &mine.concat())
            }
        }
        "webspace.add" => {
            let name = t("name").to_ascii_lowercase();
            let owner = t("owner-login");
            let plan = t("plan-name");
            if !st.customers.contains_key(&owner) {
                return error(&op, 1015, &format!("Owner {owner} does not exist."));
            }
            if st.webspaces.contains_key(&name) {
                return error(&op, 1007, &format!("Domain {name} already exists."));
            }
            if !st.plans.contains_key(&plan) {
                return error(&op, 1013, &format!("Service plan {plan} not found."));
            }
            if t("htype") != "vrt_hst" || t("ip_address") != IP {
                return error(&op, 1014, "htype vrt_hst and a server IP are required.");
            }
            st.webspaces.insert(
                name,
                Webspace {
                    owner_login: owner.clone(),
                    plan,
                    ip: IP.into(),
                    ftp_login: owner,
                },
            );
            if std::mem::take(&mut st.drop_next_create) {
                return Reply::Drop;
            }
            let id = st.next_id;
            st.next_id += 1;
            ok(&op, &format!("<id>{id}</id><guid>w-{id}</guid>"))
        }
        "webspace.switch-subscription" => {
            let name = t("name");
            let guid = t("plan-guid");
            let Some(plan) = st.plans.iter().find(|(_, g)| **g == guid).map(|(n, _)| n.clone()) else {
                return error(&op, 1013, "Service plan not found.");
            };
            match st.webspaces.get_mut(&name) {
                None => error(&op, 1013, "webspace does not exist"),
                Some(w) => {
                    w.plan = plan;
                    ok(&op, &format!("<filter-id>{}</filter-id>", escape(&name)))
                }
            }
        }
        "service-plan.get" => {
            let name = t("name");
            match st.plans.get(&name) {
                None => error(&op, 1013, "Service plan not found."),
                Some(g) => ok(&op, &format!("<id>1</id><name>{}</name><guid>{g}</guid>", escape(&name))),
            }
        }
        "server.create_session" => {
            let login = t("login");
            if !st.customers.contains_key(&login) {
                return error(&op, 1013, "customer does not exist");
            }
            if t("user_ip").is_empty() {
                return error(&op, 1014, "user_ip is required");
            }
            let id = format!("{:032x}", st.sessions.len() + 1);
            st.sessions.push(id.clone());
            ok(&op, &format!("<id>{id}</id>"))
        }
        _ => error(&op, 1014, "Parser error: request is invalid."),
    }
}
