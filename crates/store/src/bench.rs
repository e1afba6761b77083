//! The bare durable-commit rate of an engine (`lodge bench load` compares Lodge's order
//! rate with it).

use crate::{run_ready, vals, Engine, Result, SqlConn, Store, StoreError};

/// The bare durable-commit rate of an engine with Lodge's settings: `clients` connections
/// each committing one small row per transaction into a scratch table, for `duration`.
/// Returns commits per second. On SQLite the scratch table lives in a sibling file
/// (`<db>.commit-bench`) with the same pragmas, and the commits run on the batch writer (as
/// orders do); on PostgreSQL in the same database (dropped afterwards).
pub async fn bare_commit_rate(
    url: &str,
    clients: usize,
    duration: std::time::Duration,
) -> Result<f64> {
    let engine = Engine::from_url(url)?;
    let url = match engine {
        Engine::Sqlite => {
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            format!("{path}.commit-bench{q}")
        }
        Engine::Postgres => url.to_owned(),
    };
    let store = Store::connect(&url).await?;
    sqlx::query("DROP TABLE IF EXISTS lodge_commit_bench")
        .execute(store.writer())
        .await?;
    sqlx::query("CREATE TABLE lodge_commit_bench (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(store.writer())
        .await?;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let clients = if engine == Engine::Sqlite {
        1
    } else {
        clients.max(1)
    };
    let total = if store.has_batch_writer() {
        // SQLite: one row per transaction on the batch writer, the path orders take, with
        // no thread hand-off per statement — the engine's own ceiling.
        store
            .batch(move |db| {
                let mut done = 0u64;
                while std::time::Instant::now() < start + duration {
                    let id = i64::try_from(done).unwrap_or(i64::MAX);
                    db.transaction(|db| {
                        run_ready(db.exec(
                            "INSERT INTO lodge_commit_bench (id, v) VALUES ($1, 'x')",
                            vals![id],
                        ))
                    })?;
                    done += 1;
                }
                Ok::<u64, StoreError>(done)
            })
            .await??
    } else {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let pool = store.writer().clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                while tokio::time::Instant::now() < deadline {
                    let id = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut tx = pool.begin().await?;
                    sqlx::query("INSERT INTO lodge_commit_bench (id, v) VALUES ($1, 'x')")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    done += 1;
                }
                Ok::<u64, sqlx::Error>(done)
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t
                .await
                .map_err(|e| StoreError::Config(format!("commit bench task: {e}")))??;
        }
        total
    };
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    sqlx::query("DROP TABLE IF EXISTS lodge_commit_bench")
        .execute(store.writer())
        .await?;
    store.close().await;
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64 / secs)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn bare_commit_rate_on_sqlite_counts_commits_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/b.db", dir.path().display());
        let rate = super::bare_commit_rate(&url, 4, std::time::Duration::from_millis(200))
            .await
            .unwrap();
        assert!(rate > 0.0, "{rate}");
        // The scratch table lived in a sibling file and was dropped afterwards.
        let store = super::Store::connect(&format!("{url}.commit-bench"))
            .await
            .unwrap();
        assert!(store.has_batch_writer());
        let left: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'lodge_commit_bench'")
                .fetch_optional(store.reader())
                .await
                .unwrap();
        assert_eq!(left, None);
    }
}
