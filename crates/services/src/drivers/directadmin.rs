//! The `directadmin` driver: DirectAdmin's HTTP API (`CMD_API_*`, HTTP Basic auth with a
//! login key), as documented at https://docs.directadmin.com/developer/api/legacy-api.html
//! and used by FOSSBilling's and Paymenter's modules. Answers are url-encoded
//! (`error=0&text=…&details=…`) unless `json=yes` is asked; both are read. A wrong login
//! answers with the HTML login page, which is reported as such.
//!
//! Create is idempotent: the user is looked up first (`CMD_API_SHOW_USER_CONFIG`); one with
//! our domain, made by our login, is adopted; one with another domain or owner is refused
//! for good (never "domain exists, so it worked").

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::http::{send, Panel};
use super::{panel_username, Account, DriverError, PanelFactory, Provisioner, ServerAccess};

/// The panel's usual HTTPS port.
pub const PORT: u16 = 2222;

#[derive(Debug)]
pub struct Factory;

impl PanelFactory for Factory {
    fn name(&self) -> &str {
        "directadmin"
    }

    fn connect(&self, server: &ServerAccess) -> Result<Arc<dyn Provisioner>, DriverError> {
        Ok(Arc::new(DirectAdmin {
            panel: Panel::connect(server, PORT)?,
        }))
    }
}

#[derive(Debug)]
pub struct DirectAdmin {
    panel: Panel,
}

/// A DirectAdmin answer, url-encoded or JSON, as key → value.
pub fn parse_answer(body: &str) -> Result<HashMap<String, String>, DriverError> {
    let t = body.trim_start();
    if t.starts_with('<') {
        return Err(DriverError(
            "DirectAdmin answered with its login page: the user or login key is wrong".into(),
        ));
    }
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| DriverError(format!("DirectAdmin sent unreadable JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| DriverError("DirectAdmin sent JSON that is not an object".into()))?;
        return Ok(obj
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect());
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(t)
        .map_err(|e| DriverError(format!("DirectAdmin sent an unreadable answer: {e}")))?;
    Ok(pairs.into_iter().collect())
}

/// An answer without DirectAdmin's `error` field: what it began with, on one line.
fn unreadable(command: &str, body: &str) -> DriverError {
    let start: String = body
        .chars()
        .take(160)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    DriverError(format!(
        "{command}: DirectAdmin answered without error=0 or error=1: {:?}",
        start.trim()
    ))
}

fn failed(m: &HashMap<String, String>) -> Option<String> {
    let error = m.get("error").map(String::as_str).unwrap_or("0");
    if error == "0" {
        return None;
    }
    let text = m.get("text").cloned().unwrap_or_default();
    let details = m.get("details").cloned().unwrap_or_default();
    Some(if details.is_empty() {
        text
    } else {
        format!("{text}: {details}")
    })
}

/// What `CMD_API_SHOW_USER_CONFIG` says of a user.
struct UserConfig {
    domain: String,
    creator: String,
    suspended: bool,
}

impl DirectAdmin {
    fn user(&self) -> &str {
        &self.panel.creds.user
    }

    /// Posts a command. The outer error is the transport's (or a wrong login); the inner
    /// one is the panel's own answer (`error=1`).
    async fn ask(
        &self,
        login: &str,
        command: &str,
        form: &[(&str, &str)],
    ) -> Result<Result<HashMap<String, String>, String>, DriverError> {
        let req = self
            .panel
            .client
            .post(format!("{}/{command}", self.panel.base))
            .basic_auth(login, Some(&self.panel.creds.secret))
            .form(form);
        let (status, body) = send(req).await?;
        if (300..400).contains(&status) {
            return Err(DriverError(format!(
                "{command}: HTTP {status}, a redirect and not an answer (a login key not \
                 allowed this command?)"
            )));
        }
        // Anything but a readable answer (plain text such as "... cannot be executed
        // because it does not exist in your authority level", a login page) is an error:
        // read as no error at all, it reported a suspension or a termination done that
        // never happened (found by review against DirectAdmin's documentation).
        let m = parse_answer(&body)?;
        if let Some(e) = failed(&m) {
            return Ok(Err(format!("{command}: {e}")));
        }
        if status >= 400 {
            return Err(DriverError(format!("{command}: HTTP {status}")));
        }
        if !m.contains_key("error") {
            return Err(unreadable(command, &body));
        }
        Ok(Ok(m))
    }

    async fn call(
        &self,
        login: &str,
        command: &str,
        form: &[(&str, &str)],
    ) -> Result<HashMap<String, String>, DriverError> {
        self.ask(login, command, form).await?.map_err(DriverError)
    }

    /// The user's configuration, `None` when there is no such user.
    async fn show(&self, username: &str) -> Result<Option<UserConfig>, DriverError> {
        let req = self
            .panel
            .client
            .get(format!("{}/CMD_API_SHOW_USER_CONFIG", self.panel.base))
            .basic_auth(self.user(), Some(&self.panel.creds.secret))
            .query(&[("user", username), ("json", "yes")]);
        let (status, body) = send(req).await?;
        let m = parse_answer(&body)?;
        if let Some(e) = failed(&m) {
            if means_no_such_user(&e) {
                return Ok(None);
            }
            return Err(DriverError(format!("CMD_API_SHOW_USER_CONFIG: {e}")));
        }
        // A user's configuration has its domain and creator; anything else (the plain text
        // a login key not allowed this command gets, a login page) is no answer. Read as
        // one, it was a user of no domain made by nobody, and every order failed for good
        // as "already has a user … (made by )" (found by the panels audit).
        if status >= 300 || !m.contains_key("domain") || !m.contains_key("creator") {
            return Err(unreadable("CMD_API_SHOW_USER_CONFIG", &body));
        }
        Ok(Some(UserConfig {
            domain: m.get("domain").cloned().unwrap_or_default(),
            creator: m.get("creator").cloned().unwrap_or_default(),
            suspended: m.get("suspended").is_some_and(|s| s == "yes"),
        }))
    }

    /// The user must exist and be ours (our domain, our login made it).
    async fn ours(&self, a: &Account) -> Result<Option<UserConfig>, DriverError> {
        match self.show(&a.username).await? {
            None => Ok(None),
            Some(c) if c.domain.eq_ignore_ascii_case(&a.domain) && c.creator == self.user() => {
                Ok(Some(c))
            }
            Some(c) => Err(DriverError::refused(format!(
                "DirectAdmin already has a user {} for {} (made by {}), not this account",
                a.username, c.domain, c.creator
            ))),
        }
    }

    /// The IP a new user goes on: of the reseller's IPs (`action=all`, each with its
    /// `status`), a shared one, else the server's, else a free one, never one `owned` by
    /// another user (a dedicated IP; found by review: the first listed was taken, whatever
    /// it was). A panel that answers only the plain list gets its first IP.
    async fn reseller_ip(&self) -> Result<String, DriverError> {
        let req = self
            .panel
            .client
            .get(format!(
                "{}/CMD_API_SHOW_RESELLER_IPS?action=all",
                self.panel.base
            ))
            .basic_auth(self.user(), Some(&self.panel.creds.secret));
        let (_, body) = send(req).await?;
        let pairs: Vec<(String, String)> = if body.trim_start().starts_with('<') {
            parse_answer(&body).map(|_| vec![])?
        } else {
            serde_urlencoded::from_str(body.trim())
                .map_err(|e| DriverError(format!("CMD_API_SHOW_RESELLER_IPS: {e}")))?
        };
        let m: HashMap<String, String> = pairs.iter().cloned().collect();
        if let Some(e) = failed(&m) {
            return Err(DriverError(format!("CMD_API_SHOW_RESELLER_IPS: {e}")));
        }
        if let Some((_, first)) = pairs.iter().find(|(k, _)| k == "list[]") {
            return Ok(first.clone());
        }
        // `1_2_3_4=status=shared&value=…`: the IP (its dots written `_`), its details.
        let statuses: Vec<(String, String)> = pairs
            .iter()
            .filter_map(|(ip, details)| {
                let d: HashMap<String, String> = serde_urlencoded::from_str(details).ok()?;
                let ip = if ip.contains(':') {
                    ip.clone()
                } else {
                    ip.replace('_', ".")
                };
                ip.parse::<std::net::IpAddr>().ok()?;
                Some((ip, d.get("status").cloned().unwrap_or_default()))
            })
            .collect();
        ["shared", "server", "free"]
            .iter()
            .find_map(|want| {
                statuses
                    .iter()
                    .find(|(_, s)| s == want)
                    .map(|(ip, _)| ip.clone())
            })
            .ok_or_else(|| {
                DriverError(
                    "DirectAdmin lists no shared, server or free IP address for new users (only \
                     IPs owned by other users)"
                        .into(),
                )
            })
    }

    async fn select_users(
        &self,
        username: &str,
        action: &[(&str, &str)],
    ) -> Result<(), DriverError> {
        let mut form = vec![("location", "CMD_SELECT_USERS")];
        form.extend_from_slice(action);
        form.push(("select0", username));
        self.call(self.user(), "CMD_API_SELECT_USERS", &form)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Provisioner for DirectAdmin {
    fn name(&self) -> &str {
        "directadmin"
    }

    fn username(&self, domain: &str, legacy_id: i64) -> String {
        panel_username(domain, legacy_id)
    }

    async fn create(&self, a: &Account) -> Result<(), DriverError> {
        if self.ours(a).await?.is_some() {
            return Ok(()); // made by an earlier attempt whose answer was lost
        }
        let ip = self.reseller_ip().await?;
        let password = a.password.clone().unwrap_or_else(super::strong_password);
        let email = format!("webmaster@{}", a.domain);
        let r = self
            .ask(
                self.user(),
                "CMD_API_ACCOUNT_USER",
                &[
                    ("action", "create"),
                    ("add", "Submit"),
                    ("username", &a.username),
                    ("email", &email),
                    ("passwd", &password),
                    ("passwd2", &password),
                    ("domain", &a.domain),
                    ("package", &a.package),
                    ("ip", &ip),
                    ("notify", "no"),
                ],
            )
            .await?; // a transport failure is retried: the next attempt looks first
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                // It may exist now (made meanwhile, or the name clashes): ours is adopted,
                // anything else is the panel's refusal.
                if self.ours(a).await?.is_some() {
                    return Ok(());
                }
                Err(DriverError::refused(e))
            }
        }
    }

    async fn suspend(&self, a: &Account) -> Result<(), DriverError> {
        let c = self
            .ours(a)
            .await?
            .ok_or_else(|| DriverError(format!("DirectAdmin has no user {}", a.username)))?;
        if c.suspended {
            return Ok(());
        }
        self.select_users(
            &a.username,
            &[("suspend", "Suspend"), ("reason", "billing")],
        )
        .await
    }

    async fn unsuspend(&self, a: &Account) -> Result<(), DriverError> {
        let c = self
            .ours(a)
            .await?
            .ok_or_else(|| DriverError(format!("DirectAdmin has no user {}", a.username)))?;
        if !c.suspended {
            return Ok(());
        }
        self.select_users(&a.username, &[("suspend", "Unsuspend")])
            .await
    }

    async fn terminate(&self, a: &Account) -> Result<(), DriverError> {
        if self.ours(a).await?.is_none() {
            return Ok(()); // gone already
        }
        let r = self
            .select_users(&a.username, &[("confirmed", "Confirm"), ("delete", "yes")])
            .await;
        // Some servers report an error although the user was deleted: look again.
        match r {
            Ok(()) => Ok(()),
            Err(e) => match self.show(&a.username).await? {
                None => Ok(()),
                Some(_) => Err(e),
            },
        }
    }

    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError> {
        self.ours(a)
            .await?
            .ok_or_else(|| DriverError(format!("DirectAdmin has no user {}", a.username)))?;
        self.call(
            self.user(),
            "CMD_API_MODIFY_USER",
            &[
                ("action", "package"),
                ("user", &a.username),
                ("package", package),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn change_password(&self, a: &Account, password: &str) -> Result<(), DriverError> {
        self.call(
            self.user(),
            "CMD_API_USER_PASSWD",
            &[
                ("username", &a.username),
                ("passwd", password),
                ("passwd2", password),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn login_url(&self, a: &Account) -> Result<Option<String>, DriverError> {
        // A one-time login URL, asked as the user (`admin|user`).
        let login = format!("{}|{}", self.user(), a.username);
        let m = self
            .call(
                &login,
                "CMD_API_LOGIN_KEYS",
                &[
                    ("action", "create"),
                    ("type", "one_time_url"),
                    ("expiry", "30m"),
                ],
            )
            .await?;
        // The URL is in `details` of the url-encoded answer; some DirectAdmin versions and
        // clients (JSON) give it as `result`: whichever holds a URL.
        Ok(["result", "details"]
            .iter()
            .filter_map(|k| m.get(*k))
            .find(|u| u.starts_with("https://") || u.starts_with("http://"))
            .cloned())
    }

    async fn check(&self) -> Result<String, DriverError> {
        self.call(self.user(), "CMD_API_LOGIN_TEST", &[])
            .await
            .map(|m| {
                format!(
                    "DirectAdmin at {} accepts {}: {}",
                    self.panel.base,
                    self.user(),
                    m.get("text").cloned().unwrap_or_default()
                )
            })
    }
}

/// Whether DirectAdmin's error says the user does not exist at all, not only that this
/// login may not see it ("… does not exist in your authority level"): taking the latter for
/// "gone" would have a termination succeed while the account runs on (found by the panels
/// audit).
fn means_no_such_user(e: &str) -> bool {
    (e.contains("not exist") || e.contains("No such user")) && !e.contains("authority")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_user_out_of_this_logins_authority_is_not_gone() {
        assert!(super::means_no_such_user("User shop1 does not exist"));
        assert!(super::means_no_such_user("No such user"));
        assert!(!super::means_no_such_user(
            "User shop1 does not exist in your authority level"
        ));
    }

    use super::*;

    #[test]
    fn both_answer_shapes_are_read() {
        let m = parse_answer("error=1&text=Unable+to+create&details=That+domain+already+exists")
            .unwrap();
        assert_eq!(
            failed(&m).as_deref(),
            Some("Unable to create: That domain already exists")
        );
        let m = parse_answer(r#"{"error":"0","text":"OK","suspended":"yes"}"#).unwrap();
        assert_eq!(failed(&m), None);
        assert_eq!(m.get("suspended").map(String::as_str), Some("yes"));
        let e = parse_answer("<html><title>DirectAdmin Login</title></html>").unwrap_err();
        assert!(e.0.contains("login page"), "{e}");
    }
}
