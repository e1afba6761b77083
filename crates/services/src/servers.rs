//! Servers staff add for accounts to live on. Credentials are sealed at rest and never
//! returned.

use lodge_core::{PlanId, ServerId};
use lodge_store::servers::{self, ServerRow};
use lodge_store::{Conflict, StoreError};

use crate::{Lodge, Result, ServiceError, Validator};

/// What checking a server found.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ServerCheck {
    /// Whether the server answered and took its credentials.
    pub ok: bool,
    /// What was found, or why it failed.
    pub message: String,
}

/// A server as staff describe it.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    pub name: String,
    pub hostname: String,
    /// The provisioning driver (`nginx`, …).
    pub driver: String,
    /// Panel credentials (any text, e.g. a JSON object as a string); sealed, never returned.
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub ns1: String,
    #[serde(default)]
    pub ns2: String,
    /// Accounts it may hold; `0` for unlimited.
    #[serde(default)]
    pub capacity: i64,
    /// The plans it serves; empty for every plan of its driver.
    #[serde(default)]
    pub plan_ids: Vec<String>,
    #[serde(default = "yes")]
    pub is_active: bool,
    /// The Lodge node (its `--node-name`) whose worker acts on this server; unset: any
    /// node. With several nodes an `nginx` server must name the node on whose machine
    /// its sites are: its jobs wait for that node's worker. Left out of an update, the
    /// stored node is kept; `""` clears it.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub node: Option<String>,
}

/// A server's update: each field sent replaces the stored one; those left out are kept.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerUpdate {
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub driver: Option<String>,
    /// Panel credentials; sealed, never returned.
    pub credentials: Option<String>,
    pub ns1: Option<String>,
    pub ns2: Option<String>,
    /// Accounts it may hold; `0` for unlimited.
    pub capacity: Option<i64>,
    /// The plans it serves; empty for every plan of its driver.
    pub plan_ids: Option<Vec<String>>,
    pub is_active: Option<bool>,
    /// The node whose worker acts on this server; `""` clears it.
    #[schema(max_length = 100)]
    pub node: Option<String>,
}

fn yes() -> bool {
    true
}

impl Lodge {
    fn validate_server(&self, s: &ServerSpec) -> Result<Vec<PlanId>> {
        let mut v = Validator::new();
        if s.name.trim().is_empty() || s.name.len() > 100 {
            v.add("name", "A name of 1 to 100 characters is required.");
        } else {
            // One line, shown in lists and logs (found by the re-check: a line break, a
            // bidi override passed).
            v.line("name", &s.name, 100);
        }
        if s.hostname.trim().is_empty() || s.hostname.len() > 253 {
            v.add("hostname", "A hostname is required.");
        }
        if let Some(n) = s.node.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            if !is_node_name(n) {
                v.add(
                    "node",
                    "A node's name (its --node-name): at most 100 letters, digits, dots, \
                     hyphens and underscores.",
                );
            }
        }
        if self.drivers.is_panel(&s.driver) {
            if let Some(c) = s.credentials.as_deref() {
                // Never echo the text: it holds the secret.
                let good = serde_json::from_str::<crate::drivers::http::PanelCredentials>(c)
                    .is_ok_and(|p| !p.secret.is_empty() && p.pins_are_valid());
                if !good {
                    v.add(
                        "credentials",
                        "A JSON object: user, secret, and optionally url, tls_sha256 (the \
                         certificate's SHA-256, 64 hex digits), tls_spki_sha256 (its public \
                         key's) and timeout_secs.",
                    );
                }
            }
        }
        if !self.drivers.knows(&s.driver) {
            v.add(
                "driver",
                format!("No provisioning driver named {:?}.", s.driver),
            );
        }
        if s.capacity < 0 {
            v.add("capacity", "At least 0 (0 is unlimited).");
        }
        // With DNS zones on, each account of a server Lodge provisions itself gets a zone
        // served by the server's nameservers (found by the stack audit: a server without
        // them took orders whose zone step then failed, the site already live).
        if self.dns.is_some() && !self.drivers.is_panel(&s.driver) {
            for (field, ns) in [("ns1", &s.ns1), ("ns2", &s.ns2)] {
                if ns.trim().is_empty() {
                    v.add(
                        field,
                        "Required while DNS zones are on (--pdns-api-url): the nameserver of \
                         this server's accounts' zones.",
                    );
                }
            }
        }
        let mut plans = vec![];
        for p in &s.plan_ids {
            match p.parse::<PlanId>() {
                Ok(id) => plans.push(id),
                Err(_) => v.add("plan_ids", format!("{p:?} is not a plan id.")),
            }
        }
        v.finish()?;
        Ok(plans)
    }

    async fn check_plans(&self, plans: &[PlanId]) -> Result<()> {
        let catalog = self.catalog().await?;
        for p in plans {
            if catalog.plan(*p).is_none() {
                return Err(ServiceError::field("plan_ids", format!("No plan {p}.")));
            }
        }
        Ok(())
    }

    pub async fn create_server(&self, s: &ServerSpec) -> Result<ServerRow> {
        // Stored in lower case: node names are compared without case.
        let node: Option<String> = s.node.as_deref().map(|n| n.trim().to_ascii_lowercase());
        let plans = self.validate_server(s)?;
        self.check_plans(&plans).await?;
        let sealed = s
            .credentials
            .as_deref()
            .map(|c| self.sealer.seal(c))
            .transpose()?;
        let id = ServerId::new();
        let mut tx = self.store.begin().await?;
        servers::insert(
            &mut tx,
            id,
            &servers::ServerInput {
                name: s.name.trim(),
                hostname: s.hostname.trim(),
                driver: &s.driver,
                credentials: sealed.as_deref(),
                ns1: &s.ns1,
                ns2: &s.ns2,
                capacity: s.capacity,
                is_active: s.is_active,
                node: node.as_deref(),
            },
            self.now_us(),
        )
        .await
        .map_err(|e| {
            if matches!(e, StoreError::Conflict(Conflict::ServerName)) {
                ServiceError::field("name", "A server with this name exists.")
            } else {
                e.into()
            }
        })?;
        servers::set_plans(&mut tx, id, &plans).await?;
        let row = servers::by_id(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(row)
    }

    /// Replaces a server's settings; credentials are kept when none are sent. Under the
    /// server's lock, as a partial update is: its live accounts are counted before its
    /// driver may change, and an account placed on it meanwhile waits for the change (found
    /// by the PostgreSQL race audit: counted without it).
    pub async fn update_server(&self, id: ServerId, s: &ServerSpec) -> Result<ServerRow> {
        let mut tx = self.store.begin().await?;
        if !servers::lock(&mut tx, id).await? {
            return Err(ServiceError::NotFound);
        }
        let row = self.update_server_in(&mut tx, id, s).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(row)
    }

    /// Changes the fields `u` names and keeps the others, read and written under the
    /// server's lock (two partial updates at once each keep the other's change: found by
    /// the re-audit, a deactivation undone by a concurrent `node` update). Returns the
    /// server and its plans.
    pub async fn patch_server(
        &self,
        id: ServerId,
        u: ServerUpdate,
    ) -> Result<(ServerRow, Vec<String>)> {
        let mut tx = self.store.begin().await?;
        if !servers::lock(&mut tx, id).await? {
            return Err(ServiceError::NotFound);
        }
        let current = servers::by_id(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let plans = servers::plans_of(&mut *tx, id).await?;
        let spec = ServerSpec {
            name: u.name.unwrap_or(current.name),
            hostname: u.hostname.unwrap_or(current.hostname),
            driver: u.driver.unwrap_or(current.driver),
            credentials: u.credentials,
            ns1: u.ns1.unwrap_or(current.ns1),
            ns2: u.ns2.unwrap_or(current.ns2),
            capacity: u.capacity.unwrap_or(current.capacity),
            plan_ids: u.plan_ids.unwrap_or(plans),
            is_active: u.is_active.unwrap_or(current.is_active == 1),
            node: u.node,
        };
        let row = self.update_server_in(&mut tx, id, &spec).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((row, spec.plan_ids))
    }

    async fn update_server_in(
        &self,
        tx: &mut lodge_store::AnyConnection,
        id: ServerId,
        s: &ServerSpec,
    ) -> Result<ServerRow> {
        // Stored in lower case: node names are compared without case.
        let node: Option<String> = s.node.as_deref().map(|n| n.trim().to_ascii_lowercase());
        let plans = self.validate_server(s)?;
        self.check_plans(&plans).await?;
        let sealed = s
            .credentials
            .as_deref()
            .map(|c| self.sealer.seal(c))
            .transpose()?;
        // Its accounts were made by its driver: another one cannot manage them.
        if let Some(current) = servers::by_id(&mut *tx, id).await? {
            if current.driver != s.driver && current.accounts > 0 {
                return Err(ServiceError::field(
                    "driver",
                    format!(
                        "This server holds {} live accounts made by its {} driver: its driver cannot change until they end.",
                        current.accounts, current.driver
                    ),
                ));
            }
        }
        let found = servers::update(
            &mut *tx,
            id,
            &servers::ServerInput {
                name: s.name.trim(),
                hostname: s.hostname.trim(),
                driver: &s.driver,
                credentials: sealed.as_deref(),
                ns1: &s.ns1,
                ns2: &s.ns2,
                capacity: s.capacity,
                is_active: s.is_active,
                node: node.as_deref(),
            },
            self.now_us(),
        )
        .await?;
        if node.is_some() {
            // Jobs put back for the old node are judged afresh by whichever node claims
            // them next (a job held for a node that is gone moves on once staff re-bind).
            lodge_store::jobs::unpin_queued(&mut *tx).await?;
        }
        if !found {
            return Err(ServiceError::NotFound);
        }
        servers::set_plans(&mut *tx, id, &plans).await?;
        let row = servers::by_id(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        Ok(row)
    }

    pub async fn deactivate_server(&self, id: ServerId) -> Result<ServerRow> {
        let mut tx = self.store.begin().await?;
        if !servers::set_active(&mut tx, id, false, self.now_us()).await? {
            return Err(ServiceError::NotFound);
        }
        let row = servers::by_id(&mut *tx, id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(row)
    }

    /// Checks a server: it answers, takes its credentials, and (when pinned) shows the
    /// pinned certificate. Says whether it works and what was found, or why not (wrong
    /// token, certificate mismatch, timeout, …).
    pub async fn test_server(&self, id: ServerId) -> Result<ServerCheck> {
        let server = servers::by_id(self.store.reader(), id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let target = match self.target(&server) {
            Ok(t) => t,
            Err(e) => {
                return Ok(ServerCheck {
                    ok: false,
                    message: strip_internal(e),
                })
            }
        };
        Ok(match target.driver.check().await {
            Ok(message) => ServerCheck { ok: true, message },
            Err(e) => ServerCheck {
                ok: false,
                message: format!("{}: {e}", server.driver),
            },
        })
    }

    pub async fn servers(&self) -> Result<Vec<(ServerRow, Vec<String>)>> {
        let mut out = vec![];
        for s in servers::all(self.store.reader()).await? {
            let plans = servers::plans_of(self.store.reader(), s.id).await?;
            out.push((s, plans));
        }
        Ok(out)
    }

    /// The demo's server: this machine's nginx, unlimited (created once).
    pub async fn ensure_local_nginx_server(&self) -> Result<ServerRow> {
        if let Some(s) = servers::by_name(self.store.reader(), "local-nginx").await? {
            return Ok(s);
        }
        match self
            .create_server(&ServerSpec {
                name: "local-nginx".into(),
                hostname: "localhost".into(),
                driver: "nginx".into(),
                ns1: "ns1.localhost".into(),
                ns2: "ns2.localhost".into(),
                capacity: 0,
                is_active: true,
                ..Default::default()
            })
            .await
        {
            Err(ServiceError::Invalid(_)) => servers::by_name(self.store.reader(), "local-nginx")
                .await?
                .ok_or(ServiceError::NotFound),
            other => other,
        }
    }
}

/// Whether `n` can be a node's name (`--node-name`, a server's `node`): 1 to 100 letters,
/// digits, dots, hyphens and underscores (compared without case).
pub fn is_node_name(n: &str) -> bool {
    (1..=100).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn strip_internal(e: ServiceError) -> String {
    match e {
        ServiceError::Internal(m) => m,
        other => other.to_string(),
    }
}
