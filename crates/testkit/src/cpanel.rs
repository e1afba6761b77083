//! A stateful fake WHM (cPanel's admin API 1), following https://api.docs.cpanel.net/whm/introduction,
//! /whm/tokens, /openapi/whm/operation/create_user_session and cPanel's OpenAPI
//! (`cpanel-account-creation-api-openapi.yml`): `GET /json-api/<function>?api.version=1&…`
//! (or the same parameters as a `POST` form, which WHM also takes),
//! header `Authorization: whm USER:TOKEN`; answers `{"metadata":{"result":1|0,"reason":…,
//! "command":…,"version":1},"data":…}`, errors as HTTP 200 with `result = 0`. Functions:
//! `version`, `accountsummary`, `createacct` (username ≤ 16, lowercase, starting with a
//! letter, not with `test`, not reserved, its first 8 characters unique), `suspendacct`,
//! `unsuspendacct`, `removeacct`, `changepackage`, `passwd`, `create_user_session`. Without
//! `api.version=1` it answers in API 0's shape (`result[0].status/statusmsg`). A wrong token
//! gets HTTP 403 "Access denied". Every request is recorded;
//! [`FakeWhm::drop_next_create`] commits the next createacct, then drops the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::tls::{param, Cert, HttpServer, Recorded, Reply, Request, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhmAccount {
    pub domain: String,
    pub owner: String,
    pub plan: String,
    pub suspended: bool,
    pub suspend_reason: String,
    pub password: String,
    pub contactemail: String,
}

#[derive(Debug, Default)]
pub struct WhmState {
    pub user: String,
    pub token: String,
    pub accounts: BTreeMap<String, WhmAccount>,
    pub packages: BTreeSet<String>,
    pub requests: Vec<Recorded>,
    pub drop_next_create: bool,
    pub sessions: usize,
    /// Accounts WHM is still creating (after the caller's request timed out): not listed
    /// yet, while their name already "exists" to another `createacct`.
    pub creating: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct FakeWhm {
    pub server: Arc<HttpServer>,
    pub cert: Option<Cert>,
    state: Arc<Mutex<WhmState>>,
}

/// cPanel's reserved usernames (a subset of its documented list).
pub const RESERVED: &[&str] = &[
    "all", "admin", "cpanel", "root", "test", "virtfs", "mysql", "postgres", "nobody", "www",
    "ftp", "mail", "apache", "nginx", "named",
];

impl FakeWhm {
    /// Starts with user `root`, API token `token` and the packages given.
    pub async fn start(token: &str, packages: &[&str], tls: bool) -> anyhow::Result<Self> {
        let cert = if tls {
            Some(Cert::self_signed()?)
        } else {
            None
        };
        let state = Arc::new(Mutex::new(WhmState {
            user: "root".into(),
            token: token.into(),
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }));
        let s = state.clone();
        let server = HttpServer::start(cert.as_ref(), Arc::new(move |r| handle(&s, r))).await?;
        Ok(FakeWhm {
            server: Arc::new(server),
            cert,
            state,
        })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn state(&self) -> MutexGuard<'_, WhmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn account(&self, user: &str) -> Option<WhmAccount> {
        self.state().accounts.get(user).cloned()
    }

    /// An account a reseller made (for name clashes).
    pub fn add_foreign_account(&self, user: &str, domain: &str, owner: &str) {
        self.state().accounts.insert(
            user.into(),
            WhmAccount {
                domain: domain.into(),
                owner: owner.into(),
                plan: "other".into(),
                suspended: false,
                suspend_reason: String::new(),
                password: "x".into(),
                contactemail: String::new(),
            },
        );
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    pub fn requests_to(&self, function: &str) -> Vec<Recorded> {
        let path = format!("/json-api/{function}");
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn drop_next_create(&self) {
        self.state().drop_next_create = true;
    }

    /// WHM is still creating `user`'s account for `domain` (FOSSBilling issue 1086: it
    /// goes on after the request timed out): `accountsummary` does not know it yet, and a
    /// second `createacct` is told its group already exists, until [`FakeWhm::created`].
    pub fn still_creating(&self, user: &str, domain: &str, plan: &str) {
        let mut st = self.state();
        let owner = st.user.clone();
        st.accounts.insert(
            user.into(),
            WhmAccount {
                domain: domain.into(),
                owner,
                plan: plan.into(),
                suspended: false,
                suspend_reason: String::new(),
                password: "x".into(),
                contactemail: String::new(),
            },
        );
        st.creating.insert(user.into());
    }

    /// The creation [`FakeWhm::still_creating`] began has finished.
    pub fn created(&self, user: &str) {
        self.state().creating.remove(user);
    }
}

fn reply(command: &str, result: Result<Value, String>) -> Reply {
    let body = match result {
        Ok(data) => json!({
            "metadata": { "result": 1, "reason": "OK", "command": command, "version": 1 },
            "data": data,
        }),
        Err(reason) => json!({
            "metadata": { "result": 0, "reason": reason, "command": command, "version": 1 },
        }),
    };
    Reply::Send(Response::new(200, "application/json", body.to_string()))
}

fn handle(state: &Mutex<WhmState>, r: Request) -> Reply {
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let st: &mut WhmState = &mut guard;
    let params = r.params();
    st.requests.push(Recorded {
        method: r.method.clone(),
        path: r.path.clone(),
        params: params.clone(),
    });
    let expected = format!("whm {}:{}", st.user, st.token);
    if r.header("authorization") != Some(expected.as_str()) {
        return Reply::Send(Response::new(
            403,
            "text/plain",
            "Access denied: the API token is not valid",
        ));
    }
    let Some(function) = r.path.strip_prefix("/json-api/").map(str::to_owned) else {
        return Reply::Send(Response::new(404, "text/plain", "Not found"));
    };
    if param(&params, "api.version") != Some("1") {
        let body =
            json!({ "result": [{ "status": 0, "statusmsg": "API 0 is not served by this fake" }] });
        return Reply::Send(Response::new(200, "application/json", body.to_string()));
    }
    let p = |name: &str| param(&params, name).unwrap_or("").to_owned();
    let owner = st.user.clone();
    let missing = |user: &str| Err(format!("Account \"{user}\" does not exist."));
    let result = match function.as_str() {
        "version" => Ok(json!({ "version": "11.126.0.7" })),
        "accountsummary" => {
            // By `user`, or by `domain` (the account whose main domain it is), as WHM
            // takes either.
            let user = match (p("user"), p("domain").to_ascii_lowercase()) {
                (u, d) if u.is_empty() && !d.is_empty() => st
                    .accounts
                    .iter()
                    .find(|(_, a)| a.domain == d)
                    .map_or(d, |(u, _)| u.clone()),
                (u, _) => u,
            };
            match st
                .accounts
                .get(&user)
                .filter(|_| !st.creating.contains(&user))
            {
                None => missing(&user),
                Some(a) => Ok(json!({ "acct": [{
                    "user": user, "domain": a.domain, "owner": a.owner, "plan": a.plan,
                    "suspended": i64::from(a.suspended), "suspendreason": a.suspend_reason,
                    "email": a.contactemail,
                }] })),
            }
        }
        "createacct" => {
            let user = p("username").to_ascii_lowercase();
            let domain = p("domain").to_ascii_lowercase();
            let prefix: String = user.chars().take(8).collect();
            if user.is_empty()
                || user.len() > 16
                || !user.starts_with(|c: char| c.is_ascii_lowercase())
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                Err(format!("The username \"{user}\" is invalid: up to 16 lowercase letters and digits, starting with a letter."))
            } else if user.starts_with("test") || RESERVED.contains(&user.as_str()) {
                Err(format!("The username \"{user}\" is reserved."))
            } else if st.accounts.contains_key(&user) {
                Err(format!(
                    "Sorry, a group for that username already exists. ({user})"
                ))
            } else if let Some(other) = st
                .accounts
                .keys()
                .find(|u| u.chars().take(8).collect::<String>() == prefix)
            {
                Err(format!("The first 8 characters of \"{user}\" must be unique: they match the account \"{other}\"."))
            } else if st.accounts.values().any(|a| a.domain == domain) {
                Err(format!(
                    "The domain \"{domain}\" already exists in the userdata."
                ))
            } else if !st.packages.contains(&p("plan")) {
                Err(format!("The package \"{}\" does not exist.", p("plan")))
            } else if too_weak(&p("password")) {
                Err(WEAK_PASSWORD.to_owned())
            } else {
                st.accounts.insert(
                    user.clone(),
                    WhmAccount {
                        domain: domain.clone(),
                        owner: owner.clone(),
                        plan: p("plan"),
                        suspended: false,
                        suspend_reason: String::new(),
                        password: p("password"),
                        contactemail: p("contactemail"),
                    },
                );
                if std::mem::take(&mut st.drop_next_create) {
                    return Reply::Drop;
                }
                Ok(
                    json!({ "ip": "127.0.0.3", "nameserver": "ns1.example.net", "nameserver2": "ns2.example.net", "package": p("plan") }),
                )
            }
        }
        "suspendacct"
        | "unsuspendacct"
        | "removeacct"
        | "changepackage"
        | "passwd"
        | "create_user_session" => {
            // `removeacct` takes `username` (its `user` is deprecated in cPanel's API
            // document); the others `user`.
            let user = if function == "removeacct" {
                p("username")
            } else {
                p("user")
            };
            if !st.accounts.contains_key(&user) {
                missing(&user)
            } else {
                let pkg_ok = function != "changepackage" || st.packages.contains(&p("pkg"));
                let sessions = st.sessions + 1;
                let a = st.accounts.get_mut(&user);
                match (function.as_str(), a) {
                    (_, None) => missing(&user),
                    ("suspendacct", Some(a)) => {
                        a.suspended = true;
                        a.suspend_reason = p("reason");
                        Ok(Value::Null)
                    }
                    ("unsuspendacct", Some(a)) => {
                        a.suspended = false;
                        a.suspend_reason.clear();
                        Ok(Value::Null)
                    }
                    ("changepackage", Some(_)) if !pkg_ok => {
                        Err(format!("The package \"{}\" does not exist.", p("pkg")))
                    }
                    ("changepackage", Some(a)) => {
                        a.plan = p("pkg");
                        Ok(Value::Null)
                    }
                    ("passwd", Some(a)) => {
                        if too_weak(&p("password")) {
                            Err(WEAK_PASSWORD.to_owned())
                        } else {
                            a.password = p("password");
                            Ok(json!({ "app": "system" }))
                        }
                    }
                    ("create_user_session", Some(_)) => {
                        if p("service") != "cpaneld" {
                            Err("service must be cpaneld".to_owned())
                        } else {
                            st.sessions = sessions;
                            Ok(json!({
                                "url": format!("https://127.0.0.1:2083/cpsess{sessions:010}/login/?session={user}%3aabc%3acreate_user_session"),
                                "expires": 1_900_000_000, "service": "cpaneld", "session": format!("{user}:abc"),
                            }))
                        }
                    }
                    ("removeacct", Some(_)) => {
                        st.accounts.remove(&user);
                        Ok(Value::Null)
                    }
                    _ => Err("unknown".to_owned()),
                }
            }
        }
        other => Err(format!(
            "Unknown app (\"{other}\") requested for this version (1) of the API."
        )),
    };
    reply(&function, result)
}

/// WHM's refusal of a password below the server's minimum strength.
const WEAK_PASSWORD: &str = "Sorry, the password you selected cannot be used because it is too weak and would be too easy to guess. Please select a password with strength rating of 65 or higher.";

/// WHM scores a password (0 to 100) after a dictionary check (cracklib): one based on a
/// dictionary word scores 1, far below the usual minimum (50 to 65). Here: shorter than 8,
/// or holding one of a few dictionary words.
fn too_weak(password: &str) -> bool {
    let lower = password.to_ascii_lowercase();
    password.len() < 8
        || ["password", "qwerty", "letmein", "welcome", "admin"]
            .iter()
            .any(|w| lower.contains(w))
}
