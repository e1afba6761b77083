//! The `cpanel` driver: WHM API 1 (`/json-api/<function>` with `api.version=1`, header
//! `Authorization: whm USER:TOKEN`), as documented at https://api.docs.cpanel.net/whm/introduction
//! and in cPanel's OpenAPI (createacct, accountsummary, suspendacct, unsuspendacct, removeacct,
//! changepackage, passwd, create_user_session). Errors come back as HTTP 200 with
//! `metadata.result = 0` and the text in `metadata.reason`; only `metadata` is read.
//!
//! Create is idempotent: `accountsummary` first; an account with our domain and owner is
//! adopted (a createacct that timed out but succeeded), one with another domain or owner is
//! refused for good.
//!
//! Parameters go in a form body (`POST`, which WHM takes as well as the documented `GET`
//! query), so that passwords never appear in a URL or in WHM's access log.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::http::{send, Panel};
use super::{panel_username, Account, DriverError, PanelFactory, Provisioner, ServerAccess};

/// WHM's HTTPS port.
pub const PORT: u16 = 2087;

#[derive(Debug)]
pub struct Factory;

impl PanelFactory for Factory {
    fn name(&self) -> &str {
        "cpanel"
    }

    fn connect(&self, server: &ServerAccess) -> Result<Arc<dyn Provisioner>, DriverError> {
        Ok(Arc::new(Whm {
            panel: Panel::connect(server, PORT)?,
        }))
    }
}

#[derive(Debug)]
pub struct Whm {
    panel: Panel,
}

/// An account as `accountsummary` shows it.
struct Summary {
    domain: String,
    owner: String,
    suspended: bool,
}

impl Whm {
    fn owner(&self) -> &str {
        &self.panel.creds.user
    }

    /// Calls a function. The outer error is the transport's; the inner one is WHM's own
    /// refusal (`metadata.reason` of `result = 0`).
    async fn ask(
        &self,
        function: &str,
        params: &[(&str, &str)],
    ) -> Result<Result<Value, String>, DriverError> {
        let mut query = vec![("api.version", "1")];
        query.extend_from_slice(params);
        let req = self
            .panel
            .client
            .post(format!("{}/json-api/{function}", self.panel.base))
            .header(
                "Authorization",
                format!("whm {}:{}", self.panel.creds.user, self.panel.creds.secret),
            )
            .form(&query);
        let (status, body) = send(req).await?;
        let v: Value = serde_json::from_str(&body).map_err(|_| {
            DriverError(format!(
                "{function}: WHM answered HTTP {status} without JSON (is this WHM API 1?)"
            ))
        })?;
        let meta = v.get("metadata").ok_or_else(|| {
            DriverError(format!(
                "{function}: WHM's answer has no metadata (API 1 expected)"
            ))
        })?;
        if meta.get("result").and_then(Value::as_i64) == Some(1) {
            return Ok(Ok(v.get("data").cloned().unwrap_or(Value::Null)));
        }
        let reason = meta
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        Ok(Err(format!("{function}: {reason}")))
    }

    async fn call(&self, function: &str, params: &[(&str, &str)]) -> Result<Value, DriverError> {
        self.ask(function, params).await?.map_err(DriverError)
    }

    async fn summary(&self, user: &str) -> Result<Option<Summary>, DriverError> {
        self.summary_by("user", user)
            .await
            .map(|s| s.map(|(_, summary)| summary))
    }

    /// The WHM account whose main domain is `domain` (its user name), if any.
    async fn domain_holder(&self, domain: &str) -> Result<Option<String>, DriverError> {
        self.summary_by("domain", domain)
            .await
            .map(|s| s.map(|(user, _)| user))
    }

    /// `accountsummary` by `user` or `domain`: the account's user name and summary.
    async fn summary_by(
        &self,
        by: &str,
        value: &str,
    ) -> Result<Option<(String, Summary)>, DriverError> {
        match self.ask("accountsummary", &[(by, value)]).await? {
            Ok(data) => {
                let acct = data
                    .get("acct")
                    .and_then(|a| a.get(0))
                    .cloned()
                    .unwrap_or_default();
                let text = |k: &str| acct.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                Ok(Some((
                    text("user"),
                    Summary {
                        domain: text("domain"),
                        owner: text("owner"),
                        suspended: acct
                            .get("suspended")
                            .is_some_and(|s| s.as_i64() == Some(1) || s.as_bool() == Some(true)),
                    },
                )))
            }
            Err(e) if e.contains("does not exist") => Ok(None),
            Err(e) => Err(DriverError(e)),
        }
    }

    async fn ours(&self, a: &Account) -> Result<Option<Summary>, DriverError> {
        match self.summary(&a.username).await? {
            None => Ok(None),
            Some(s) if s.domain.eq_ignore_ascii_case(&a.domain) && s.owner == self.owner() => {
                Ok(Some(s))
            }
            Some(s) => Err(DriverError::refused(format!(
                "WHM already has an account {} for {} (owner {}), not this account",
                a.username, s.domain, s.owner
            ))),
        }
    }

    async fn existing(&self, a: &Account) -> Result<Summary, DriverError> {
        self.ours(a)
            .await?
            .ok_or_else(|| DriverError(format!("WHM has no account {}", a.username)))
    }
}

#[async_trait]
impl Provisioner for Whm {
    fn name(&self) -> &str {
        "cpanel"
    }

    fn username(&self, domain: &str, legacy_id: i64) -> String {
        panel_username(domain, legacy_id)
    }

    async fn create(&self, a: &Account) -> Result<(), DriverError> {
        if self.ours(a).await?.is_some() {
            return Ok(()); // an earlier createacct succeeded though its answer was lost
        }
        let password = a.password.clone().unwrap_or_else(super::strong_password);
        let email = format!("webmaster@{}", a.domain);
        let r = self
            .ask(
                "createacct",
                &[
                    ("username", &a.username),
                    ("domain", &a.domain),
                    ("plan", &a.package),
                    ("password", &password),
                    ("contactemail", &email),
                ],
            )
            .await?; // lost answers are retried: the next attempt looks first
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                if self.ours(a).await?.is_some() {
                    return Ok(());
                }
                // WHM goes on creating an account after the caller's request timed out
                // (FOSSBilling issue 1086): a retry meanwhile is told the user's group or
                // the domain "already exists" while the account is not listed yet. That
                // is retried (the next attempt finds the account and adopts it); other
                // refusals (a bad name, a missing package, a weak password) are final.
                if e.to_ascii_lowercase().contains("already exists") {
                    // Unless the domain is another account's main domain: that is final
                    // (found by the panels audit: retried eight times for hours).
                    if let Some(holder) = self.domain_holder(&a.domain).await? {
                        if !holder.eq_ignore_ascii_case(&a.username) {
                            return Err(DriverError::refused(format!(
                                "{e} (the domain is WHM account {holder}'s)"
                            )));
                        }
                    }
                    return Err(DriverError(e));
                }
                Err(DriverError::refused(e))
            }
        }
    }

    async fn suspend(&self, a: &Account) -> Result<(), DriverError> {
        if self.existing(a).await?.suspended {
            return Ok(());
        }
        self.call(
            "suspendacct",
            &[("user", &a.username), ("reason", "Suspended by billing")],
        )
        .await
        .map(|_| ())
    }

    async fn unsuspend(&self, a: &Account) -> Result<(), DriverError> {
        if !self.existing(a).await?.suspended {
            return Ok(());
        }
        self.call("unsuspendacct", &[("user", &a.username)])
            .await
            .map(|_| ())
    }

    async fn terminate(&self, a: &Account) -> Result<(), DriverError> {
        if self.ours(a).await?.is_none() {
            return Ok(()); // gone already
        }
        match self
            .ask("removeacct", &[("username", &a.username), ("keepdns", "0")])
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => match self.summary(&a.username).await? {
                None => Ok(()),
                Some(_) => Err(DriverError(e)),
            },
        }
    }

    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError> {
        self.existing(a).await?;
        self.call("changepackage", &[("user", &a.username), ("pkg", package)])
            .await
            .map(|_| ())
    }

    async fn change_password(&self, a: &Account, password: &str) -> Result<(), DriverError> {
        // WHM's own refusal (a password below its minimum strength, an account gone) is
        // final: the same password is refused again (it was retried for hours).
        match self
            .ask("passwd", &[("user", &a.username), ("password", password)])
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => Err(DriverError::refused(e)),
        }
    }

    async fn login_url(&self, a: &Account) -> Result<Option<String>, DriverError> {
        let data = self
            .call(
                "create_user_session",
                &[("user", &a.username), ("service", "cpaneld")],
            )
            .await?;
        Ok(data.get("url").and_then(Value::as_str).map(str::to_owned))
    }

    async fn check(&self) -> Result<String, DriverError> {
        let data = self.call("version", &[]).await?;
        Ok(format!(
            "WHM {} at {} accepts {}",
            data.get("version").and_then(Value::as_str).unwrap_or("?"),
            self.panel.base,
            self.owner()
        ))
    }
}
