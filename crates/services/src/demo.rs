//! The demo installation: a catalog, a staff user, and a customer organization whose owner
//! holds a fresh API key on every run. Seeding is idempotent.

use lodge_core::{OrganizationId, PlanId, ProjectId};
use lodge_store::{orgs, users};
use serde::Serialize;

use crate::tenancy::{NewOrganization, NewUser};
use crate::{Lodge, Result, ServiceError};

/// The demo catalog (also the example of the import format).
pub const DEMO_CATALOG: &str = include_str!("../demo/catalog.toml");
pub const DEMO_OWNER_EMAIL: &str = "demo@lodge.test";
pub const DEMO_OWNER_PASSWORD: &str = "lodge-demo-password";
pub const DEMO_STAFF_EMAIL: &str = "admin@lodge.test";
pub const DEMO_STAFF_PASSWORD: &str = "lodge-admin-password";
pub const DEMO_ORG_NAME: &str = "Demo Customer";

#[derive(Debug, Clone, Serialize)]
pub struct DemoPlan {
    pub id: PlanId,
    pub legacy_id: i64,
    pub name: String,
}

/// What `lodge demo --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DemoInfo {
    pub organization_id: OrganizationId,
    pub project_id: ProjectId,
    pub api_key: String,
    pub admin_api_key: String,
    pub owner_email: String,
    pub owner_password: String,
    pub staff_email: String,
    pub staff_password: String,
    pub plans: Vec<DemoPlan>,
}

/// The advisory lock key of the demo's seeding ("lodgdemo").
const DEMO_SEED_LOCK: i64 = 0x6c6f_6467_6465_6d6f;
/// And within one process (SQLite has no advisory lock).
static SEEDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Lodge {
    async fn ensure_user(
        &self,
        email: &str,
        name: &str,
        password: &str,
        staff: bool,
    ) -> Result<users::UserRow> {
        if let Some(u) = users::by_email(self.store.reader(), email).await? {
            return Ok(u);
        }
        match self
            .create_user(NewUser {
                email,
                name,
                password: Some(password),
                is_staff: staff,
            })
            .await
        {
            // Another node seeded it at the same moment.
            Err(ServiceError::Invalid(_)) => users::by_email(self.store.reader(), email)
                .await?
                .ok_or(ServiceError::NotFound),
            other => other,
        }
    }

    /// Whether the demo may be seeded here: into an empty installation, or one the demo
    /// was seeded into before. Elsewhere it would overwrite the operator's plans and TLD
    /// prices of the demo's names, add public coupons, a local nginx server and a staff
    /// login with a published password (found by the operator audit): refused unless
    /// forced.
    pub async fn demo_allowed(&self) -> Result<()> {
        let (users, plans, seeded) =
            orgs::beyond_demo(self.store.reader(), [DEMO_STAFF_EMAIL, DEMO_OWNER_EMAIL]).await?;
        if seeded || (users == 0 && plans == 0) {
            return Ok(());
        }
        Err(ServiceError::Conflict(format!(
            "this database holds an installation ({users} users, {plans} plans) the demo was \
             never seeded into: the demo would overwrite plans and TLD prices of its names and \
             add a staff login with a published password. Seed it into an empty database, \
             or run `lodge demo --force` to seed it here anyway"
        )))
    }

    /// Seeds the demo data (idempotently) and issues fresh demo keys.
    pub async fn seed_demo(&self) -> Result<DemoInfo> {
        // Nodes starting together on one database seed in turn: each looks for the demo
        // organization and creates it when missing (found by the multi-node audit: two
        // nodes made two "Demo Customer" organizations).
        let _in_process = match self.store.engine() {
            lodge_store::Engine::Sqlite => Some(SEEDING.lock().await),
            lodge_store::Engine::Postgres => None,
        };
        let held = self.store.lock(DEMO_SEED_LOCK).await?;
        let seeded = self.seed_demo_unlocked().await;
        self.store.unlock(held).await;
        seeded
    }

    async fn seed_demo_unlocked(&self) -> Result<DemoInfo> {
        // The demo's catalog is priced in US dollars (found by the currencies audit: with
        // another currency the demo said only "the catalog is in USD").
        if self.settings.currency != lodge_core::Currency::USD {
            return Err(ServiceError::field(
                "currency",
                format!(
                    "The demo's catalog is priced in USD, and this installation sells in {}: \
                     run the demo with the default currency, or sell in {} with a catalog of \
                     your own (`lodge catalog import`; `lodge catalog export` of a USD demo \
                     shows the format).",
                    self.settings.currency.code(),
                    self.settings.currency.code()
                ),
            ));
        }
        self.import_catalog_text(DEMO_CATALOG).await?;
        self.ensure_local_nginx_server().await?;
        let staff = self
            .ensure_user(DEMO_STAFF_EMAIL, "Lodge staff", DEMO_STAFF_PASSWORD, true)
            .await?;
        let owner = self
            .ensure_user(DEMO_OWNER_EMAIL, "Demo Owner", DEMO_OWNER_PASSWORD, false)
            .await?;
        let org = match orgs::for_user(self.store.reader(), owner.id)
            .await?
            .into_iter()
            .find(|o| o.name == DEMO_ORG_NAME)
        {
            Some(o) => o,
            None => {
                self.create_organization(NewOrganization {
                    name: DEMO_ORG_NAME,
                    organization_type: Some("professional"),
                    company_name: Some("Demo Customer Ltd"),
                    country: Some("US"),
                    owner: Some(owner.id),
                })
                .await?
            }
        };
        // The demo organization is for trying Lodge (and its benchmarks): room for many
        // orders.
        let org = self
            .set_quotas(
                org.id,
                [
                    ("user_quota", None),
                    ("project_quota", None),
                    ("instance_quota", Some(crate::tenancy::MAX_QUOTA)),
                    ("domain_quota", Some(crate::tenancy::MAX_QUOTA)),
                ],
            )
            .await?;
        let project = orgs::default_project(&mut self.store.read_conn().await?, org.id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let key = self
            .create_org_key(org.id, Some(owner.id), "demo", None, None)
            .await?;
        let admin = self
            .create_key(crate::auth::NewKey {
                name: "demo staff",
                user: staff.id,
                organization: None,
                scopes: Some("read write admin"),
                expires_at: None,
            })
            .await?;
        let catalog = self.catalog().await?;
        Ok(DemoInfo {
            organization_id: org.id,
            project_id: project.id,
            api_key: key.secret,
            admin_api_key: admin.secret,
            owner_email: DEMO_OWNER_EMAIL.to_owned(),
            owner_password: DEMO_OWNER_PASSWORD.to_owned(),
            staff_email: DEMO_STAFF_EMAIL.to_owned(),
            staff_password: DEMO_STAFF_PASSWORD.to_owned(),
            plans: catalog
                .plans
                .iter()
                .map(|p| DemoPlan {
                    id: p.row.id,
                    legacy_id: p.row.legacy_id,
                    name: p.row.name.clone(),
                })
                .collect(),
        })
    }
}
