//! The one-time rebuild of the SQLite tables every order writes into their faster form (no
//! `AUTOINCREMENT`, no `IN` lists in checks and partial indexes), on opening a database
//! last opened by an older build. See [`rebuild_order_tables`].

use sqlx::Executor;

use crate::{Result, StoreError};

/// The SQLite tables every order writes, rebuilt once by [`rebuild_order_tables`] into the
/// form [`wanted_table`] gives their definitions.
const ORDER_TABLES: [&str; 8] = [
    "orders",
    "domains",
    "hosting",
    "hosting_history",
    "invoices",
    "invoice_lines",
    "credit_ledger",
    "jobs",
];

/// Rebuilds the tables every order writes where their stored definition, or one of their
/// indexes', is not yet in the form [`wanted_table`] and [`expand_in_lists`] give it (once;
/// a database already in that form is not touched). Two changes, each of which cost the
/// batch writer time on every order:
/// - No `AUTOINCREMENT` (migrations 0001 and 0002 create it): with it each `INSERT` looked
///   the table up in `sqlite_sequence` and wrote its high-water mark back, about a tenth of
///   the writer's time per order. Without it a new row takes the largest rowid plus one, the
///   same number, as the row with the largest id of these tables is never deleted (only
///   `jobs` loses rows, to retention, which keeps its newest: [`crate::retention`])
///   (<https://sqlite.org/autoinc.html>); a table whose high-water mark is above its largest
///   id anyway keeps the keyword, so no id is ever given twice.
/// - No `IN` list of three or more values in a `CHECK` or a partial index's `WHERE`:
///   SQLite evaluates one through a temporary b-tree it builds and frees for every row
///   written, about a fourteenth of the writer's time. The same test written with `=` and
///   `OR` is a few comparisons.
///
/// SQLite cannot alter a column or a constraint, so each table is rebuilt by its documented
/// procedure (<https://sqlite.org/lang_altertable.html#otheralter>): with foreign keys off,
/// in one `BEGIN IMMEDIATE` transaction, a new table from the wanted definition, the rows
/// copied in rowid order, the old table dropped, the new one renamed and its indexes created
/// again in their wanted form; `foreign_key_check` must then find no broken reference that
/// was not there before, or nothing changes. Not an sqlx migration: sqlx runs those inside a
/// transaction, where foreign keys cannot be turned off, and with them on, dropping a table
/// checks every row that references it (some references have no index: hours on a database
/// of a million orders).
pub(super) async fn rebuild_order_tables(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
) -> Result<()> {
    if tables_to_rebuild(conn).await?.is_empty() {
        return Ok(());
    }
    // A new database (migrations 0001 and 0002 create the old forms) rebuilds its empty
    // tables in no time; an existing one may pause its start for a while: say so.
    let has_orders: i64 = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders)")
        .fetch_one(&mut **conn)
        .await?;
    let has_orders = has_orders != 0;
    if has_orders {
        tracing::info!(
            "rebuilding the order tables in their faster form (once; about a minute per million orders)"
        );
    }
    let started = std::time::Instant::now();
    conn.execute("PRAGMA foreign_keys = OFF").await?;
    let rebuilt = rebuild_tables(conn).await;
    let restored = conn.execute("PRAGMA foreign_keys = ON").await;
    if restored.is_err() {
        // Never hand the writer back to the pool without its foreign keys.
        conn.close_on_drop();
    }
    let names = rebuilt?;
    restored?;
    if has_orders {
        tracing::info!(
            tables = ?names,
            seconds = started.elapsed().as_secs_f64(),
            "order tables rebuilt"
        );
    }
    // The rebuild went through the WAL; give its space back where no reader holds it.
    let _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
    Ok(())
}

/// One table to rebuild: its name, the body of its wanted definition (after the table
/// name), its indexes' wanted definitions, its triggers' definitions (dropping the table
/// drops them: they are made again as they were), and the high-water mark it keeps when it
/// keeps `AUTOINCREMENT`.
#[derive(Debug)]
struct Rebuild {
    table: &'static str,
    body: String,
    indexes: Vec<String>,
    triggers: Vec<String>,
    high_water: Option<i64>,
}

/// The wanted definition of a table from its stored one: without `AUTOINCREMENT` unless
/// `keep_autoincrement`, with its `IN` lists expanded.
fn wanted_table(sql: &str, keep_autoincrement: bool) -> String {
    let sql = if keep_autoincrement {
        sql.to_owned()
    } else {
        sql.replace("PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")
    };
    expand_in_lists(&sql)
}

/// `sql` with each `column IN (a, b, c, ...)` of three or more literal values written as
/// `(column = a OR column = b OR ...)`: the same test, which SQLite evaluates without a
/// temporary b-tree. Only a bare column that opens a condition (at the start, or after
/// `(`, `WHERE`, `AND` or `OR`) is expanded, outside string literals, quoted names and
/// comments; lists of one or two values (SQLite compares those directly), lists of
/// anything but plain literals, `NOT IN` and any other left-hand side are left as they
/// are.
#[expect(
    clippy::indexing_slicing,
    reason = "`code` has one entry per byte of `sql`, and every index is a byte offset found in `sql`"
)]
pub(crate) fn expand_in_lists(sql: &str) -> String {
    const IN: &str = " IN (";
    let literal = |s: &str| {
        let quoted = s.len() >= 2
            && s.starts_with('\'')
            && s.ends_with('\'')
            && !s[1..s.len() - 1].contains('\'');
        quoted || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let ends_with_word = |text: &str, word: &str| {
        text.len()
            .checked_sub(word.len())
            .and_then(|at| text.get(at..).map(|tail| (at, tail)))
            .is_some_and(|(at, tail)| {
                tail.eq_ignore_ascii_case(word)
                    && !text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
    };
    let code = code_bytes(sql);
    let mut out = String::with_capacity(sql.len() * 2);
    // `sql[..copied]` is in `out`; the next match is looked for from `from`.
    let (mut copied, mut from) = (0, 0);
    while let Some(found) = sql[from..].find(IN) {
        let at = from + found;
        let list_start = at + IN.len();
        from = list_start;
        let column_start = sql[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let column = &sql[column_start..at];
        let before = sql[..column_start].trim_end();
        let opens = before.is_empty()
            || before.ends_with('(')
            || ["WHERE", "AND", "OR"]
                .iter()
                .any(|w| ends_with_word(before, w));
        let Some(list_len) = sql[list_start..].find(')') else {
            break;
        };
        let items: Vec<&str> = sql[list_start..list_start + list_len]
            .split(',')
            .map(str::trim)
            .collect();
        let expand = code[at]
            && column_start >= copied
            && column.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && code[column_start]
            && !column.eq_ignore_ascii_case("NOT")
            && opens
            && items.len() > 2
            && items.iter().all(|i| literal(i));
        if !expand {
            continue;
        }
        out.push_str(&sql[copied..column_start]);
        out.push('(');
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                out.push_str(" OR ");
            }
            out.push_str(column);
            out.push_str(" = ");
            out.push_str(item);
        }
        out.push(')');
        copied = list_start + list_len + 1;
        from = copied;
    }
    out.push_str(&sql[copied..]);
    out
}

/// For each byte of `sql`, whether it is SQL text proper: not inside a string literal, a
/// quoted name (`"…"`, `[…]`, `` `…` ``) or a comment (`-- …`, `/* … */`).
#[expect(
    clippy::indexing_slicing,
    reason = "`i < b.len()` in the loop, and every `end` is at most `b.len()`"
)]
fn code_bytes(sql: &str) -> Vec<bool> {
    let b = sql.as_bytes();
    let mut code = vec![true; b.len()];
    let mut i = 0;
    while i < b.len() {
        let end = match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                // A doubled quote inside stands for one.
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => break b.len(),
                        Some(&c) if c == q && b.get(j + 1) == Some(&q) => j += 2,
                        Some(&c) if c == q => break j + 1,
                        Some(_) => j += 1,
                    }
                }
            }
            b'[' => b[i..]
                .iter()
                .position(|&c| c == b']')
                .map_or(b.len(), |p| i + p + 1),
            b'-' if b.get(i + 1) == Some(&b'-') => b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1),
            b'/' if b.get(i + 1) == Some(&b'*') => b[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(b.len(), |p| i + 2 + p + 2),
            _ => {
                i += 1;
                continue;
            }
        };
        code[i..end].fill(false);
        i = end;
    }
    code
}

/// The tables of [`ORDER_TABLES`] whose definition or one of whose indexes' is not in its
/// wanted form. A table keeps `AUTOINCREMENT` where its high-water mark is above its
/// largest id (rows deleted at the end, whose ids must not be given again).
async fn tables_to_rebuild(conn: &mut sqlx::AnyConnection) -> Result<Vec<Rebuild>> {
    let mut tables = Vec::new();
    for table in ORDER_TABLES {
        let sql: Option<String> =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
                .bind(table)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(sql) = sql else {
            continue;
        };
        let mut keep_high_water = None;
        if sql.contains("AUTOINCREMENT") {
            let high_water: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                    .bind(table)
                    .fetch_optional(&mut *conn)
                    .await?;
            let largest: Option<i64> =
                sqlx::query_scalar(&format!("SELECT MAX(rowid) FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await?;
            if high_water.unwrap_or(0) > largest.unwrap_or(0) {
                tracing::debug!(
                    table,
                    "keeps AUTOINCREMENT: rows above its largest id were deleted"
                );
                keep_high_water = high_water;
            }
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL ORDER BY name",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let wanted = wanted_table(&sql, keep_high_water.is_some());
        let wanted_indexes: Vec<String> = indexes.iter().map(|i| expand_in_lists(i)).collect();
        if wanted == sql && wanted_indexes == indexes {
            continue;
        }
        // A table renamed by an earlier rebuild is stored with its name quoted.
        let body = [
            format!("CREATE TABLE {table} ("),
            format!("CREATE TABLE \"{table}\" ("),
        ]
        .iter()
        .find_map(|prefix| wanted.strip_prefix(prefix.as_str()))
        .ok_or_else(|| StoreError::Corrupt(format!("unexpected definition of {table}: {sql}")))?
        .to_owned();
        let triggers: Vec<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = $1 ORDER BY name",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        tables.push(Rebuild {
            table,
            body,
            indexes: wanted_indexes,
            triggers,
            high_water: keep_high_water,
        });
    }
    Ok(tables)
}

/// A reference `foreign_key_check` finds broken: table, rowid, parent table, key number.
type BrokenReference = (String, Option<i64>, String, i64);

async fn broken_references(
    conn: &mut sqlx::AnyConnection,
) -> Result<std::collections::BTreeSet<BrokenReference>> {
    let rows: Vec<BrokenReference> =
        sqlx::query_as("SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check")
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The rebuild of [`rebuild_order_tables`], in one transaction that holds the write lock
/// from its start (rows another process writes meanwhile wait for it, and are not lost).
/// What to rebuild is read again under that lock, so a process that opened the database
/// at the same moment and rebuilt it first (or a newer build, which may have changed the
/// schema since) is seen, and its work is neither done twice nor undone. Returns the
/// tables rebuilt.
async fn rebuild_tables(conn: &mut sqlx::AnyConnection) -> Result<Vec<&'static str>> {
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let tables = tables_to_rebuild(&mut tx).await?;
    if tables.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let broken_before = broken_references(&mut tx).await?;
    for Rebuild {
        table,
        body,
        indexes,
        triggers,
        high_water,
    } in &tables
    {
        tx.execute(format!("CREATE TABLE lodge_rebuild ({body}").as_str())
            .await?;
        tx.execute(
            format!("INSERT INTO lodge_rebuild SELECT * FROM {table} ORDER BY rowid").as_str(),
        )
        .await?;
        tx.execute(format!("DROP TABLE {table}").as_str()).await?;
        tx.execute(format!("ALTER TABLE lodge_rebuild RENAME TO {table}").as_str())
            .await?;
        if let Some(seq) = high_water {
            // The copy set the new table's mark to its largest id; the old one was higher.
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1")
                .bind(*table)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                .bind(*table)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
        }
        for index in indexes {
            tx.execute(index.as_str()).await?;
        }
        for trigger in triggers {
            tx.execute(trigger.as_str()).await?;
        }
    }
    let broken_after = broken_references(&mut tx).await?;
    let broken: Vec<_> = broken_after.difference(&broken_before).collect();
    if !broken.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "rebuilding the order tables would break references {broken:?}; nothing changed"
        )));
    }
    tx.commit().await?;
    Ok(tables.iter().map(|t| t.table).collect())
}

#[cfg(test)]
mod tests {
    /// Opening a database whose order tables have AUTOINCREMENT and `IN` lists (migrations
    /// 0001–0007) rebuilds them in their wanted form: on a database that already holds
    /// orders (and every kind of row referencing them), each row keeps its id and columns,
    /// every reference stays as it was, the indexes are the same but for their `IN` lists,
    /// the next row takes the next id, no insert into these tables builds a temporary
    /// b-tree, the checks still refuse what they refused, and the writer keeps its foreign
    /// keys. A table whose high-water mark is above its largest id keeps the keyword and
    /// the mark. A table renamed before (stored with its name quoted) is rebuilt too.
    /// Opening it again changes nothing.
    #[tokio::test]
    async fn opening_rebuilds_the_order_tables_and_keeps_every_row_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .unwrap();
        // Every migration, as a database last opened by a build before the rebuild would
        // have had them applied by a later one; the rows are written in the old form.
        for m in crate::sqlite::MIGRATIONS.iter() {
            db.execute_batch(&m.sql).unwrap();
        }
        db.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                 checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
        )
        .unwrap();
        for m in crate::sqlite::MIGRATIONS.iter() {
            db.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ($1, $2, TRUE, $3, 0)",
                rusqlite::params![m.version, m.description.as_ref(), m.checksum.as_ref()],
            )
            .unwrap();
        }
        db.execute_batch(
            "INSERT INTO organizations (id, name, credit_balance_minor, created_at, modified_at) VALUES ('org', 'O', 500, 1, 1);
             INSERT INTO projects (id, organization_id, name, is_default, created_at, modified_at) VALUES ('prj', 'org', 'P', 1, 1, 1);
             INSERT INTO plan_groups (id, slug, name, created_at, modified_at) VALUES ('grp', 'g', 'G', 1, 1);
             INSERT INTO plans (legacy_id, id, group_id, slug, name, created_at, modified_at) VALUES (1, 'pln', 'grp', 'p', 'P', 1, 1);
             INSERT INTO orders (id, uuid, organization_id, project_id, status, source, currency, actor, created_at, modified_at)
                 VALUES (7, 'o7', 'org', 'prj', 'active', 'v1', 'USD', 'a', 1, 1),
                        (9, 'o9', 'org', 'prj', 'pending', 'v1', 'USD', 'a', 2, 2);
             INSERT INTO domains (legacy_id, id, organization_id, project_id, order_id, name, sld, tld, status, registrar, created_at, modified_at)
                 VALUES (3, 'dom', 'org', 'prj', 7, 'a.com', 'a', 'com', 'pending_registration', 'none', 1, 1);
             INSERT INTO hosting (legacy_id, id, organization_id, project_id, order_id, plan_id, domain_name, domain_id, status,
                     billing_cycle, recurring_minor, currency, created_at, modified_at, comment)
                 VALUES (5, 'hst', 'org', 'prj', 7, 'pln', 'a.com', 'dom', 'provisioning', 'monthly', 100, 'USD', 1, 1, 'hi'),
                        (6, 'hs2', 'org', 'prj', 9, 'pln', 'b.com', NULL, 'pending', 'monthly', 100, 'USD', 2, 2, '');
             INSERT INTO hosting_history (id, hosting_id, to_status, actor, created_at) VALUES (11, 'hst', 'provisioning', 'a', 1);
             INSERT INTO invoices (id, number, organization_id, order_id, kind, status, currency, subtotal_minor, total_minor,
                     credit_applied_minor, payment_token_digest, due_date, issued_at, created_at, modified_at)
                 VALUES (4, 'INV-000001', 'org', 7, 'first', 'paid', 'USD', 100, 100, 100, 't4', '2026-01-01', 1, 1, 1),
                        (8, 'INV-000002', 'org', 9, 'first', 'unpaid', 'USD', 100, 100, 0, 't8', '2026-01-01', 2, 2, 2);
             INSERT INTO invoice_lines (id, invoice_id, position, kind, description, service_id, period_start, amount_minor)
                 VALUES (12, 4, 0, 'plan', 'Plan', 'hst', '2026-01-01', 100);
             INSERT INTO credit_ledger (id, organization_id, kind, amount_minor, balance_after_minor, currency, invoice_id, actor, created_at)
                 VALUES (2, 'org', 'deposit', 600, 600, 'USD', NULL, 'a', 1),
                        (13, 'org', 'applied', -100, 500, 'USD', 4, 'a', 1);
             INSERT INTO payments (id, invoice_id, organization_id, method, reference, amount_minor, currency, actor, created_at)
                 VALUES ('pay', 4, 'org', 'credit', 'r', 100, 'USD', 'a', 1);
             INSERT INTO jobs (id, kind, payload, status, run_at, dedupe_key, created_at, modified_at)
                 VALUES (21, 'provision', '{}', 'queued', 1, 'k', 1, 1);",
        )
        .unwrap();
        // A reference broken before the upgrade (a restore made with foreign keys off) does
        // not stop it; jobs above id 21 were deleted, so jobs keeps its AUTOINCREMENT.
        db.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO payments (id, invoice_id, organization_id, method, reference, amount_minor, currency, actor, created_at)
                 VALUES ('lost', 99, 'org', 'card', 'x', 5, 'USD', 'a', 1);
             PRAGMA foreign_keys = ON;
             UPDATE sqlite_sequence SET seq = 50 WHERE name = 'jobs';
             ALTER TABLE orders RENAME TO orders_before;
             ALTER TABLE orders_before RENAME TO orders;",
        )
        .unwrap();
        // The columns the tables have before the upgrade (later migrations may add some).
        let columns: Vec<(&str, String)> = super::ORDER_TABLES
            .iter()
            .chain(&["payments"])
            .map(|t| {
                let mut st = db.prepare(&format!("PRAGMA table_info({t})")).unwrap();
                let names: Vec<String> = st
                    .query_map([], |r| r.get::<_, String>(1))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                (*t, names.join(", "))
            })
            .collect();
        let dump = |db: &rusqlite::Connection| -> Vec<String> {
            let mut out = Vec::new();
            for (t, cols) in &columns {
                let mut st = db
                    .prepare(&format!("SELECT {cols} FROM {t} ORDER BY rowid"))
                    .unwrap();
                let n = st.column_count();
                let rows = st
                    .query_map([], |r| {
                        let vals: Vec<String> = (0..n)
                            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                            .collect();
                        Ok(format!("{t}: {}", vals.join(", ")))
                    })
                    .unwrap();
                out.extend(rows.map(|r| r.unwrap()));
            }
            out
        };
        let indexes = |db: &rusqlite::Connection| -> Vec<(String, String)> {
            let mut st = db
                .prepare("SELECT name, COALESCE(sql, ''), tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name")
                .unwrap();
            // The order tables' (later migrations may index other tables).
            st.query_map([], |r| {
                Ok((r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap()))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|(_, _, t): &(String, String, String)| {
                super::ORDER_TABLES.contains(&t.as_str())
            })
            .map(|(n, s, _)| (n, s))
            .collect()
        };
        let rows_before = dump(&db);
        let indexes_before: Vec<(String, String)> = indexes(&db)
            .into_iter()
            .map(|(name, sql)| (name, super::expand_in_lists(&sql)))
            .collect();
        assert!(
            indexes_before.iter().any(|(n, s)| n == "hosting_live_name"
                && s.ends_with("WHERE (status = 'pending' OR status = 'provisioning' OR status = 'active' OR status = 'suspended' OR status = 'failed')")),
            "{indexes_before:?}"
        );
        assert_eq!(rows_before.len(), 14, "{rows_before:?}");
        drop(db);

        for _ in 0..2 {
            let store = crate::Store::open(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(store.writer())
                .await
                .unwrap();
            assert_eq!(fk, 1, "the writer lost its foreign keys");
            store.close().await;
        }
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        assert_eq!(dump(&db), rows_before);
        assert_eq!(indexes(&db), indexes_before);
        // The triggers that keep the organizations' counts (0027) are made again with the
        // tables, and count what is written after.
        let triggers: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            triggers,
            [
                "domains_count_delete",
                "domains_count_insert",
                "domains_count_update",
                "hosting_count_delete",
                "hosting_count_insert",
                "hosting_count_update"
            ]
        );
        let counts = |db: &rusqlite::Connection| -> (i64, i64) {
            db.query_row(
                "SELECT live_accounts, live_domains FROM organization_counts WHERE organization_id = 'org'",
                [],
                |r| Ok((r.get(0).unwrap(), r.get(1).unwrap())),
            )
            .unwrap()
        };
        assert_eq!(counts(&db), (2, 1));
        db.execute_batch("UPDATE hosting SET status = 'cancelled' WHERE id = 'hs2'; UPDATE domains SET status = 'cancelled' WHERE id = 'dom';")
            .unwrap();
        assert_eq!(counts(&db), (1, 0));
        let broken: Vec<String> = db
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(broken, ["payments"]);
        let left: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE sql LIKE '%AUTOINCREMENT%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .filter(|t: &String| super::ORDER_TABLES.contains(&t.as_str()))
            .collect();
        assert_eq!(left, ["jobs"]);
        for t in super::ORDER_TABLES {
            let cols: Vec<String> = db
                .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let insert = format!(
                "EXPLAIN INSERT INTO {t} ({}) VALUES ({})",
                cols.join(", "),
                vec!["NULL"; cols.len()].join(", ")
            );
            let ops: Vec<String> = db
                .prepare(&insert)
                .unwrap()
                .query_map([], |r| r.get(1))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert!(ops.iter().any(|o| o == "Insert"), "{t}: {ops:?}");
            assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{t}: {ops:?}");
        }
        let refused = db
            .execute("UPDATE hosting SET status = 'gone' WHERE id = 'hst'", [])
            .unwrap_err();
        assert!(
            refused.to_string().contains("CHECK constraint failed"),
            "{refused}"
        );
        assert!(db
            .query_row("SELECT COUNT(*) FROM lodge_rebuild", [], |r| r
                .get::<_, i64>(0))
            .is_err());
        db.execute_batch(
            "INSERT INTO orders (uuid, organization_id, project_id, status, source, currency, actor, created_at, modified_at)
                 VALUES ('o10', 'org', 'prj', 'pending', 'v1', 'USD', 'a', 3, 3);",
        )
        .unwrap();
        assert_eq!(db.last_insert_rowid(), 10);
        db.execute_batch(
            "INSERT INTO jobs (kind, payload, status, run_at, created_at, modified_at)
                 VALUES ('provision', '{}', 'queued', 1, 1, 1);",
        )
        .unwrap();
        assert_eq!(db.last_insert_rowid(), 51);
    }

    #[test]
    fn in_lists_of_three_literals_or_more_are_expanded() {
        use super::expand_in_lists as x;
        assert_eq!(
            x("status TEXT NOT NULL CHECK (status IN ('a', 'b', 'c')),"),
            "status TEXT NOT NULL CHECK ((status = 'a' OR status = 'b' OR status = 'c')),"
        );
        assert_eq!(
            x("CHECK (kind IN (1, 2, 3)) ON t (n) WHERE s IN ('x','y','z')"),
            "CHECK ((kind = 1 OR kind = 2 OR kind = 3)) ON t (n) WHERE (s = 'x' OR s = 'y' OR s = 'z')"
        );
        assert_eq!(
            x("WHERE a = 1 AND s IN ('a','b','c') OR\tt IN (1, 2, 3)"),
            "WHERE a = 1 AND (s = 'a' OR s = 'b' OR s = 'c') OR\t(t = 1 OR t = 2 OR t = 3)"
        );
        for same in [
            "CHECK (n + 1 IN (1, 2, 3))",
            "CHECK (s COLLATE NOCASE IN ('a', 'b', 'c'))",
            "WHERE h.status IN ('a', 'b', 'c')",
            "x TEXT DEFAULT 'y IN (1, 2, 3)' CHECK (x <> '')",
            "x TEXT, -- (s IN ('a', 'b', 'c'))\n y TEXT",
            "x TEXT /* (s IN ('a', 'b', 'c')) */",
            "CHECK (\"s IN ('a', 'b', 'c')\")",
            "CHECK (s IN ('it''s (a) IN (1, 2, 3)', 'b'))",
            "CHECK (1 IN (1, 2, 3))",
            "CHECK (flag IN (0, 1))",
            "CHECK (s NOT IN ('a', 'b', 'c'))",
            "CHECK (s IN ('a', 'b', lower(s)))",
            "CHECK (s IN ('a,b', 'c', 'd'))",
            "CHECK (s IN ('it''s', 'c', 'd'))",
            "CHECK (s IN (SELECT 1))",
            " IN ('a', 'b', 'c')",
            "CHECK (s IN ('a', 'b', 'c'",
        ] {
            assert_eq!(x(same), same);
        }
        let once = x("a IN ('p', 'q', 'r') AND b IN (1, 2, 3, 4)");
        assert_eq!(
            once,
            "(a = 'p' OR a = 'q' OR a = 'r') AND (b = 1 OR b = 2 OR b = 3 OR b = 4)"
        );
        assert_eq!(x(&once), once);
    }
}
