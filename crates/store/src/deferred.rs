//! Rows written together: a connection wrapper that holds the one-row `INSERT`s given to
//! [`SqlConn::insert_later`] and writes them at [`Deferred::flush`], each statement's rows
//! as multi-row `INSERT`s. On PostgreSQL every statement is a round trip to the server (a
//! send, a wake-up on both sides, a receive), and an order has a dozen of them; the rows
//! nothing in the transaction reads before it commits (an account's history, invoice lines,
//! ledger entries, jobs) need not each make one.
//!
//! Everything else goes straight through, so the wrapper runs the same order code.

use crate::conn::{SqlConn, Val};
use crate::{Result, StoreError};

/// At most this many rows go into one statement; a statement's rows are split into powers
/// of two (35 rows: 32 + 2 + 1), so that each table has a handful of statement texts, each
/// prepared once per connection.
const MAX_ROWS: usize = 64;

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

    /// Writes every row waiting. After an error the transaction must not be committed (some
    /// rows may be missing).
    pub async fn flush(&mut self) -> Result<()> {
        let mut waiting = std::mem::take(&mut self.waiting);
        // Rows other rows refer to first (a stable sort: the rest keep their order).
        waiting.sort_by_key(|(sql, _)| rank(sql));
        for (sql, rows) in waiting {
            let mut rest = rows.as_slice();
            while !rest.is_empty() {
                let n = chunk(rest.len());
                let (now, later) = rest.split_at(n);
                let (stmt, args) = multi_row(sql, now)?;
                self.conn.exec(&stmt, args).await?;
                rest = later;
            }
        }
        for (sql, fixed, ids) in std::mem::take(&mut self.over_ids) {
            let mut rest = ids.as_slice();
            while !rest.is_empty() {
                let n = chunk(rest.len());
                let (now, later) = rest.split_at(n);
                let mut args = fixed.clone();
                args.extend(now.iter().cloned());
                self.conn.exec(&with_ids(sql, fixed.len(), n), args).await?;
                rest = later;
            }
        }
        Ok(())
    }
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

/// The rows of the next statement, for `left` rows waiting: the largest power of two not
/// above `left` (nor above [`MAX_ROWS`]).
fn chunk(left: usize) -> usize {
    let n = left.min(MAX_ROWS);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `sql`, an `INSERT … VALUES (…)` of one row with `$n` arguments (and maybe a clause after
/// its values, such as `ON CONFLICT … DO NOTHING`), rewritten to insert `rows`: the values
/// repeated with their arguments renumbered, and the arguments of every row in turn.
fn multi_row(sql: &str, rows: &[Vec<Val>]) -> Result<(String, Vec<Val>)> {
    let bad = || StoreError::Corrupt(format!("not a one-row INSERT … VALUES: {sql}"));
    let open = sql.find("VALUES (").ok_or_else(bad)? + "VALUES ".len();
    let close = open + closing_paren(&sql[open..]).ok_or_else(bad)?;
    let (head, values, tail) = (&sql[..open], &sql[open..=close], &sql[close + 1..]);
    // An argument outside the values (`ON CONFLICT … DO UPDATE SET x = $3`) would take the
    // first row's value for every row.
    if head.contains('$') || tail.contains('$') {
        return Err(bad());
    }
    let per_row = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != per_row) {
        return Err(bad());
    }
    let mut out = String::with_capacity(head.len() + rows.len() * (values.len() + 2) + tail.len());
    out.push_str(head);
    let mut args = Vec::with_capacity(rows.len() * per_row);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        renumber(values, i * per_row, per_row, &mut out).ok_or_else(bad)?;
        args.extend(row.iter().cloned());
    }
    out.push_str(tail);
    Ok((out, args))
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

/// Appends `values` to `out` with each `$n` outside string literals written `$(n + by)`;
/// `None` if an argument number is not in `1..=count`.
fn renumber(values: &str, by: usize, count: usize, out: &mut String) -> Option<()> {
    let mut quoted = false;
    let mut chars = values.char_indices().peekable();
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
        let n: usize = values.get(start..end)?.parse().ok()?;
        if n == 0 || n > count {
            return None;
        }
        out.push('$');
        out.push_str(&(n + by).to_string());
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
            None if multi_row(sql, std::slice::from_ref(&args)).is_ok() => {
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
    use super::{chunk, multi_row, with_ids};
    use crate::conn::Val;
    use proptest::prelude::*;

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

    fn row(a: i64, b: &str) -> Vec<Val> {
        vec![Val::from(a), Val::from(b)]
    }

    #[test]
    fn one_row_statements_become_multi_row_ones() {
        let (sql, args) = multi_row(
            "INSERT INTO jobs (a, b, status, c)\n VALUES ($1, $2, 'q($3)', $2) ON CONFLICT (b) DO NOTHING",
            &[row(1, "x"), row(2, "y"), row(3, "z")],
        )
        .unwrap();
        assert_eq!(
            sql,
            "INSERT INTO jobs (a, b, status, c)\n VALUES ($1, $2, 'q($3)', $2), ($3, $4, 'q($3)', $4), \
             ($5, $6, 'q($3)', $6) ON CONFLICT (b) DO NOTHING"
        );
        assert_eq!(
            args,
            [row(1, "x"), row(2, "y"), row(3, "z")].concat(),
            "the arguments of each row in turn"
        );
        let (sql, _) = multi_row(
            "INSERT INTO t (a) VALUES (lower($1))",
            &[vec![Val::from(1)], vec![Val::from(2)]],
        )
        .unwrap();
        assert_eq!(sql, "INSERT INTO t (a) VALUES (lower($1)), (lower($2))");
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
            let (multi, all) = multi_row(sql, &rows).unwrap();
            assert_eq!(all.len(), 2 * args);
            assert!(multi.contains(&format!("${}", 2 * args)), "{multi}");
            assert!(!multi.contains(&format!("${}", 2 * args + 1)), "{multi}");
        }
    }

    #[test]
    fn a_key_column_is_one_more_column_and_argument() {
        assert_eq!(
            super::with_key_column("INSERT INTO t (a, b, c)\n VALUES ($1, $2, $1)", "id"),
            "INSERT INTO t (a, b, c, id)\n VALUES ($1, $2, $1, $3)"
        );
    }

    /// Orders, domains, accounts and invoices are written before the rows that refer to
    /// them, whatever order their statements came in.
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
            assert!(multi_row(sql, &[vec![Val::from(1)]]).is_err(), "{sql}");
        }
        // Rows of different lengths.
        assert!(multi_row(
            "INSERT INTO t (a) VALUES ($1)",
            &[vec![], vec![Val::from(1)]]
        )
        .is_err());
    }

    proptest! {
        /// The chunks are powers of two of at most 64 rows, and add up to the rows waiting.
        #[test]
        fn chunks_are_powers_of_two_that_add_up(n in 1usize..1000) {
            let (mut left, mut statements) = (n, 0);
            while left > 0 {
                let c = chunk(left);
                prop_assert!(c.is_power_of_two() && c <= 64 && c <= left);
                left -= c;
                statements += 1;
            }
            prop_assert!(statements <= n / 64 + 7);
        }
    }
}
