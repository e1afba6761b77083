//! Rows written together: a connection wrapper that holds the one-row `INSERT`s given to
//! [`SqlConn::insert_later`] and the statements over ids given to
//! [`SqlConn::exec_for_ids_later`], and writes them at [`Deferred::flush`] in two statements
//! whatever the number of rows: one inserting every row held (each table's rows from one
//! JSON argument, the tables as data-modifying `WITH` parts of one statement), then one
//! running the statements over ids (each id list one JSON argument). On PostgreSQL every
//! statement is a round trip to the server (a send, a wake-up on both sides, a receive); the
//! rows nothing in the transaction reads before it commits (an account's history, invoice
//! lines, ledger entries, jobs, events, and rows whose keys were reserved) need not each
//! make one. The texts depend only on which statements a batch held, not on how many rows,
//! so each is prepared once per connection.
//!
//! Every part of one statement sees the database as it was when the statement started, and
//! foreign keys are checked at its end: rows may refer to rows of another part, and a row
//! refused (a unique name taken) refuses the statement, which the caller runs again
//! without deferred rows. The statements over ids read the rows the first one wrote.
//!
//! Everything else goes straight through, so the wrapper runs the same order code.

use crate::conn::{SqlConn, Val};
use crate::{Result, StoreError};

/// A connection whose [`SqlConn::insert_later`] rows wait for [`Deferred::flush`]. Dropped
/// without a flush, its rows are lost: only when the transaction is rolled back.
#[must_use = "rows wait until flush"]
pub struct Deferred<'c, C> {
    conn: &'c mut C,
    /// Each statement's rows, statements in the order they first came.
    waiting: Vec<(&'static str, Vec<Vec<Val>>)>,
    /// The statements over ids ([`SqlConn::exec_for_ids_later`]): each with its fixed
    /// arguments and the ids gathered, run after the rows.
    over_ids: Vec<(&'static str, Vec<Val>, Vec<Val>)>,
}

impl<'c, C: SqlConn> Deferred<'c, C> {
    pub fn new(conn: &'c mut C) -> Self {
        Deferred {
            conn,
            waiting: Vec::new(),
            over_ids: Vec::new(),
        }
    }

    /// Writes every row waiting, then runs the statements over ids. After an error the
    /// transaction must not be committed (some rows may be missing).
    pub async fn flush(&mut self) -> Result<()> {
        let mut waiting = std::mem::take(&mut self.waiting);
        // The parts in a fixed order (parents first, the rest as they came), so that a
        // batch holding the same statements runs the same text.
        waiting.sort_by_key(|(sql, _)| rank(sql));
        let mut parts = Vec::with_capacity(waiting.len());
        let mut args = Vec::with_capacity(waiting.len());
        for (sql, rows) in &waiting {
            let (part, rows) = from_json(sql, rows, args.len())?;
            parts.push(part);
            args.push(rows);
        }
        if let Some(stmt) = as_one_statement(parts) {
            self.conn.exec(&stmt, args).await?;
        }
        let mut parts = Vec::new();
        let mut args = Vec::new();
        for (sql, fixed, ids) in std::mem::take(&mut self.over_ids) {
            let Some(part) = over_json_ids(sql, fixed.len(), &ids, args.len()) else {
                // Not `IN ($IDS)`: the statement runs for its ids by themselves.
                let stmt = with_ids(sql, fixed.len(), ids.len());
                let mut all = fixed;
                all.extend(ids);
                self.conn.exec(&stmt, all).await?;
                continue;
            };
            parts.push(part?);
            args.extend(fixed);
            args.push(Val::from(json_list(&ids)));
        }
        if let Some(stmt) = as_one_statement(parts) {
            self.conn.exec(&stmt, args).await?;
        }
        Ok(())
    }
}

/// Data-modifying statements as one: all but the last as parts of its `WITH`.
fn as_one_statement(mut parts: Vec<String>) -> Option<String> {
    let last = parts.pop()?;
    if parts.is_empty() {
        return Some(last);
    }
    let mut out = String::from("WITH ");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!("w{i} AS ({part})"));
    }
    out.push(' ');
    out.push_str(&last);
    Some(out)
}

/// The tables whose rows others refer to, in the order their rows must be written: an
/// account refers to its order and its domain, an invoice to its order, a line to its
/// invoice. Rows of a batch's orders are held in the order the statements first came,
/// and a batch's second order may bring the first domain after the first account.
const PARENTS: [&str; 4] = [
    "INSERT INTO orders ",
    "INSERT INTO domains ",
    "INSERT INTO hosting ",
    "INSERT INTO invoices ",
];

/// Where `sql`'s rows go in the flush: a parent table's place in [`PARENTS`], after them
/// everything else.
fn rank(sql: &str) -> usize {
    PARENTS
        .iter()
        .position(|p| sql.starts_with(p))
        .unwrap_or(PARENTS.len())
}

/// `sql`, a one-row `INSERT INTO t (…) VALUES (…)` ending with its values, with one more
/// column given as one more argument after its last: the same insert with its key given
/// (reserved beforehand) instead of taken from the table's sequence.
pub(crate) fn with_key_column(sql: &str, column: &str) -> String {
    let args = (1..).take_while(|n| sql.contains(&format!("${n}"))).count();
    let Some(columns_end) = sql.find(')') else {
        return sql.to_owned();
    };
    let Some(values_end) = sql.rfind(')') else {
        return sql.to_owned();
    };
    format!(
        "{}, {column}{}, ${}{}",
        &sql[..columns_end],
        &sql[columns_end..values_end],
        args + 1,
        &sql[values_end..]
    )
}

/// `sql` with `$IDS` written as the list of `n` arguments that follow its `fixed` ones
/// (`$k+1, …, $k+n`).
pub(crate) fn with_ids(sql: &str, fixed: usize, n: usize) -> String {
    let list: Vec<String> = (fixed + 1..=fixed + n).map(|i| format!("${i}")).collect();
    sql.replace("$IDS", &list.join(", "))
}

/// `sql`, an `INSERT … VALUES (…)` of one row with `$n` arguments (and maybe a clause after
/// its values, such as `ON CONFLICT … DO NOTHING`), rewritten to insert `rows` given as one
/// argument, `$(before + 1)`: a JSON array of the rows, each the array of its arguments,
/// read back with `jsonb_array_elements` in their order (parsed once, each value then found by its place). An argument is read as `int8` or as
/// text, as the rows give it ([`Val`]); the columns take it as they take an argument.
/// Returns the statement and its argument.
fn from_json(sql: &str, rows: &[Vec<Val>], before: usize) -> Result<(String, Val)> {
    let bad = || StoreError::Corrupt(format!("not a one-row INSERT … VALUES: {sql}"));
    let open = sql.find("VALUES (").ok_or_else(bad)? + "VALUES ".len();
    let close = open + closing_paren(&sql[open..]).ok_or_else(bad)?;
    let (head, values, tail) = (
        &sql[..open - "VALUES ".len()],
        &sql[open + 1..close],
        &sql[close + 1..],
    );
    // An argument outside the values (`ON CONFLICT … DO UPDATE SET x = $3`) would take
    // every row's value at once.
    if head.contains('$') || tail.contains('$') {
        return Err(bad());
    }
    let first = rows.first().ok_or_else(bad)?;
    let is_int: Vec<bool> = first.iter().map(|v| matches!(v, Val::Int(_))).collect();
    let same_shape = |r: &Vec<Val>| {
        r.len() == is_int.len()
            && r.iter()
                .zip(&is_int)
                .all(|(v, &int)| matches!(v, Val::Int(_)) == int)
    };
    if !rows.iter().all(same_shape) {
        return Err(bad());
    }
    let mut out = String::with_capacity(sql.len() + 16 * is_int.len() + 64);
    out.push_str(head);
    out.push_str("SELECT ");
    let arg = |n: usize, out: &mut String| {
        let int = is_int.get(n - 1).copied().unwrap_or(false);
        let ty = if int { "::int8" } else { "" };
        out.push_str(&format!("(r.v->>{}){ty}", n - 1));
    };
    replace_args(values, is_int.len(), arg, &mut out).ok_or_else(bad)?;
    out.push_str(&format!(
        " FROM jsonb_array_elements(${}::text::jsonb) AS r(v){tail}",
        before + 1
    ));
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::Value::Array(r.iter().map(json_of).collect()))
        .collect();
    Ok((out, Val::from(serde_json::Value::Array(json).to_string())))
}

/// An argument as JSON: a number, a string or `null`.
fn json_of(v: &Val) -> serde_json::Value {
    match v {
        Val::Int(Some(i)) => serde_json::Value::from(*i),
        Val::Text(Some(t)) => serde_json::Value::from(t.as_str()),
        Val::Int(None) | Val::Text(None) => serde_json::Value::Null,
    }
}

/// The ids as a JSON array of strings (integers written out), read by
/// `json_array_elements_text`.
fn json_list(ids: &[Val]) -> String {
    let list: Vec<serde_json::Value> = ids
        .iter()
        .map(|v| match v {
            Val::Int(Some(i)) => serde_json::Value::from(i.to_string()),
            other => json_of(other),
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// `sql`, a statement over ids (`… IN ($IDS)` and `fixed` arguments before), with its
/// arguments numbered after `before` others and the ids read from one more, a JSON list
/// (`= ANY(ARRAY(…))`, so the ids are looked up in an index as a list would be). `None`
/// when `sql` has no `IN ($IDS)`; an error when its ids are not all of one kind or it has
/// arguments it was not given.
fn over_json_ids(sql: &str, fixed: usize, ids: &[Val], before: usize) -> Option<Result<String>> {
    let (left, right) = sql.split_once("IN ($IDS)")?;
    let bad = || StoreError::Corrupt(format!("not a statement over ids: {sql}"));
    let ints = ids.iter().all(|v| matches!(v, Val::Int(_)));
    if !ints && !ids.iter().all(|v| matches!(v, Val::Text(_))) {
        return Some(Err(bad()));
    }
    let cast = if ints { "::int8" } else { "" };
    let list = format!(
        "= ANY(ARRAY(SELECT value{cast} FROM json_array_elements_text(${}::text::json)))",
        fixed + 1
    );
    let whole = format!("{left}{list}{right}");
    let mut out = String::with_capacity(whole.len() + 8);
    let renumbered = replace_args(
        &whole,
        fixed + 1,
        |n, out: &mut String| out.push_str(&format!("${}", n + before)),
        &mut out,
    );
    Some(renumbered.map(|()| out).ok_or_else(bad))
}

/// The byte offset of the `)` that closes the `(` `s` starts with, outside string literals.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0_usize;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Appends `text` to `out` with each `$n` outside string literals written by `arg(n)`;
/// `None` if an argument number is not in `1..=count`.
fn replace_args(
    text: &str,
    count: usize,
    mut arg: impl FnMut(usize, &mut String),
    out: &mut String,
) -> Option<()> {
    let mut quoted = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            out.push(c);
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        let n: usize = text.get(start..end)?.parse().ok()?;
        if n == 0 || n > count {
            return None;
        }
        arg(n, out);
    }
    Some(())
}

impl<C: SqlConn> SqlConn for Deferred<'_, C> {
    fn is_postgres(&self) -> bool {
        self.conn.is_postgres()
    }

    fn locks_database(&self) -> bool {
        self.conn.locks_database()
    }

    async fn exec(&mut self, sql: &str, args: Vec<Val>) -> Result<u64> {
        self.conn.exec(sql, args).await
    }

    async fn fetch_int(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<i64>> {
        self.conn.fetch_int(sql, args).await
    }

    async fn fetch_text(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<String>> {
        self.conn.fetch_text(sql, args).await
    }

    async fn fetch_row(&mut self, sql: &str, args: Vec<Val>) -> Result<Option<Vec<Val>>> {
        self.conn.fetch_row(sql, args).await
    }

    async fn fetch_rows(&mut self, sql: &str, args: Vec<Val>) -> Result<Vec<Vec<Val>>> {
        self.conn.fetch_rows(sql, args).await
    }

    async fn insert_key(&mut self, sql: &str, key: &str, args: Vec<Val>) -> Result<i64> {
        self.conn.insert_key(sql, key, args).await
    }

    async fn insert_later(&mut self, sql: &'static str, args: Vec<Val>) -> Result<()> {
        match self.waiting.iter_mut().find(|(s, _)| *s == sql) {
            Some((_, rows)) => rows.push(args),
            // A statement seen for the first time is held only if it can be written as a
            // multi-row one; otherwise it runs now, as on any other connection.
            None if from_json(sql, std::slice::from_ref(&args), 0).is_ok() => {
                self.waiting.push((sql, vec![args]));
            }
            None => {
                tracing::warn!(sql, "not a one-row INSERT … VALUES; run at once");
                self.conn.exec(sql, args).await?;
            }
        }
        Ok(())
    }

    async fn exec_for_ids_later(
        &mut self,
        sql: &'static str,
        fixed: Vec<Val>,
        id: Val,
    ) -> Result<()> {
        match self
            .over_ids
            .iter_mut()
            .find(|(s, f, _)| *s == sql && *f == fixed)
        {
            Some((_, _, ids)) => ids.push(id),
            None => self.over_ids.push((sql, fixed, vec![id])),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{as_one_statement, from_json, json_list, over_json_ids, with_ids};
    use crate::conn::Val;

    #[test]
    fn a_list_of_ids_follows_the_fixed_arguments() {
        let sql = "INSERT INTO j SELECT $1, e.id FROM e WHERE e.id IN ($IDS) AND $2 = 1";
        assert_eq!(
            with_ids(sql, 2, 3),
            "INSERT INTO j SELECT $1, e.id FROM e WHERE e.id IN ($3, $4, $5) AND $2 = 1"
        );
        assert_eq!(
            with_ids("SELECT 1 WHERE x IN ($IDS)", 0, 1),
            "SELECT 1 WHERE x IN ($1)"
        );
    }

    /// A statement over ids reads them from one JSON argument after its own, numbered
    /// after the arguments of the statements before it.
    #[test]
    fn ids_are_one_json_argument() {
        let sql = "INSERT INTO j SELECT $1, e.id FROM e WHERE e.id IN ($IDS) AND $2 = 1";
        let ids = [Val::from("a"), Val::from("b\"quoted\"")];
        assert_eq!(
            over_json_ids(sql, 2, &ids, 4).unwrap().unwrap(),
            "INSERT INTO j SELECT $5, e.id FROM e WHERE e.id = ANY(ARRAY(SELECT value FROM \
             json_array_elements_text($7::text::json))) AND $6 = 1"
        );
        assert_eq!(json_list(&ids), r#"["a","b\"quoted\""]"#);
        let ints = [Val::from(3), Val::from(-4)];
        assert!(over_json_ids(sql, 2, &ints, 0)
            .unwrap()
            .unwrap()
            .contains("SELECT value::int8 FROM json_array_elements_text($3::text::json)"));
        assert_eq!(json_list(&ints), r#"["3","-4"]"#);
        assert!(over_json_ids("DELETE FROM e WHERE id = $1", 1, &ints, 0).is_none());
        assert!(over_json_ids(sql, 2, &[Val::from(1), Val::from("x")], 0)
            .unwrap()
            .is_err());
        // An argument beyond its fixed ones and the list.
        assert!(over_json_ids("SELECT $3 WHERE x IN ($IDS)", 1, &ints, 0)
            .unwrap()
            .is_err());
    }

    fn row(a: i64, b: &str) -> Vec<Val> {
        vec![Val::from(a), Val::from(b)]
    }

    #[test]
    fn one_row_statements_read_their_rows_from_json() {
        let (sql, arg) = from_json(
            "INSERT INTO jobs (a, b, status, c)\n VALUES ($1, $2, 'q($3)', $2) ON CONFLICT (b) DO NOTHING",
            &[row(1, "x"), row(2, "y'z"), vec![Val::Int(None), Val::Text(None)]],
            3,
        )
        .unwrap();
        assert_eq!(
            sql,
            "INSERT INTO jobs (a, b, status, c)\n SELECT (r.v->>0)::int8, (r.v->>1), 'q($3)', (r.v->>1) \
             FROM jsonb_array_elements($4::text::jsonb) AS r(v) ON CONFLICT (b) DO NOTHING"
        );
        assert_eq!(arg, Val::from(r#"[[1,"x"],[2,"y'z"],[null,null]]"#));
        let (sql, _) = from_json(
            "INSERT INTO t (a) VALUES (lower($1))",
            &[vec![Val::from("A")]],
            0,
        )
        .unwrap();
        assert_eq!(
            sql,
            "INSERT INTO t (a) SELECT lower((r.v->>0)) FROM jsonb_array_elements($1::text::jsonb) AS r(v)"
        );
    }

    #[test]
    fn statements_become_one_with_all_but_the_last_in_its_with() {
        assert_eq!(as_one_statement(vec![]), None);
        assert_eq!(
            as_one_statement(vec!["INSERT a".into()]).unwrap(),
            "INSERT a"
        );
        assert_eq!(
            as_one_statement(vec![
                "INSERT a".into(),
                "INSERT b".into(),
                "INSERT c".into()
            ])
            .unwrap(),
            "WITH w0 AS (INSERT a), w1 AS (INSERT b) INSERT c"
        );
    }

    /// Every statement the order path hands to `insert_later` can be held.
    #[test]
    fn the_statements_written_later_are_one_row_inserts() {
        for (sql, args) in [
            (crate::hosting::INSERT_HISTORY, 6),
            (crate::billing::INSERT_LINE, 8),
            (crate::billing::INSERT_LEDGER, 9),
            (crate::jobs::INSERT_JOB, 6),
            (crate::events::INSERT_EVENT, 7),
            (&crate::billing::INSERT_ORDER_KEYED, 10),
            (&crate::billing::INSERT_INVOICE_KEYED, 16),
            (&crate::hosting::INSERT_HOSTING_KEYED, 21),
            (crate::hosting::INSERT_DOMAIN, 11),
        ] {
            let rows = vec![vec![Val::from(1); args]; 2];
            let (one, _) = from_json(sql, &rows, 0).unwrap();
            assert!(one.contains(&format!("(r.v->>{})", args - 1)), "{one}");
            assert!(!one.contains(&format!("(r.v->>{})", args)), "{one}");
            assert!(!one.contains("$2"), "{one}");
        }
    }

    #[test]
    fn a_key_column_is_one_more_column_and_argument() {
        assert_eq!(
            super::with_key_column("INSERT INTO t (a, b, c)\n VALUES ($1, $2, $1)", "id"),
            "INSERT INTO t (a, b, c, id)\n VALUES ($1, $2, $1, $3)"
        );
    }

    /// Orders, domains, accounts and invoices come before the rows that refer to them,
    /// whatever order their statements came in (the order of the statement's parts).
    #[test]
    fn parents_are_flushed_first() {
        let mut sqls = vec![
            crate::hosting::INSERT_HISTORY,
            &crate::hosting::INSERT_HOSTING_KEYED,
            &crate::billing::INSERT_INVOICE_KEYED,
            crate::billing::INSERT_LINE,
            crate::hosting::INSERT_DOMAIN,
            &crate::billing::INSERT_ORDER_KEYED,
            crate::events::INSERT_EVENT,
        ];
        sqls.sort_by_key(|s| super::rank(s));
        assert_eq!(
            sqls,
            [
                crate::billing::INSERT_ORDER_KEYED.as_str(),
                crate::hosting::INSERT_DOMAIN,
                &crate::hosting::INSERT_HOSTING_KEYED,
                &crate::billing::INSERT_INVOICE_KEYED,
                crate::hosting::INSERT_HISTORY,
                crate::billing::INSERT_LINE,
                crate::events::INSERT_EVENT,
            ]
        );
    }

    #[test]
    fn what_is_not_a_one_row_insert_is_refused() {
        for sql in [
            "UPDATE t SET a = $1",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = $1",
            "INSERT INTO t (a) VALUES ($1",
            "INSERT INTO t (a) VALUES ($2)",
            "INSERT INTO t (a) VALUES ($0)",
        ] {
            assert!(from_json(sql, &[vec![Val::from(1)]], 0).is_err(), "{sql}");
        }
        // Rows of different lengths, or of different kinds of values.
        assert!(from_json(
            "INSERT INTO t (a) VALUES ($1)",
            &[vec![], vec![Val::from(1)]],
            0
        )
        .is_err());
        assert!(from_json(
            "INSERT INTO t (a) VALUES ($1)",
            &[vec![Val::from(1)], vec![Val::from("1")]],
            0
        )
        .is_err());
    }
}
