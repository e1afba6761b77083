//! Provisioning drivers: the control panels (or this machine's nginx) that hold hosting
//! accounts, behind one narrow trait. Every operation is idempotent: `create` finds an
//! account it already made, `terminate` of a gone account succeeds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

pub mod nginx;

/// What a driver needs to know about an account.
#[derive(Debug, Clone)]
pub struct Account {
    /// The account's login on the server (letters and digits).
    pub username: String,
    /// The ASCII domain name it serves.
    pub domain: String,
    /// The panel package (plan) name.
    pub package: String,
    /// A password for the panel, when one was chosen or generated.
    pub password: Option<String>,
    /// The server's hostname.
    pub server: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

#[async_trait]
pub trait Provisioner: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    async fn create(&self, a: &Account) -> Result<(), DriverError>;
    async fn suspend(&self, a: &Account) -> Result<(), DriverError>;
    async fn unsuspend(&self, a: &Account) -> Result<(), DriverError>;
    async fn terminate(&self, a: &Account) -> Result<(), DriverError>;
    async fn change_package(&self, a: &Account, package: &str) -> Result<(), DriverError>;
    async fn change_password(&self, a: &Account, password: &str) -> Result<(), DriverError>;
    /// Where the customer logs in to manage the account, if the driver has such a page.
    async fn login_url(&self, a: &Account) -> Result<Option<String>, DriverError>;
}

/// The drivers a node knows, by name (`nginx`, …).
#[derive(Debug, Clone, Default)]
pub struct Drivers {
    inner: Arc<RwLock<HashMap<String, Arc<dyn Provisioner>>>>,
}

impl Drivers {
    pub fn register(&self, driver: Arc<dyn Provisioner>) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(driver.name().to_owned(), driver);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Provisioner>> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }
}
