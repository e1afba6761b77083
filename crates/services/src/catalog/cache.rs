//! A node's cached catalog view: rebuilt when the stored `catalog_version` moves, checked
//! at most once per [`CHECK_INTERVAL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lodge_store::catalog as db;

use super::Catalog;
use crate::{Lodge, Result};

pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A node's cached catalog.
#[derive(Debug, Clone)]
pub struct CatalogCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    current: RwLock<Option<(Arc<Catalog>, Instant)>>,
    reload: tokio::sync::Mutex<()>,
    /// Moved by every [`CatalogCache::invalidate`]: a reload that began before it read the
    /// catalog as it was before the write, and keeps it only for its own caller (found by
    /// the PostgreSQL race audit: kept as fresh, it answered a plan created a moment
    /// before with 404 for up to 500 ms).
    generation: AtomicU64,
}

impl Default for CatalogCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CatalogCache {
    pub fn new() -> Self {
        CatalogCache {
            inner: Arc::new(CacheInner {
                current: RwLock::new(None),
                reload: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    fn fresh(&self) -> Option<Arc<Catalog>> {
        let guard = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(_, checked)| checked.elapsed() < CHECK_INTERVAL)
            .map(|(c, _)| c.clone())
    }

    fn cached(&self) -> Option<Arc<Catalog>> {
        let guard = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|(c, _)| c.clone())
    }

    /// The generation a reload starts from ([`CacheInner::generation`]).
    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Keeps `c` as the view, unless the catalog was written since `generation` was read.
    fn put(&self, c: Arc<Catalog>, generation: u64) {
        let mut guard = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if self.inner.generation.load(Ordering::Acquire) == generation {
            *guard = Some((c, Instant::now()));
        }
    }

    /// Forgets the view so the next read reloads it (after a local catalog write).
    pub fn invalidate(&self) {
        let mut guard = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        *guard = None;
    }
}

impl Lodge {
    /// The current catalog view (rebuilt if another node or this one changed the catalog).
    pub async fn catalog(&self) -> Result<Arc<Catalog>> {
        if let Some(c) = self.catalog.fresh() {
            return Ok(c);
        }
        let _guard = self.catalog.inner.reload.lock().await;
        if let Some(c) = self.catalog.fresh() {
            return Ok(c);
        }
        let generation = self.catalog.generation();
        let stored = db::version(self.store.reader()).await?;
        if let Some(c) = self.catalog.cached().filter(|c| c.version == stored) {
            self.catalog.put(c.clone(), generation);
            return Ok(c);
        }
        let data = db::load(self.store.reader()).await?;
        let c = Arc::new(Catalog::build(data, self.settings.currency)?);
        self.catalog.put(c.clone(), generation);
        Ok(c)
    }

    /// The catalog read from the database now, bypassing the cached view: for staff views of
    /// what orders change without moving the catalog's version (a coupon's `uses`).
    pub async fn catalog_uncached(&self) -> Result<Arc<Catalog>> {
        let data = db::load(self.store.reader()).await?;
        Ok(Arc::new(Catalog::build(data, self.settings.currency)?))
    }
}
