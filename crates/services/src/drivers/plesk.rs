//! The `plesk` driver: Plesk's XML API (`POST /enterprise/control/agent.php`, `Content-Type:
//! text/xml`, headers `HTTP_AUTH_LOGIN` / `HTTP_AUTH_PASSWD`, or `KEY` for a secret key), as
//! documented at https://docs.plesk.com/en-US/obsidian/api-rpc/about-xml-api/ (packets
//! `customer` add/get/set/del, `webspace` add/get/switch-subscription, `service-plan` get,
//! `server` create_session) and as plesk/api-php-lib (FOSSBilling) uses it: an account is a
//! customer (login = our username) with one subscription (webspace) on a service plan;
//! suspension is the customer's status 16, activation status 0. Every answer carries
//! `<status>ok|error</status>`, with `<errcode>` and `<errtext>` on errors.
//!
//! Create is idempotent: the customer is looked up first; ours (its webspace is our domain,
//! or it has none yet and our e-mail) is adopted and completed, anyone else's is refused.

use std::sync::Arc;

use async_trait::async_trait;

use super::http::{send, Panel};
use super::{panel_username, Account, DriverError, PanelFactory, Provisioner, ServerAccess};

/// Plesk's HTTPS port.
pub const PORT: u16 = 8443;

/// Plesk's error code for "object not found".
const NOT_FOUND: &str = "1013";

#[derive(Debug)]
pub struct Factory;

impl PanelFactory for Factory {
    fn name(&self) -> &str {
        "plesk"
    }

    fn connect(&self, server: &ServerAccess) -> Result<Arc<dyn Provisioner>, DriverError> {
        Ok(Arc::new(Plesk {
            panel: Panel::connect(server, PORT)?,
        }))
    }
}

#[derive(Debug)]
pub struct Plesk {
    panel: Panel,
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Undoes [`xml_escape`].
pub fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The text of the first `<tag>…</tag>` in `xml`, unescaped.
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let rest = xml.get(start..)?;
    let end = rest.find(&close)?;
    rest.get(..end).map(xml_unescape)
}

/// Every `<tag>…</tag>` text in `xml`.
pub fn tags(xml: &str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = vec![];
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let Some(after) = rest.get(i + open.len()..) else {
            break;
        };
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(after.get(..end).map(xml_unescape).unwrap_or_default());
        rest = after.get(end + close.len()..).unwrap_or("");
    }
    out
}

/// A Plesk result: `Ok(body)` for `status=ok`, else `Err((errcode, errtext))`.
type Answer = Result<String, (String, String)>;

struct Customer {
    email: String,
    id: String,
}

impl Plesk {
    /// Sends one packet. The outer error is the transport's (or the login's); the inner is
    /// Plesk's `status=error` answer.
    async fn packet(&self, inner: &str) -> Result<Answer, DriverError> {
        let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><packet>{inner}</packet>");
        let creds = &self.panel.creds;
        let mut req = self
            .panel
            .client
            .post(format!("{}/enterprise/control/agent.php", self.panel.base))
            .header("Content-Type", "text/xml")
            .body(body);
        req = if creds.user.is_empty() {
            req.header("KEY", &creds.secret)
        } else {
            req.header("HTTP_AUTH_LOGIN", &creds.user)
                .header("HTTP_AUTH_PASSWD", &creds.secret)
        };
        let (status, text) = send(req).await?;
        let Some(st) = tag(&text, "status") else {
            return Err(DriverError(format!(
                "Plesk answered HTTP {status} without a status"
            )));
        };
        if st == "ok" {
            return Ok(Ok(text));
        }
        let code = tag(&text, "errcode").unwrap_or_default();
        let msg = tag(&text, "errtext").unwrap_or_default();
        // A packet-level login failure (errcode 1001) is the credentials, not the account.
        if code == "1001" {
            return Err(DriverError(format!(
                "Plesk refused the credentials ({code}: {msg}): check the login and password or key"
            )));
        }
        Ok(Err((code, msg)))
    }

    async fn call(&self, inner: &str) -> Result<String, DriverError> {
        self.packet(inner)
            .await?
            .map_err(|(c, m)| DriverError(format!("Plesk error {c}: {m}")))
    }

    async fn customer(&self, login: &str) -> Result<Option<Customer>, DriverError> {
        let r = self
            .packet(&format!(
                "<customer><get><filter><login>{}</login></filter><dataset><gen_info/></dataset></get></customer>",
                xml_escape(login)
            ))
            .await?;
        match r {
            Ok(xml) => Ok(Some(Customer {
                email: tag(&xml, "email").unwrap_or_default(),
                id: tag(&xml, "id").unwrap_or_default(),
            })),
            Err((c, _)) if c == NOT_FOUND => Ok(None),
            Err((c, m)) => Err(DriverError(format!("Plesk error {c}: {m}"))),
        }
    }

    /// The names of the customer's subscriptions.
    async fn webspaces(&self, login: &str) -> Result<Vec<String>, DriverError> {
        let r = self
            .packet(&format!(
                "<webspace><get><filter><owner-login>{}</owner-login></filter><dataset><gen_info/></dataset></get></webspace>",
                xml_escape(login)
            ))
            .await?;
        match r {
            // `name` is the subscription as Plesk shows it (an IDN in Unicode); our domains
            // are ASCII, as `ascii-name` is (found by the panels audit: an IDN account was
            // refused as someone else's after it was made).
            Ok(xml) => {
                let ascii = tags(&xml, "ascii-name");
                Ok(if ascii.is_empty() {
                    tags(&xml, "name")
                } else {
                    ascii
                })
            }
            Err((c, _)) if c == NOT_FOUND => Ok(vec![]),
            Err((c, m)) => Err(DriverError(format!("Plesk error {c}: {m}"))),
        }
    }

    /// `Some(has_webspace)` for our customer, `None` when there is none; someone else's is
    /// refused.
    async fn ours(&self, a: &Account) -> Result<Option<bool>, DriverError> {
        let Some(c) = self.customer(&a.username).await? else {
            return Ok(None);
        };
        let spaces = self.webspaces(&a.username).await?;
        let domain_ok = spaces.iter().any(|s| s.eq_ignore_ascii_case(&a.domain));
        if domain_ok {
            return Ok(Some(true));
        }
        if spaces.is_empty() && c.email.eq_ignore_ascii_case(&email_of(a)) {
            return Ok(Some(false)); // our customer, its subscription not made yet
        }
        Err(DriverError::refused(format!(
            "Plesk already has a customer {} (id {}, subscriptions: {}), not this account",
            a.username,
            c.id,
            if spaces.is_empty() {
                "none".to_owned()
            } else {
                spaces.join(", ")
            }
        )))
    }

    async fn existing(&self, a: &Account) -> Result<(), DriverError> {
        match self.ours(a).await? {
            Some(_) => Ok(()),
            None => Err(DriverError(format!("Plesk has no customer {}", a.username))),
        }
    }

    async fn set_status(&self, a: &Account, status: &str) -> Result<(), DriverError> {
        self.existing(a).await?;
        self.call(&format!(
            "<customer><set><filter><login>{}</login></filter><values><gen_info><status>{status}</status></gen_info></values></set></customer>",
            xml_escape(&a.username)
        ))
        .await
        .map(|_| ())
    }

    async fn add_webspace(&self, a: &Account, password: &str) -> Result<Answer, DriverError> {
        let ip = self.ip().await?;
        self.packet(&format!(
            "<webspace><add><gen_setup><name>{d}</name><owner-login>{u}</owner-login><htype>vrt_hst</htype><ip_address>{ip}</ip_address></gen_setup>\
             <hosting><vrt_hst><property><name>ftp_login</name><value>{u}</value></property><property><name>ftp_password</name><value>{p}</value></property><ip_address>{ip}</ip_address></vrt_hst></hosting>\
             <plan-name>{plan}</plan-name></add></webspace>",
            d = xml_escape(&a.domain),
            u = xml_escape(&a.username),
            p = xml_escape(password),
            ip = xml_escape(&ip),
            plan = xml_escape(&a.package),
        ))
        .await
    }

    async fn ip(&self) -> Result<String, DriverError> {
        let xml = self.call("<ip><get/></ip>").await?;
        tag(&xml, "ip_address")
            .ok_or_else(|| DriverError("Plesk lists no IP address for subscriptions".into()))
    }
}

fn email_of(a: &Account) -> String {
    format!("webmaster@{}", a.domain)
}

#[async_trait]
impl Provisioner for Plesk {
    fn name(&self) -> &str {
        "plesk"
    }

    fn username(&self, domain: &str, legacy_id: i64) -> String {
        panel_username(domain, legacy_id)
    }

    async fn create(&self, a: &Account) -> Result<(), DriverError> {
        let password = a.password.clone().unwrap_or_else(super::strong_password);
        match self.ours(a).await? {
            Some(true) => return Ok(()), // made by an attempt whose answer was lost
            Some(false) => {}
            None => {
                let r = self
                    .packet(&format!(
                        "<customer><add><gen_info><pname>{d}</pname><login>{u}</login><passwd>{p}</passwd><email>{e}</email></gen_info></add></customer>",
                        d = xml_escape(&a.domain),
                        u = xml_escape(&a.username),
                        p = xml_escape(&password),
                        e = xml_escape(&email_of(a)),
                    ))
                    .await?;
                if let Err((c, m)) = r {
                    if self.ours(a).await?.is_none() {
                        return Err(DriverError::refused(format!("Plesk error {c}: {m}")));
                    }
                }
            }
        }
        match self.add_webspace(a, &password).await? {
            Ok(_) => Ok(()),
            Err((c, m)) => {
                if self.ours(a).await? == Some(true) {
                    return Ok(());
                }
                Err(DriverError::refused(format!("Plesk error {c}: {m}")))
            }
        }
    }

    async fn suspend(&self, a: &Account) -> Result<(), DriverError> {
        self.set_status(a, "16").await
    }

    async fn unsuspend(&self, a: &Account) -> Result<(), DriverError> {
        self.set_status(a, "0").await
    }

    async fn terminate(&self, a: &Account) -> Result<(), DriverError> {
        if self.ours(a).await?.is_none() {
            return Ok(()); // gone already
        }
        match self
            .packet(&format!(
                "<customer><del><filter><login>{}</login></filter></del></customer>",
                xml_escape(&a.username)
            ))
            .await?
        {
            Ok(_) => Ok(()),
            Err((c, _)) if c == NOT_FOUND => Ok(()),
            Err((c, m)) => Err(DriverError(format!("Plesk error {c}: {m}"))),
        }
    }

    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError> {
        self.existing(a).await?;
        let xml = self
            .call(&format!(
                "<service-plan><get><filter><name>{}</name></filter></get></service-plan>",
                xml_escape(package)
            ))
            .await?;
        let guid = tag(&xml, "guid")
            .ok_or_else(|| DriverError(format!("Plesk has no service plan {package:?}")))?;
        self.call(&format!(
            "<webspace><switch-subscription><filter><name>{}</name></filter><plan-guid>{}</plan-guid></switch-subscription></webspace>",
            xml_escape(&a.domain),
            xml_escape(&guid)
        ))
        .await
        .map(|_| ())
    }

    async fn change_password(&self, a: &Account, password: &str) -> Result<(), DriverError> {
        self.existing(a).await?;
        self.call(&format!(
            "<customer><set><filter><login>{}</login></filter><values><gen_info><passwd>{}</passwd></gen_info></values></set></customer>",
            xml_escape(&a.username),
            xml_escape(password)
        ))
        .await
        .map(|_| ())
    }

    async fn login_url(&self, a: &Account) -> Result<Option<String>, DriverError> {
        use base64::Engine;
        // The address the customer logs in from, as Plesk's create_session asks
        // (`user_ip`, base64; found by review: always 127.0.0.1 before).
        let from = a.client_ip.map_or_else(
            || "127.0.0.1".to_owned(),
            |ip| ip.to_canonical().to_string(),
        );
        let ip = base64::engine::general_purpose::STANDARD.encode(from);
        let xml = self
            .call(&format!(
                "<server><create_session><login>{}</login><data><user_ip>{ip}</user_ip><source_server></source_server></data></create_session></server>",
                xml_escape(&a.username)
            ))
            .await?;
        Ok(tag(&xml, "id").map(|id| {
            format!(
                "{}/enterprise/rsession_init.php?PLESKSESSID={id}",
                self.panel.base
            )
        }))
    }

    async fn check(&self) -> Result<String, DriverError> {
        let xml = self.call("<server><get><gen_info/></get></server>").await?;
        Ok(format!(
            "Plesk {} at {} accepts {}",
            tag(&xml, "server_name").unwrap_or_default(),
            self.panel.base,
            if self.panel.creds.user.is_empty() {
                "the secret key"
            } else {
                &self.panel.creds.user
            }
        ))
    }
}
