//! Moving an installation from SQLite to PostgreSQL: every row of a SQLite database copied
//! into an empty PostgreSQL database of the same schema ([`sqlite_to_postgres`], behind
//! `lodge copy-to`).
//!
//! The source is read in one read transaction (one consistent snapshot, even while a node
//! writes to it; what is written after the snapshot is not copied), opened read-only and
//! never changed. The target is migrated first, must hold no data, and is written in one
//! transaction: either every row arrives, each table's rows read counted against those
//! written, or nothing does.
//! Rows go in the order of the target's foreign keys (a table after those it references),
//! each value as text cast to its column's PostgreSQL type. The live-count triggers
//! (migration 0031) are off while the rows go in, as the counts are rows of their own,
//! copied as they stand; the identity columns' sequences are moved past the largest id
//! copied, so new rows number on from there; the tables are analyzed at the end (a planner
//! without statistics chose a partial index badly once: see `postgres.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sqlx::Row as _;

use crate::{Engine, Result, Store, StoreError};

/// How many values one `INSERT` binds at most (PostgreSQL allows 65,535).
const VALUES_PER_STATEMENT: usize = 30_000;

/// Tables the target's migrations fill themselves (with the values a new installation
/// starts at), emptied before the source's rows are copied into them.
const SEEDED_BY_MIGRATIONS: [&str; 1] = ["counters"];

/// What was copied: each table with its number of rows, in the order they were written.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.1).sum()
    }
}

/// One target table: its columns (name, PostgreSQL type) in order, and its identity column.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<(String, String)>,
    identity: Option<String>,
}

/// Rows read from the source, or the end of a table with its count.
enum Chunk {
    Rows(Vec<Vec<Option<String>>>),
    End(u64),
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn refused(msg: impl Into<String>) -> StoreError {
    StoreError::Refused(msg.into())
}

/// Copies every row of the SQLite database at `source` into the PostgreSQL database at
/// `target_url` (see the module's documentation). `progress` is told each table as it is
/// done, with its rows. Refused, with nothing written, when the source is not at this
/// build's latest migration, or when the target holds tables of another application, data
/// of an installation, or is not encoded in UTF-8. A failure after the target was migrated
/// (a table or column of the source without a place in it, a row it refuses) leaves its
/// Lodge tables empty, for another try.
pub async fn sqlite_to_postgres(
    source: &Path,
    target_url: &str,
    progress: impl Fn(&str, u64),
) -> Result<CopyReport> {
    if Engine::from_url(target_url)? != Engine::Postgres {
        return Err(refused("the copy's target must be a postgres:// database"));
    }
    let source = source.to_path_buf();
    let schema = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source_schema(&source))
            .await
            .map_err(|e| refused(format!("reading the source: {e}")))??
    };
    let store = Store::connect(target_url).await?;
    let result = async {
        // Nothing is made in a database that is not the copy's to fill (found by the copy
        // audit: another application's database was given Lodge's tables, and a LATIN1 one
        // half of them, before the copy refused).
        preflight(&store).await?;
        store.migrate().await?;
        copy_into(&store, source, &schema, &progress).await
    }
    .await;
    store.close().await;
    result
}

/// Refuses a target that is not encoded in UTF-8, or that holds tables while Lodge's are
/// not there (another application's database, or the wrong schema).
async fn preflight(store: &Store) -> Result<()> {
    let (encoding,): (String,) = sqlx::query_as(
        "SELECT pg_encoding_to_char(encoding)::text \
         FROM pg_catalog.pg_database WHERE datname = current_database()",
    )
    .fetch_one(store.reader())
    .await?;
    if encoding != "UTF8" {
        return Err(refused(format!(
            "the target database is encoded in {encoding}: Lodge's text needs UTF8 (create it \
             with `createdb -E UTF8 -T template0 …`)"
        )));
    }
    if store.is_installed().await? {
        return Ok(());
    }
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = current_schema() \
         ORDER BY 1 LIMIT 5",
    )
    .fetch_all(store.reader())
    .await?;
    if !others.is_empty() {
        return Err(refused(format!(
            "the target database holds tables that are not Lodge's ({}…): copy into a new, \
             empty database",
            others.join(", ")
        )));
    }
    Ok(())
}

/// What the copy needs to know of the source: its tables with their rows, their columns,
/// and the ids `AUTOINCREMENT` tables have handed out (their high-water marks).
struct SourceSchema {
    tables: BTreeMap<String, u64>,
    columns: BTreeMap<String, BTreeSet<String>>,
    handed_out: BTreeMap<String, i64>,
}

/// The source's tables with their rows and their columns, after checking that its
/// migrations are exactly this build's.
fn source_schema(path: &Path) -> Result<SourceSchema> {
    if !path.exists() {
        return Err(refused(format!("no SQLite database at {}", path.display())));
    }
    if !path.is_file() {
        return Err(refused(format!(
            "{} is not a file: give the SQLite database's file",
            path.display()
        )));
    }
    let conn = open_source(path)?;
    let has_migrations: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
         AND name = '_sqlx_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_migrations {
        return Err(refused(format!(
            "{} holds no Lodge installation (no migrations were applied to it)",
            path.display()
        )));
    }
    let applied: BTreeSet<i64> = conn
        .prepare("SELECT version FROM _sqlx_migrations WHERE success")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let known: BTreeSet<i64> = crate::sqlite::MIGRATIONS
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    if let Some(v) = applied.difference(&known).next() {
        return Err(refused(format!(
            "{} was migrated by a newer Lodge (its migration {v} is unknown to this build): \
             copy it with that build",
            path.display()
        )));
    }
    if let Some(v) = known.difference(&applied).next() {
        return Err(refused(format!(
            "{} lacks this build's migration {v}: run `lodge migrate` on it (or start this \
             build of Lodge on it once) first",
            path.display()
        )));
    }
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' \
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut tables = BTreeMap::new();
    let mut columns = BTreeMap::new();
    for name in names {
        let rows: i64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM {}", quote(&name)), [], |r| {
                r.get(0)
            })?;
        let cols: BTreeSet<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([&name], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        tables.insert(name.clone(), u64::try_from(rows).unwrap_or(0));
        columns.insert(name, cols);
    }
    // A table with `AUTOINCREMENT` never gives an id twice, even one whose row was deleted:
    // the sequence goes on past its mark, not past its largest id left (found by the copy
    // audit: a deleted webhook endpoint's id was given again).
    let has_marks: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')",
        [],
        |r| r.get(0),
    )?;
    let handed_out = if has_marks {
        conn.prepare("SELECT name, seq FROM sqlite_sequence")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<std::result::Result<_, _>>()?
    } else {
        BTreeMap::new()
    };
    Ok(SourceSchema {
        tables,
        columns,
        handed_out,
    })
}

async fn copy_into(
    store: &Store,
    source: std::path::PathBuf,
    schema: &SourceSchema,
    progress: &impl Fn(&str, u64),
) -> Result<CopyReport> {
    let (source_tables, source_columns) = (&schema.tables, &schema.columns);
    let mut conn = store.writer().acquire().await?;
    let (tables, edges, triggered) = target_schema(&mut conn).await?;

    // Every source table and column must have a place in the target.
    for (name, rows) in source_tables {
        let Some(target) = tables.get(name) else {
            if *rows > 0 {
                return Err(refused(format!(
                    "the source's table {name} ({rows} rows) has no counterpart in the target"
                )));
            }
            continue;
        };
        let target_cols: BTreeSet<&str> = target.columns.iter().map(|c| c.0.as_str()).collect();
        if let Some(missing) = source_columns
            .get(name)
            .into_iter()
            .flatten()
            .find(|c| !target_cols.contains(c.as_str()))
        {
            return Err(refused(format!(
                "the source's column {name}.{missing} has no counterpart in the target"
            )));
        }
    }
    // The target must hold no data (an installation already started there, or another
    // copy): nothing is overwritten.
    for name in tables.keys() {
        if SEEDED_BY_MIGRATIONS.contains(&name.as_str()) {
            continue;
        }
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote(name));
        let (any,): (bool,) = sqlx::query_as(&sql).fetch_one(&mut *conn).await?;
        if any {
            return Err(refused(format!(
                "the target database holds data already (its table {name} has rows): copy \
                 into a new, empty database"
            )));
        }
    }

    // The tables both have, each after those it references; the columns the source has.
    let order = dependency_order(&tables, &edges)?;
    let plan: Vec<Table> = order
        .into_iter()
        .filter(|t| source_tables.contains_key(t))
        .filter_map(|t| {
            let table = tables.get(&t)?;
            let cols = source_columns.get(&t)?;
            Some(Table {
                name: t.clone(),
                columns: table
                    .columns
                    .iter()
                    .filter(|c| cols.contains(&c.0))
                    .cloned()
                    .collect(),
                identity: table.identity.clone().filter(|i| cols.contains(i)),
            })
        })
        .collect();

    let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
    for name in SEEDED_BY_MIGRATIONS {
        sqlx::query(&format!("DELETE FROM {}", quote(name)))
            .execute(&mut *tx)
            .await?;
    }
    for name in &triggered {
        sqlx::query(&format!("ALTER TABLE {} DISABLE TRIGGER USER", quote(name)))
            .execute(&mut *tx)
            .await?;
    }

    // The source is read on a thread of its own, a bounded queue of chunks ahead.
    let (send, mut recv) = tokio::sync::mpsc::channel::<Result<Chunk>>(4);
    let reader_plan = plan.clone();
    let reader = tokio::task::spawn_blocking(move || read_source(&source, &reader_plan, send));
    let mut report = CopyReport::default();
    for table in &plan {
        let mut copied = 0u64;
        loop {
            let chunk = match recv.recv().await {
                Some(chunk) => chunk?,
                None => {
                    return Err(refused(format!(
                        "the source's reader stopped during table {}",
                        table.name
                    )))
                }
            };
            match chunk {
                Chunk::Rows(rows) => {
                    // Which table refused a row is said (a constraint PostgreSQL checks and
                    // SQLite did not, say).
                    copied += insert_rows(&mut tx, table, rows)
                        .await
                        .map_err(|e| refused(format!("writing table {}: {e}", table.name)))?;
                }
                Chunk::End(read) => {
                    if read != copied {
                        return Err(refused(format!(
                            "table {}: {read} rows read, {copied} written",
                            table.name
                        )));
                    }
                    break;
                }
            }
        }
        if let Some(id) = &table.identity {
            let mark = schema.handed_out.get(&table.name).copied().unwrap_or(0);
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 GREATEST(COALESCE((SELECT MAX({col}) FROM {t}), 0), $3) + 1, false)",
                col = quote(id),
                t = quote(&table.name)
            );
            sqlx::query(&sql)
                .bind(quote(&table.name))
                .bind(id.clone())
                .bind(mark)
                .execute(&mut *tx)
                .await?;
        }
        progress(&table.name, copied);
        report.tables.push((table.name.clone(), copied));
    }
    reader
        .await
        .map_err(|e| refused(format!("reading the source: {e}")))??;
    for name in &triggered {
        sqlx::query(&format!("ALTER TABLE {} ENABLE TRIGGER USER", quote(name)))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    Ok(report)
}

/// The target's tables (with their columns and identity column), its foreign keys as
/// (referencing, referenced) pairs, and the tables with triggers of Lodge's own.
#[allow(clippy::type_complexity)]
async fn target_schema(
    conn: &mut sqlx::AnyConnection,
) -> Result<(BTreeMap<String, Table>, Vec<(String, String)>, Vec<String>)> {
    let rows = sqlx::query(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                (a.attidentity <> '') \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
         WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() \
           AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
           AND c.relname <> '_sqlx_migrations' \
         ORDER BY c.relname, a.attnum",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in rows {
        let (table, column, ty, identity): (String, String, String, bool) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let entry = tables.entry(table.clone()).or_insert_with(|| Table {
            name: table,
            columns: Vec::new(),
            identity: None,
        });
        if identity {
            entry.identity = Some(column.clone());
        }
        entry.columns.push((column, ty));
    }
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, r.relname::text \
         FROM pg_catalog.pg_constraint k \
         JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
         JOIN pg_catalog.pg_class r ON r.oid = k.confrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE k.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let triggered: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT c.relname::text \
         FROM pg_catalog.pg_trigger t \
         JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT t.tgisinternal AND n.nspname = current_schema() \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((tables, edges, triggered))
}

/// The tables in an order where each comes after every table it references (a table
/// referencing itself is copied in the source's row order, parents first as they were
/// written). A cycle between tables is refused.
fn dependency_order(
    tables: &BTreeMap<String, Table>,
    edges: &[(String, String)],
) -> Result<Vec<String>> {
    let mut needs: BTreeMap<&str, BTreeSet<&str>> = tables
        .keys()
        .map(|t| (t.as_str(), BTreeSet::new()))
        .collect();
    for (from, to) in edges {
        if from != to {
            if let Some(n) = needs.get_mut(from.as_str()) {
                n.insert(to.as_str());
            }
        }
    }
    let mut order: Vec<String> = Vec::with_capacity(needs.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while done.len() < needs.len() {
        let ready: Vec<&str> = needs
            .iter()
            .filter(|(t, n)| !done.contains(*t) && n.iter().all(|d| done.contains(d)))
            .map(|(t, _)| *t)
            .collect();
        if ready.is_empty() {
            let left: Vec<&str> = needs
                .keys()
                .filter(|t| !done.contains(*t))
                .copied()
                .collect();
            return Err(refused(format!(
                "the target's foreign keys form a cycle among {}",
                left.join(", ")
            )));
        }
        for t in ready {
            done.insert(t);
            order.push(t.to_owned());
        }
    }
    Ok(order)
}

/// Reads every planned table from the source in one read transaction, sending its rows in
/// chunks and then its count.
fn read_source(
    path: &Path,
    plan: &[Table],
    send: tokio::sync::mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let result = read_tables(path, plan, &send);
    if let Err(e) = result {
        // The writer stops at the error; if it is gone already, there is no one to tell.
        let words = e.to_string();
        let _ = send.blocking_send(Err(e));
        return Err(refused(words));
    }
    Ok(())
}

fn read_tables(
    path: &Path,
    plan: &[Table],
    send: &tokio::sync::mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let mut conn = open_source(path)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    let gone = || refused("the copy stopped");
    for table in plan {
        let per_chunk = (VALUES_PER_STATEMENT / table.columns.len().max(1)).max(1);
        let cols: Vec<String> = table.columns.iter().map(|c| quote(&c.0)).collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY rowid",
            cols.join(", "),
            quote(&table.name)
        );
        // A table without rowid (the live counts) has its primary key's order instead.
        let sql = if is_without_rowid(&tx, &table.name)? {
            sql.replace(" ORDER BY rowid", "")
        } else {
            sql
        };
        let mut stmt = tx.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let mut chunk: Vec<Vec<Option<String>>> = Vec::with_capacity(per_chunk);
        let mut read = 0u64;
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(table.columns.len());
            for (i, (column, _)) in table.columns.iter().enumerate() {
                values.push(as_text(row.get_ref(i)?, &table.name, column)?);
            }
            chunk.push(values);
            read += 1;
            if chunk.len() == per_chunk {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(per_chunk));
                send.blocking_send(Ok(Chunk::Rows(full)))
                    .map_err(|_| gone())?;
            }
        }
        if !chunk.is_empty() {
            send.blocking_send(Ok(Chunk::Rows(chunk)))
                .map_err(|_| gone())?;
        }
        send.blocking_send(Ok(Chunk::End(read)))
            .map_err(|_| gone())?;
    }
    tx.commit()?;
    Ok(())
}

/// The source, read-only (it is never changed), waiting out a writer's lock a while.
fn open_source(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(conn)
}

fn is_without_rowid(conn: &rusqlite::Connection, table: &str) -> Result<bool> {
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    Ok(sql.to_ascii_uppercase().contains("WITHOUT ROWID"))
}

/// A stored value as the text PostgreSQL casts to the column's type (`NULL` as `None`).
fn as_text(
    value: rusqlite::types::ValueRef<'_>,
    table: &str,
    column: &str,
) -> Result<Option<String>> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(
            std::str::from_utf8(t)
                .map_err(|_| {
                    StoreError::Corrupt(format!("{table}.{column} holds text that is not UTF-8"))
                })?
                .to_owned(),
        ),
        ValueRef::Blob(_) => {
            return Err(StoreError::Corrupt(format!(
                "{table}.{column} holds a blob, which no column of Lodge's holds"
            )))
        }
    })
}

/// Writes one chunk of rows in one `INSERT`, each value cast from text to its column's type.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &Table,
    rows: Vec<Vec<Option<String>>>,
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let width = table.columns.len();
    let mut sql = format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ",
        quote(&table.name),
        table
            .columns
            .iter()
            .map(|c| quote(&c.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in 0..rows.len() {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (c, (_, ty)) in table.columns.iter().enumerate() {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}::{ty}", r * width + c + 1));
        }
        sql.push(')');
    }
    let mut query = sqlx::query(&sql);
    for row in rows {
        for value in row {
            query = query.bind(value);
        }
    }
    Ok(query.execute(&mut **tx).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> (String, Table) {
        (
            name.to_owned(),
            Table {
                name: name.to_owned(),
                columns: vec![],
                identity: None,
            },
        )
    }

    /// A new, migrated SQLite installation to copy from: its directory (kept while it is
    /// used), its file and the store open on it.
    async fn sqlite_source() -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lodge.db");
        let source = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        (dir, path, source)
    }

    #[test]
    fn tables_come_after_those_they_reference() {
        let tables: BTreeMap<String, Table> = ["invoices", "organizations", "lines", "jobs"]
            .map(table)
            .into();
        let edges = [
            ("lines", "invoices"),
            ("invoices", "organizations"),
            ("lines", "lines"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
        let order = dependency_order(&tables, &edges).unwrap();
        let at = |t: &str| order.iter().position(|o| o == t).unwrap();
        assert!(at("organizations") < at("invoices"));
        assert!(at("invoices") < at("lines"));
        assert_eq!(order.len(), 4);
        let cycle = [("invoices", "lines")].map(|(a, b)| (a.to_owned(), b.to_owned()));
        let both: Vec<_> = edges.iter().cloned().chain(cycle).collect();
        assert!(dependency_order(&tables, &both).is_err());
    }

    /// A value SQLite kept but PostgreSQL's column refuses (SQLite's columns take any
    /// type) stops the copy, naming the table, with nothing written; the copy goes through
    /// once the value is mended.
    #[tokio::test]
    async fn a_row_postgres_refuses_names_its_table_and_writes_nothing() {
        let Some(target) = lodge_testkit::pg::test_database_url().await else {
            return;
        };
        let (_dir, path, source) = sqlite_source().await;
        let bad = "UPDATE counters SET value = 'many' WHERE name = 'order_number'";
        sqlx::query(bad).execute(source.writer()).await.unwrap();
        let err = sqlite_to_postgres(&path, &target, |_, _| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("writing table counters"), "{err}");
        let store = Store::connect(&target).await.unwrap();
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM counters")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(rows, 3, "the migrations' own rows, as they were");
        let mended = "UPDATE counters SET value = 7 WHERE name = 'order_number'";
        sqlx::query(mended).execute(source.writer()).await.unwrap();
        let report = sqlite_to_postgres(&path, &target, |_, _| {}).await.unwrap();
        assert!(report.rows() >= 3, "{report:?}");
        let (n,): (i64,) = sqlx::query_as("SELECT value FROM counters WHERE name = 'order_number'")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(n, 7);
        store.close().await;
        source.close().await;
    }

    /// A target that is not the copy's to fill is refused before anything is made in it:
    /// another application's tables, a database not encoded in UTF-8 (found by the copy
    /// audit: Lodge's tables were left in both).
    #[tokio::test]
    async fn a_target_of_another_application_or_encoding_gets_no_table() {
        let Some(cluster) = lodge_testkit::pg::shared_cluster().await.ok().flatten() else {
            lodge_testkit::skip_or_fail("postgres", "no PostgreSQL cluster");
            return;
        };
        let (_dir, path, source) = sqlite_source().await;
        source.close().await;
        let tables = |url: String| async move {
            let store = Store::connect(&url).await.unwrap();
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_catalog.pg_tables \
                 WHERE schemaname = current_schema() ORDER BY 1",
            )
            .fetch_all(store.reader())
            .await
            .unwrap();
            store.close().await;
            names
        };
        let other = cluster.fresh_database().await.unwrap();
        let store = Store::connect(&other).await.unwrap();
        sqlx::query("CREATE TABLE customers (id BIGINT PRIMARY KEY)")
            .execute(store.writer())
            .await
            .unwrap();
        store.close().await;
        let err = sqlite_to_postgres(&path, &other, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not Lodge's (customers"), "{err}");
        assert_eq!(tables(other).await, ["customers"]);

        // A unique name: another fresh database's, with a suffix.
        let unique = cluster.fresh_database().await.unwrap();
        let name = format!("{}_latin1", unique.rsplit('/').next().unwrap());
        let admin = Store::connect(&cluster.admin_url()).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {name} ENCODING 'LATIN1' TEMPLATE template0 \
             LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .execute(admin.writer())
        .await
        .unwrap();
        admin.close().await;
        let latin1 = cluster.url_for(&name);
        let err = sqlite_to_postgres(&path, &latin1, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("encoded in LATIN1"), "{err}");
        assert!(tables(latin1).await.is_empty());
    }

    /// Ids an `AUTOINCREMENT` table handed out are not handed out again on PostgreSQL, even
    /// where their rows were deleted (found by the copy audit: a deleted webhook endpoint's
    /// id came back).
    #[tokio::test]
    async fn ids_handed_out_are_not_handed_out_again() {
        let Some(target) = lodge_testkit::pg::test_database_url().await else {
            return;
        };
        let (_dir, path, source) = sqlite_source().await;
        sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ('webhook_endpoints', 41)")
            .execute(source.writer())
            .await
            .unwrap();
        source.close().await;
        sqlite_to_postgres(&path, &target, |_, _| {}).await.unwrap();
        let store = Store::connect(&target).await.unwrap();
        let (next,): (i64,) =
            sqlx::query_as("SELECT nextval(pg_get_serial_sequence('webhook_endpoints', 'id'))")
                .fetch_one(store.reader())
                .await
                .unwrap();
        assert_eq!(next, 42);
        store.close().await;
    }

    #[test]
    fn values_become_text() {
        use rusqlite::types::ValueRef;
        assert_eq!(as_text(ValueRef::Null, "t", "c").unwrap(), None);
        assert_eq!(
            as_text(ValueRef::Integer(-42), "t", "c")
                .unwrap()
                .as_deref(),
            Some("-42")
        );
        assert_eq!(
            as_text(ValueRef::Text(b"2026-12-01"), "t", "c")
                .unwrap()
                .as_deref(),
            Some("2026-12-01")
        );
        assert!(as_text(ValueRef::Blob(b"x"), "t", "c").is_err());
        assert!(as_text(ValueRef::Text(&[0xff]), "t", "c").is_err());
    }
}
