//! The bare durable-commit rate of an engine (`lodge bench load` compares Lodge's order
//! rate with it).

use crate::{run_ready, vals, Engine, Result, SqlConn, Store, StoreError};

/// One-row commits a job of the batch writer in [`bare_commit_rate`] (about 50 ms of them).
const BARE_COMMITS_A_JOB: u64 = 256;

/// The bare durable-commit rate of an engine with Lodge's settings: `clients` connections
/// each committing one small row per transaction into a scratch table, for `duration`.
/// Returns commits per second. On SQLite the scratch table lives in a sibling file
/// (`<db>.commit-bench`) with the same pragmas, and the commits run on the batch writer (as
/// orders do); on PostgreSQL in the same database (dropped afterwards), as pgbench would:
/// `clients` connections of their own, each commit one prepared `INSERT` (an implicit
/// transaction, one round trip). It went through Lodge's pool, capped at 32 connections,
/// with `BEGIN` and `COMMIT` round trips of their own: about half the rate of `pgbench -c 64
/// -M prepared` with a one-row `INSERT` in the same minutes (BENCHMARKS.md, 2026-12-06
/// evening), which made every ratio against it look twice as good.
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
    // SQLite: a rowid table (`INTEGER PRIMARY KEY`), as in the plain loop it is compared with.
    let table = if engine == Engine::Sqlite {
        "CREATE TABLE lodge_commit_bench (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
    } else {
        "CREATE TABLE lodge_commit_bench (id BIGINT PRIMARY KEY, v TEXT NOT NULL)"
    };
    sqlx::query(table).execute(store.writer()).await?;
    // The scratch table goes whether the run succeeded or not (a failed client, a lost
    // connection): it is no table of Lodge's.
    let measured = commit_loop(&store, &url, clients, duration).await;
    let dropped = sqlx::query("DROP TABLE IF EXISTS lodge_commit_bench")
        .execute(store.writer())
        .await;
    store.close().await;
    let (total, secs) = measured?;
    dropped?;
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64 / secs)
}

/// [`bare_commit_rate`]'s loop on a scratch table made: the commits, and the seconds taken.
async fn commit_loop(
    store: &Store,
    url: &str,
    clients: usize,
    duration: std::time::Duration,
) -> Result<(u64, f64)> {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    // PostgreSQL: the clients' own connections, opened before the clock starts.
    let mut connections = Vec::new();
    if !store.has_batch_writer() {
        use sqlx::Connection;
        for _ in 0..clients.max(1) {
            connections.push(sqlx::PgConnection::connect(url).await?);
        }
    }
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let total = if store.has_batch_writer() {
        // SQLite: one row per transaction on the batch writer, the path orders take, with
        // no thread hand-off per statement — the engine's own ceiling. In jobs of
        // BARE_COMMITS_A_JOB commits, as orders come in group commits: the writer restarts a
        // long WAL between two jobs, and one job of the whole run would append every commit
        // to a WAL growing past its end, each sync also writing the file's new blocks' metadata
        // (about half the rate on this machine's ext4; BENCHMARKS.md, 2026-12-05).
        let mut done = 0u64;
        while std::time::Instant::now() < start + duration {
            let first = done;
            done = store
                .batch(move |db| {
                    let mut done = first;
                    while done - first < BARE_COMMITS_A_JOB
                        && std::time::Instant::now() < start + duration
                    {
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
                .await??;
        }
        done
    } else {
        use std::sync::atomic::{AtomicBool, Ordering};
        // One client's failure ends the run for all: its figure is lost anyway.
        let failed = std::sync::Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for mut conn in connections {
            let counter = counter.clone();
            let failed = failed.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                while tokio::time::Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                    let id = counter.fetch_add(1, Ordering::Relaxed);
                    let insert =
                        sqlx::query("INSERT INTO lodge_commit_bench (id, v) VALUES ($1, 'x')")
                            .bind(id)
                            .execute(&mut conn)
                            .await;
                    if let Err(e) = insert {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    done += 1;
                }
                sqlx::Connection::close(conn).await?;
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
    Ok((total, start.elapsed().as_secs_f64().max(1e-9)))
}

/// SQLite's own durable-commit rate, outside Lodge's machinery: one connection in a plain
/// loop of `BEGIN; INSERT one row; COMMIT` into a rowid table (`INTEGER PRIMARY KEY`) of a
/// scratch file beside the database (`<db>.plain-bench`, removed afterwards), with the
/// batch writer's pragmas (WAL, `synchronous = FULL`, no automatic checkpoint, as Lodge's
/// checkpointer runs them). The same SQLite library Lodge links. Commits per second.
pub async fn plain_sqlite_commit_rate(url: &str, duration: std::time::Duration) -> Result<f64> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Config(format!("not a SQLite URL: {url}")))?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let file = std::path::PathBuf::from(format!("{path}.plain-bench"));
    let run = {
        let file = file.clone();
        move || -> std::result::Result<f64, rusqlite::Error> {
            let db = rusqlite::Connection::open(&file)?;
            db.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 0;
                 DROP TABLE IF EXISTS plain_bench;
                 CREATE TABLE plain_bench (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
            )?;
            let start = std::time::Instant::now();
            let mut done = 0i64;
            let mut insert = db.prepare("INSERT INTO plain_bench (id, v) VALUES (?1, 'x')")?;
            while start.elapsed() < duration {
                db.execute_batch("BEGIN")?;
                insert.execute([done])?;
                db.execute_batch("COMMIT")?;
                done += 1;
                // What the checkpointer would do: keep the WAL from growing without bound.
                if done % 10_000 == 0 {
                    db.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")?;
                }
            }
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            #[allow(clippy::cast_precision_loss)]
            Ok(done as f64 / secs)
        }
    };
    let rate = tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| StoreError::Config(format!("plain commit bench: {e}")))?
        .map_err(|e| StoreError::Config(format!("plain commit bench: {e}")))?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn plain_sqlite_commit_rate_counts_commits_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/b.db", dir.path().display());
        let rate = super::plain_sqlite_commit_rate(&url, std::time::Duration::from_millis(200))
            .await
            .unwrap();
        assert!(rate > 0.0, "{rate}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

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

    /// A run whose commits fail leaves no scratch table behind in the operator's database,
    /// and ends as soon as one client fails: here one commit in the run fails, and the run
    /// of ten minutes ends at once (the others ran on to its end).
    #[tokio::test]
    async fn bare_commit_rate_on_postgres_drops_its_table_when_a_commit_fails() {
        let Some(url) = lodge_testkit::pg::test_database_url().await else {
            return;
        };
        let store = super::Store::connect(&url).await.unwrap();
        // Every table named lodge_commit_bench refuses its row 50, from its creation on.
        for sql in [
            "CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS
             $$BEGIN
                 IF NEW.id = 50 THEN RAISE EXCEPTION 'refused by the test'; END IF;
                 RETURN NEW;
             END$$",
            "CREATE FUNCTION arm_refusal() RETURNS event_trigger LANGUAGE plpgsql AS
             $$BEGIN
                 IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                            WHERE object_identity = 'public.lodge_commit_bench') THEN
                     CREATE TRIGGER refuse BEFORE INSERT ON lodge_commit_bench
                         FOR EACH ROW EXECUTE FUNCTION refuse_row();
                 END IF;
             END$$",
            "CREATE EVENT TRIGGER arm_refusal ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
             EXECUTE FUNCTION arm_refusal()",
        ] {
            sqlx::query(sql).execute(store.writer()).await.unwrap();
        }
        let run = super::bare_commit_rate(&url, 2, std::time::Duration::from_secs(600));
        let err = tokio::time::timeout(std::time::Duration::from_secs(60), run)
            .await
            .expect("the run ends when a client fails")
            .unwrap_err();
        assert!(err.to_string().contains("refused by the test"), "{err}");
        let left: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('lodge_commit_bench')::text")
                .fetch_one(store.reader())
                .await
                .unwrap();
        assert_eq!(left, None);
    }
}

/// What [`fill_services`] wrote, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct ServicesFilled {
    pub organizations: u64,
    pub services: u64,
    pub seconds: f64,
}

/// Bulk-inserts `services` paid, active monthly hosting accounts on plan `plan` (5.00 a
/// month) for the scheduler's benchmark, spread over `services / 10` organizations (each
/// with one project and one order), straight into the tables with `INSERT … SELECT` over a
/// counter, 100,000 rows a statement: the engine's bulk-insert rate, which the renewal pass
/// is compared with. The first `due` accounts (one per organization) end their period on
/// `due_date`; the others on one of the 350 days after `later_from`. Every other
/// organization holds 100.00 of credit (with its ledger entry), so half the renewals are
/// paid from credit as they are issued.
pub async fn fill_services(
    store: &Store,
    services: u64,
    due: u64,
    due_date: &str,
    later_from: &str,
    plan: &str,
    now: i64,
) -> Result<ServicesFilled> {
    const CHUNK: u64 = 100_000;
    let orgs = (services / 10).max(due).max(1);
    let pg = store.engine() == Engine::Postgres;
    // A UUID-shaped id from a prefix digit and a counter.
    let id = |prefix: char, n: &str| {
        if pg {
            format!("'{prefix}0000000-0000-7000-8000-' || lpad(({n})::text, 12, '0')")
        } else {
            format!("'{prefix}0000000-0000-7000-8000-' || substr('000000000000' || ({n}), -12, 12)")
        }
    };
    let later = |n: &str| {
        if pg {
            format!("to_char(DATE '{later_from}' + (({n}) % 350)::int, 'YYYY-MM-DD')")
        } else {
            format!("date('{later_from}', '+' || (({n}) % 350) || ' days')")
        }
    };
    let counter = |from: u64, to: u64| {
        format!(
            "WITH RECURSIVE s(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM s WHERE n < {last}) ",
            last = to.saturating_sub(1)
        )
    };
    let start = std::time::Instant::now();
    let mut from = 0;
    while from < orgs {
        let to = (from + CHUNK).min(orgs);
        let mut tx = store.begin().await?;
        let org = id('1', "n");
        let credit = "(CASE WHEN n % 2 = 0 THEN 10000 ELSE 0 END)";
        for sql in [
            format!(
                "{}INSERT INTO organizations (id, name, credit_balance_minor, created_at, modified_at) \
                 SELECT {org}, 'Bench ' || n, {credit}, {now}, {now} FROM s",
                counter(from, to)
            ),
            format!(
                "{}INSERT INTO projects (id, organization_id, name, is_default, created_at, modified_at) \
                 SELECT {}, {org}, 'Default project', 1, {now}, {now} FROM s",
                counter(from, to),
                id('2', "n")
            ),
            format!(
                "{}INSERT INTO orders (uuid, organization_id, project_id, status, source, currency, actor, created_at, modified_at) \
                 SELECT {}, {org}, {}, 'active', 'admin', 'USD', 'bench', {now}, {now} FROM s",
                counter(from, to),
                id('4', "n"),
                id('2', "n")
            ),
            format!(
                "{}INSERT INTO credit_ledger (organization_id, kind, amount_minor, balance_after_minor, currency, note, actor, created_at) \
                 SELECT {org}, 'deposit', 10000, 10000, 'USD', 'bench', 'bench', {now} FROM s WHERE n % 2 = 0",
                counter(from, to)
            ),
        ] {
            tx.exec(&sql, Vec::new()).await?;
        }
        tx.commit().await?;
        from = to;
    }
    let mut from = 0;
    while from < services {
        let to = (from + CHUNK).min(services);
        let org_of = format!("(n % {orgs})");
        let date = format!(
            "(CASE WHEN n < {due} THEN '{due_date}' ELSE {} END)",
            later("n")
        );
        let sql = format!(
            "{}INSERT INTO hosting (id, organization_id, project_id, order_id, plan_id, domain_name, status, \
                 billing_cycle, recurring_minor, first_period_months, renewal_months, currency, next_due_date, \
                 period_anchor, created_at, modified_at) \
             SELECT {}, {}, {}, (SELECT o.id FROM orders o WHERE o.uuid = {}), '{plan}', 'bench-' || n || '.test', \
                 'active', 'monthly', 500, 1, 1, 'USD', {date}, {date}, {now}, {now} FROM s",
            counter(from, to),
            id('3', "n"),
            id('1', &org_of),
            id('2', &org_of),
            id('4', &org_of),
        );
        let mut tx = store.begin().await?;
        tx.exec(&sql, Vec::new()).await?;
        tx.commit().await?;
        from = to;
    }
    Ok(ServicesFilled {
        organizations: orgs,
        services,
        seconds: start.elapsed().as_secs_f64(),
    })
}
