//! A stateful fake DirectAdmin, following https://docs.directadmin.com/developer/api/legacy-api.html
//! and /developer/api/examples.html (the `CMD_API_*` commands, HTTP Basic auth with a login
//! key, `admin|user` to act as a user, url-encoded answers `error=0&text=…&details=…`, JSON
//! with `json=yes`, lists as `list[]=…`), and the calls FOSSBilling's and Paymenter's modules
//! make: `CMD_API_ACCOUNT_USER` (create), `CMD_API_SELECT_USERS` (suspend, unsuspend,
//! delete), `CMD_API_MODIFY_USER` (package), `CMD_API_USER_PASSWD`, `CMD_API_SHOW_USER_CONFIG`,
//! `CMD_API_SHOW_RESELLER_IPS`, `CMD_API_LOGIN_KEYS` (one-time login URL),
//! `CMD_API_LOGIN_TEST`. A wrong login gets the HTML login page (HTTP 200), as DirectAdmin
//! does. Users, packages, suspension and owner (`creator`) are kept; every request is
//! recorded; [`FakeDirectAdmin::drop_next_create`] commits the next create and then drops
//! the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::tls::{param, Cert, HttpServer, Recorded, Reply, Request, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaUser {
    pub domain: String,
    pub creator: String,
    pub package: String,
    pub suspended: bool,
    pub password: String,
    pub email: String,
    pub ip: String,
}

#[derive(Debug, Default)]
pub struct DaState {
    pub admin: String,
    pub login_key: String,
    pub users: BTreeMap<String, DaUser>,
    pub packages: BTreeSet<String>,
    pub requests: Vec<Recorded>,
    pub drop_next_create: bool,
    pub login_urls: Vec<String>,
    /// Commands the login key may not run: DirectAdmin answers them with plain text, no
    /// `error` field ("... cannot be executed because it does not exist in your
    /// authority level", as FOSSBilling's DirectAdmin adapter checks for).
    pub not_allowed: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct FakeDirectAdmin {
    pub server: Arc<HttpServer>,
    pub cert: Option<Cert>,
    state: Arc<Mutex<DaState>>,
}

pub const IP: &str = "127.0.0.2";
/// Another of the reseller's IPs, listed first and owned by another user (a dedicated IP):
/// new users may not be put on it.
pub const OWNED_IP: &str = "127.0.0.9";

impl FakeDirectAdmin {
    /// Starts over TLS (a fresh self-signed certificate) with admin `admin`, login key
    /// `key`, and the packages given.
    pub async fn start(key: &str, packages: &[&str], tls: bool) -> anyhow::Result<Self> {
        let cert = if tls {
            Some(Cert::self_signed()?)
        } else {
            None
        };
        Self::start_with(key, packages, cert).await
    }

    /// The same with the certificate given (`None`: plain HTTP).
    pub async fn start_with(
        key: &str,
        packages: &[&str],
        cert: Option<Cert>,
    ) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(DaState {
            admin: "admin".into(),
            login_key: key.into(),
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }));
        let s = state.clone();
        let server = HttpServer::start(cert.as_ref(), Arc::new(move |r| handle(&s, r))).await?;
        Ok(FakeDirectAdmin {
            server: Arc::new(server),
            cert,
            state,
        })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn state(&self) -> MutexGuard<'_, DaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn user(&self, name: &str) -> Option<DaUser> {
        self.state().users.get(name).cloned()
    }

    /// A user another reseller made (for name clashes).
    pub fn add_foreign_user(&self, name: &str, domain: &str, creator: &str) {
        self.state().users.insert(
            name.into(),
            DaUser {
                domain: domain.into(),
                creator: creator.into(),
                package: "other".into(),
                suspended: false,
                password: "x".into(),
                email: format!("root@{domain}"),
                ip: IP.into(),
            },
        );
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The recorded requests to one command.
    pub fn requests_to(&self, command: &str) -> Vec<Recorded> {
        let path = format!("/{command}");
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The next create is committed, then the connection is dropped unanswered.
    pub fn drop_next_create(&self) {
        self.state().drop_next_create = true;
    }
}

fn encoded(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn answer(json: bool, error: bool, text: &str, details: &str) -> Reply {
    let body = if json {
        serde_json::json!({ "error": if error { "1" } else { "0" }, "text": text, "details": details })
            .to_string()
    } else {
        encoded(&[
            ("error", if error { "1" } else { "0" }),
            ("text", text),
            ("details", details),
        ])
    };
    Reply::Send(Response::new(
        200,
        if json {
            "application/json"
        } else {
            "text/plain"
        },
        body,
    ))
}

const LOGIN_PAGE: &str = "<html><head><title>DirectAdmin Login</title></head><body><form action=\"/CMD_LOGIN\" method=\"post\"><input name=\"username\"><input type=\"password\" name=\"password\"></form></body></html>";

fn valid_username(u: &str) -> bool {
    (3..=10).contains(&u.len())
        && u.starts_with(|c: char| c.is_ascii_lowercase())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn handle(state: &Mutex<DaState>, r: Request) -> Reply {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let st: &mut DaState = &mut guard;
    let params = r.params();
    st.requests.push(Recorded {
        method: r.method.clone(),
        path: r.path.clone(),
        params: params.clone(),
    });
    let json = param(&params, "json") == Some("yes");
    // Basic auth: `admin` or `admin|user`, with the login key.
    let Some((login, key)) = r.basic_auth() else {
        return Reply::Send(Response::new(200, "text/html", LOGIN_PAGE));
    };
    let (who, as_user) = match login.split_once('|') {
        Some((a, u)) => (a.to_owned(), Some(u.to_owned())),
        None => (login.clone(), None),
    };
    if who != st.admin || key != st.login_key {
        return Reply::Send(Response::new(200, "text/html", LOGIN_PAGE));
    }
    let p = |name: &str| param(&params, name).unwrap_or("").to_owned();
    let command = r.path.trim_start_matches('/').to_owned();
    if st.not_allowed.contains(&command) {
        return Reply::Send(Response::new(
            200,
            "text/plain",
            format!(
                "{command} cannot be executed because it does not exist in your authority level"
            ),
        ));
    }
    match command.as_str() {
        "CMD_API_LOGIN_TEST" => answer(json, false, "Login OK", ""),
        // The list (`list[]`), or with `action=all` each IP's details keyed by the IP with
        // `_` for `.` (`status`: `server`, `shared`, `free` or `owned`, `value`: its owner),
        // as DirectAdmin answers.
        "CMD_API_SHOW_RESELLER_IPS" if p("action") == "all" => {
            let owned = encoded(&[
                ("status", "owned"),
                ("value", "someone"),
                ("reseller", "admin"),
            ]);
            let shared = encoded(&[("status", "shared"), ("value", ""), ("reseller", "admin")]);
            Reply::Send(Response::new(
                200,
                "text/plain",
                encoded(&[
                    (&OWNED_IP.replace('.', "_"), &owned),
                    (&IP.replace('.', "_"), &shared),
                ]),
            ))
        }
        "CMD_API_SHOW_RESELLER_IPS" => Reply::Send(Response::new(
            200,
            "text/plain",
            encoded(&[("list[]", OWNED_IP), ("list[]", IP)]),
        )),
        "CMD_API_SHOW_USER_CONFIG" => {
            let user = p("user");
            match st.users.get(&user) {
                None => answer(
                    json,
                    true,
                    "Unable to show user",
                    &format!("The user {user} does not exist"),
                ),
                Some(u) => {
                    let suspended = if u.suspended { "yes" } else { "no" };
                    let pairs = [
                        ("username", user.as_str()),
                        ("domain", u.domain.as_str()),
                        ("creator", u.creator.as_str()),
                        ("package", u.package.as_str()),
                        ("suspended", suspended),
                        ("email", u.email.as_str()),
                        ("ip", u.ip.as_str()),
                        ("usertype", "user"),
                    ];
                    let body = if json {
                        serde_json::Value::Object(
                            pairs
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                                .collect(),
                        )
                        .to_string()
                    } else {
                        encoded(&pairs)
                    };
                    Reply::Send(Response::new(200, "text/plain", body))
                }
            }
        }
        "CMD_API_ACCOUNT_USER" => {
            if r.method != "POST" || p("action") != "create" || p("add") != "Submit" {
                return answer(
                    json,
                    true,
                    "Cannot create user",
                    "action=create&add=Submit expected (POST)",
                );
            }
            let user = p("username");
            let domain = p("domain").to_ascii_lowercase();
            if !valid_username(&user) {
                return answer(json, true, "Unable to create user", "Invalid username: 3 to 10 lowercase letters and digits, starting with a letter");
            }
            if st.users.contains_key(&user) {
                return answer(
                    json,
                    true,
                    "Unable to create user",
                    &format!("That username already exists ({user})"),
                );
            }
            if st.users.values().any(|u| u.domain == domain) {
                return answer(
                    json,
                    true,
                    "Unable to create user",
                    "That domain already exists",
                );
            }
            if p("passwd").len() < 6 || p("passwd") != p("passwd2") {
                return answer(
                    json,
                    true,
                    "Unable to create user",
                    "Passwords do not match or are too short",
                );
            }
            if !st.packages.contains(&p("package")) {
                return answer(
                    json,
                    true,
                    "Unable to create user",
                    &format!("Package {} does not exist", p("package")),
                );
            }
            if p("ip") == OWNED_IP {
                return answer(
                    json,
                    true,
                    "Unable to create user",
                    "That IP is owned by another user",
                );
            }
            if p("ip") != IP {
                return answer(
                    json,
                    true,
                    "Unable to create user",
                    "The IP is not one of your IPs",
                );
            }
            let creator = who.clone();
            st.users.insert(
                user.clone(),
                DaUser {
                    domain,
                    creator,
                    package: p("package"),
                    suspended: false,
                    password: p("passwd"),
                    email: p("email"),
                    ip: p("ip"),
                },
            );
            if std::mem::take(&mut st.drop_next_create) {
                return Reply::Drop;
            }
            answer(json, false, "User created", &format!("User {user} created"))
        }
        "CMD_API_SELECT_USERS" => {
            let user = p("select0");
            let Some(u) = st.users.get_mut(&user).filter(|u| u.creator == who) else {
                return answer(
                    json,
                    true,
                    "Error",
                    &format!("User {user} does not exist in your authority level"),
                );
            };
            if p("confirmed") == "Confirm" && p("delete") == "yes" {
                st.users.remove(&user);
                return answer(
                    json,
                    false,
                    "Users deleted",
                    &format!("User {user} removed"),
                );
            }
            if p("location") != "CMD_SELECT_USERS" {
                return answer(json, true, "Error", "location=CMD_SELECT_USERS expected");
            }
            match p("suspend").as_str() {
                "Suspend" => {
                    u.suspended = true;
                    answer(json, false, "Success", "Users suspended")
                }
                "Unsuspend" => {
                    u.suspended = false;
                    answer(json, false, "Success", "Users unsuspended")
                }
                _ => answer(json, true, "Error", "Nothing to do"),
            }
        }
        "CMD_API_MODIFY_USER" => {
            let user = p("user");
            let package = p("package");
            if p("action") != "package" {
                return answer(json, true, "Error", "action=package expected");
            }
            if !st.packages.contains(&package) {
                return answer(
                    json,
                    true,
                    "Error",
                    &format!("Package {package} does not exist"),
                );
            }
            match st.users.get_mut(&user).filter(|u| u.creator == who) {
                None => answer(
                    json,
                    true,
                    "Error",
                    &format!("User {user} does not exist in your authority level"),
                ),
                Some(u) => {
                    u.package = package;
                    answer(json, false, "Package changed", "")
                }
            }
        }
        "CMD_API_USER_PASSWD" => {
            let user = p("username");
            if p("passwd").len() < 6 || p("passwd") != p("passwd2") {
                return answer(
                    json,
                    true,
                    "Error",
                    "Passwords do not match or are too short",
                );
            }
            match st.users.get_mut(&user).filter(|u| u.creator == who) {
                None => answer(
                    json,
                    true,
                    "Error",
                    &format!("User {user} does not exist in your authority level"),
                ),
                Some(u) => {
                    u.password = p("passwd");
                    answer(json, false, "Password changed", "")
                }
            }
        }
        "CMD_API_LOGIN_KEYS" => {
            let Some(user) = as_user.filter(|u| st.users.get(u).is_some_and(|x| x.creator == who))
            else {
                return answer(
                    json,
                    true,
                    "Error",
                    "Login keys are created as the user (admin|user)",
                );
            };
            if p("action") != "create" || p("type") != "one_time_url" {
                return answer(
                    json,
                    true,
                    "Error",
                    "action=create&type=one_time_url expected",
                );
            }
            let n = st.login_urls.len() + 1;
            let url = format!("https://127.0.0.1:2222/api/login/url?key={user}-{n:08}");
            st.login_urls.push(url.clone());
            answer(json, false, "Login URL created", &url)
        }
        _ => Reply::Send(Response::new(404, "text/plain", "Not found")),
    }
}
