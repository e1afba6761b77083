//! A small client of PowerDNS's authoritative HTTP API (`/api/v1/servers/<id>/zones`):
//! create a zone (201; 409 when it exists), read it, PATCH its RRsets (REPLACE/DELETE,
//! 204), delete it (204). Names are absolute (they end with a dot). The API key travels in
//! `X-API-Key` and is never logged or put in an error.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Where PowerDNS's API is and how to use it.
#[derive(Clone)]
pub struct DnsSettings {
    /// The API's base, e.g. `http://127.0.0.1:8081` (`/api/v1/…` is appended).
    pub api_url: String,
    pub api_key: SecretString,
    /// PowerDNS's server id (always `localhost` for the authoritative server).
    pub server_id: String,
    /// The TTL of the records Lodge writes, seconds.
    pub ttl: u32,
}

impl std::fmt::Debug for DnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSettings")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("server_id", &self.server_id)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DnsError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub content: String,
    #[serde(default)]
    pub disabled: bool,
}

/// One RRset (its records share name, type and TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RRset {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ttl: u32,
    #[serde(default)]
    pub records: Vec<Record>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changetype: Option<String>,
}

impl RRset {
    pub fn new(name: &str, kind: &str, ttl: u32, contents: &[String]) -> RRset {
        RRset {
            name: name.to_owned(),
            kind: kind.to_owned(),
            ttl,
            records: contents
                .iter()
                .map(|c| Record {
                    content: c.clone(),
                    disabled: false,
                })
                .collect(),
            changetype: None,
        }
    }

    fn change(mut self, changetype: &str) -> RRset {
        self.changetype = Some(changetype.to_owned());
        self
    }
}

/// A zone as the API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Zone {
    pub name: String,
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub rrsets: Vec<RRset>,
}

/// What creating a zone found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// A zone of that name was already there (409).
    Exists,
}

/// The client (cheap to clone).
#[derive(Clone)]
pub struct PowerDns {
    http: reqwest::Client,
    settings: DnsSettings,
}

impl std::fmt::Debug for PowerDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDns")
            .field("settings", &self.settings)
            .finish()
    }
}

/// `name` made absolute (lowercase, ending with a dot).
pub fn absolute(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

fn transport(what: &str, e: reqwest::Error) -> DnsError {
    // Without the URL: it names nothing secret, but errors stay short and alike.
    let kind = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.without_url().to_string()
    };
    DnsError(format!("PowerDNS {what}: {kind}"))
}

impl PowerDns {
    pub fn new(settings: DnsSettings) -> Result<PowerDns, DnsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DnsError(format!("building the PowerDNS client: {e}")))?;
        Ok(PowerDns { http, settings })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    fn zones_url(&self) -> String {
        format!(
            "{}/api/v1/servers/{}/zones",
            self.settings.api_url.trim_end_matches('/'),
            self.settings.server_id
        )
    }

    fn zone_url(&self, zone: &str) -> String {
        // Zone ids are the names with `/` escaped as `=2F`; hosted names have none.
        format!(
            "{}/{}",
            self.zones_url(),
            absolute(zone).replace('/', "=2F")
        )
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header("X-API-Key", self.settings.api_key.expose_secret())
            .header("Accept", "application/json")
    }

    async fn refused(what: &str, resp: reqwest::Response) -> DnsError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(200).collect());
        DnsError(format!("PowerDNS {what}: {status} {message}"))
    }

    /// Creates `zone` owned by `account` with `nameservers` (NS) and `rrsets`.
    pub async fn create_zone(
        &self,
        zone: &str,
        account: &str,
        nameservers: &[String],
        rrsets: &[RRset],
    ) -> Result<Created, DnsError> {
        let body = serde_json::json!({
            "name": absolute(zone),
            "kind": "Native",
            "account": account,
            "nameservers": nameservers.iter().map(|n| absolute(n)).collect::<Vec<_>>(),
            "soa_edit_api": "DEFAULT",
            "rrsets": rrsets,
        });
        let resp = self
            .request(reqwest::Method::POST, self.zones_url())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport("creating a zone", e))?;
        match resp.status().as_u16() {
            201 => Ok(Created::New),
            409 => Ok(Created::Exists),
            _ => Err(Self::refused("creating a zone", resp).await),
        }
    }

    /// The zone, `None` when there is none.
    pub async fn zone(&self, zone: &str) -> Result<Option<Zone>, DnsError> {
        let resp = self
            .request(reqwest::Method::GET, self.zone_url(zone))
            .send()
            .await
            .map_err(|e| transport("reading a zone", e))?;
        match resp.status().as_u16() {
            200 => resp
                .json::<Zone>()
                .await
                .map(Some)
                .map_err(|e| DnsError(format!("PowerDNS reading a zone: {}", e.without_url()))),
            404 | 422 => Ok(None),
            _ => Err(Self::refused("reading a zone", resp).await),
        }
    }

    /// Replaces `replace` and deletes `delete` (name and type) in one atomic PATCH.
    pub async fn patch(
        &self,
        zone: &str,
        replace: Vec<RRset>,
        delete: Vec<RRset>,
    ) -> Result<(), DnsError> {
        // Deletions first: PowerDNS checks each change against the zone as changed so far
        // (a CNAME replacing an A at the same name conflicts while the A is still there).
        let rrsets: Vec<RRset> = delete
            .into_iter()
            .map(|r| {
                RRset {
                    records: vec![],
                    ..r
                }
                .change("DELETE")
            })
            .chain(replace.into_iter().map(|r| r.change("REPLACE")))
            .collect();
        if rrsets.is_empty() {
            return Ok(());
        }
        let resp = self
            .request(reqwest::Method::PATCH, self.zone_url(zone))
            .json(&serde_json::json!({ "rrsets": rrsets }))
            .send()
            .await
            .map_err(|e| transport("changing a zone", e))?;
        match resp.status().as_u16() {
            200 | 204 => Ok(()),
            _ => Err(Self::refused("changing a zone", resp).await),
        }
    }

    /// Deletes the zone; `false` when it was not there.
    pub async fn delete_zone(&self, zone: &str) -> Result<bool, DnsError> {
        let resp = self
            .request(reqwest::Method::DELETE, self.zone_url(zone))
            .send()
            .await
            .map_err(|e| transport("deleting a zone", e))?;
        match resp.status().as_u16() {
            200 | 204 => Ok(true),
            404 | 422 => Ok(false),
            _ => Err(Self::refused("deleting a zone", resp).await),
        }
    }

    /// Checks that the API answers and takes the key.
    pub async fn check(&self) -> Result<(), DnsError> {
        let resp = self
            .request(reqwest::Method::GET, self.zones_url())
            .send()
            .await
            .map_err(|e| transport("listing zones", e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Self::refused("listing zones", resp).await)
        }
    }
}
