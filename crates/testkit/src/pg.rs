//! One throwaway PostgreSQL cluster per test process.
//!
//! The cluster is started lazily by [`shared_cluster`] and lives in a static,
//! which is never dropped. So postgres runs under a small `sh` watchdog that
//! polls `/proc/<test pid>` every 0.5 s and, once the test process is gone,
//! stops postgres (SIGINT, fast shutdown) and removes the data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::{find_in_path, is_executable, lookup_user, running_as_root, skip_or_fail, tail};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Args: $1 postgres binary, $2 data dir, $3 port, $4 base dir (socket, log,
/// removed at the end), $5 pid of the test process.
const WATCHDOG: &str = r#"
base="$4"
(
  "$1" -D "$2" -p "$3" -k "$4" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=300 -c shared_buffers=64MB >"$base/postgres.log" 2>&1 &
  echo $! >"$base/postgres.child"
  wait $!
  echo $? >"$base/postgres.exited"
) &
sub=$!
while [ -d "/proc/$5" ]; do sleep 0.5; done
i=0
while [ ! -s "$base/postgres.child" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -INT "$(cat "$base/postgres.child" 2>/dev/null)" 2>/dev/null
wait $sub
rm -rf "$base"
"#;

/// A running throwaway cluster (trust auth, superuser `postgres`, loopback).
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    base: PathBuf,
}

static CLUSTER: OnceCell<Result<Option<PgCluster>, String>> = OnceCell::const_new();

/// The process-wide cluster, started on first use. `Ok(None)` when the
/// PostgreSQL server binaries are not installed (call [`skip_or_fail`]).
/// A start failure is cached, so later callers fail fast with the same error.
pub async fn shared_cluster() -> anyhow::Result<Option<&'static PgCluster>> {
    let cell = CLUSTER
        .get_or_init(|| async { PgCluster::start().await.map_err(|e| format!("{e:#}")) })
        .await;
    match cell {
        Ok(cluster) => Ok(cluster.as_ref()),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// URL of a fresh, empty database on the shared cluster, or `None` after
/// calling [`skip_or_fail`]`("postgres", reason)`.
pub async fn test_database_url() -> Option<String> {
    let why = match shared_cluster().await {
        Ok(Some(cluster)) => match cluster.fresh_database().await {
            Ok(url) => return Some(url),
            Err(e) => format!("cannot create a test database: {e:#}"),
        },
        Ok(None) => "PostgreSQL server binaries (initdb, postgres) not found; \
                     set LODGE_PG_BIN_DIR or install postgresql"
            .to_owned(),
        Err(e) => format!("cannot start a PostgreSQL cluster: {e:#}"),
    };
    skip_or_fail("postgres", &why);
    None
}

/// Directory holding `initdb` and `postgres`: `$LODGE_PG_BIN_DIR`, then
/// `PATH`, then the highest `/usr/lib/postgresql/<version>/bin`, then
/// `/usr/local/pgsql/bin`.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let usable = |d: &Path| is_executable(&d.join("initdb")) && is_executable(&d.join("postgres"));
    let from_env = std::env::var_os("LODGE_PG_BIN_DIR").map(PathBuf::from);
    let from_path = find_in_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf));
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .collect();
    versioned.sort();
    from_env
        .into_iter()
        .chain(from_path)
        .chain(versioned.into_iter().rev().map(|(_, dir)| dir))
        .chain([PathBuf::from("/usr/local/pgsql/bin")])
        .find(|d| usable(d))
}

impl PgCluster {
    async fn start() -> anyhow::Result<Option<PgCluster>> {
        use std::os::unix::fs::{chown, PermissionsExt};

        let Some(bin_dir) = pg_bin_dir() else {
            return Ok(None);
        };
        // PostgreSQL refuses to run as root.
        let run_as =
            if running_as_root() {
                let user = lookup_user("postgres").or_else(|| lookup_user("nobody"));
                Some(user.context(
                    "running as root, but neither a `postgres` nor a `nobody` user exists",
                )?)
            } else {
                None
            };
        // Under another user the path must be traversable by it: use /tmp.
        let parent = match run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let tmp = tempfile::Builder::new()
            .prefix("lodge-pg-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a temp dir in {}", parent.display()))?;
        let base = tmp.path().to_path_buf();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = run_as {
            chown(&base, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", base.display()))?;
        }
        let data = base.join("data");

        let mut initdb = tokio::process::Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(&base)
            .kill_on_drop(true);
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb
            .output()
            .await
            .with_context(|| format!("running {}/initdb", bin_dir.display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let port = crate::free_port()?;
        let postgres = bin_dir.join("postgres");
        let port_arg = port.to_string();
        let pid_arg = std::process::id().to_string();
        crate::spawn_watchdog(
            WATCHDOG,
            &[
                postgres.as_os_str(),
                data.as_os_str(),
                port_arg.as_ref(),
                base.as_os_str(),
                pid_arg.as_ref(),
            ],
            run_as,
        )
        .context("spawning the postgres watchdog")?;
        // From now on the watchdog owns (and eventually removes) the dir.
        let _ = tmp.keep();

        let cluster = PgCluster { port, base };
        cluster.wait_ready().await?;
        Ok(Some(cluster))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let log = self.base.join("postgres.log");
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                PgConnection::connect(&self.admin_url()),
            )
            .await;
            let err = match attempt {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connect timed out".to_owned(),
            };
            if self.base.join("postgres.exited").exists() {
                bail!(
                    "postgres exited during startup; log {}:\n{}",
                    log.display(),
                    tail(&log, 40)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres did not accept connections on 127.0.0.1:{} within {:?} \
                     (last error: {err}); log {}:\n{}",
                    self.port,
                    STARTUP_TIMEOUT,
                    log.display(),
                    tail(&log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` (user `postgres`, no password).
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// URL of the `postgres` maintenance database, as superuser.
    pub fn admin_url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates a new empty database with a unique name and returns its URL.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        let name = format!("lodge_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&self.admin_url())
            .await
            .with_context(|| format!("connecting to {}", self.admin_url()))?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = conn.close().await;
        Ok(self.url_for(&name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    async fn cluster() -> Option<&'static PgCluster> {
        match shared_cluster().await {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                skip_or_fail("postgres", "PostgreSQL server binaries not found");
                None
            }
            Err(e) => panic!("starting the test cluster failed: {e:#}"),
        }
    }

    #[tokio::test]
    async fn two_fresh_databases_are_distinct_and_usable() {
        let Some(cluster) = cluster().await else {
            return;
        };
        let a = cluster.fresh_database().await.unwrap();
        let b = cluster.fresh_database().await.unwrap();
        assert_ne!(a, b);
        for url in [&a, &b] {
            let mut conn = PgConnection::connect(url).await.unwrap();
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(one, 1);
            let db: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert!(url.ends_with(&format!("/{db}")), "{url} vs {db}");
            conn.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn test_database_url_uses_the_shared_cluster() {
        let Some(url) = test_database_url().await else {
            return;
        };
        let cluster = cluster().await.unwrap();
        assert!(url.starts_with(&format!(
            "postgres://postgres@127.0.0.1:{}/",
            cluster.port()
        )));
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}
