//! What only PostgreSQL needs: one pool for reads and writes, its migrations, and the
//! SQLSTATEs of a transaction that failed only because of others.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

use crate::Result;

pub(crate) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `deadlock_detected` and `serialization_failure`: running the transaction again may
/// succeed.
pub(crate) const TRANSIENT_SQLSTATES: [&str; 2] = ["40P01", "40001"];

/// How long a pooled connection may sit idle before it is pinged when taken again.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool of one node. A connection taken from it is pinged only when it has been idle
/// for more than [`PING_AFTER_IDLE`] (sqlx's default pings on every acquire): the ping is a
/// round trip to the server, one more for each of an order's reads and for each group
/// commit, while a connection busy a moment ago is as alive as a ping would show. One
/// that sat idle (through a server restart, say) is still checked and replaced.
///
/// No idle timeout or lifetime (sqlx closes idle connections after 10 minutes and any
/// after 30 by default): with neither, sqlx starts no maintenance task, and that task can
/// spin a core forever once the pool's idle count wraps below zero (sqlx issue 3645, fixed
/// upstream by pull request 4289, in no 0.8 release). It did so in a test here, on the
/// SQLite pools first (0f75326) and then on a default-configured pool. A node's own task
/// closes the connections it left idle for a minute instead (`Store::shed_idle`).
pub(crate) async fn connect(url: &str, pool_size: u32) -> Result<AnyPool> {
    let opts = AnyConnectOptions::from_str(url)?.disable_statement_logging();
    let pool = AnyPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts.clone())
        .await;
    match pool {
        // The pool says only that it waited: one connection made alone says why (refused,
        // a wrong password, no such database; found by the resilience audit).
        Err(sqlx::Error::PoolTimedOut) => {
            match tokio::time::timeout(
                Duration::from_secs(5),
                <sqlx::AnyConnection as sqlx::Connection>::connect_with(&opts),
            )
            .await
            {
                Ok(Err(why)) => Err(why.into()),
                _ => Err(sqlx::Error::PoolTimedOut.into()),
            }
        }
        other => Ok(other?),
    }
}

pub(crate) async fn migrate(conn: &mut sqlx::AnyConnection) -> Result<()> {
    MIGRATIONS.run(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::any::AnyArguments;
    use sqlx::query::QueryAs;
    use sqlx::{Any, AnyConnection};

    /// The plan of a statement with its arguments, one line a node.
    async fn plan<'q>(
        conn: &mut AnyConnection,
        query: QueryAs<'q, Any, (String,), AnyArguments<'q>>,
    ) -> String {
        let rows = query.fetch_all(conn).await.unwrap();
        rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
    }

    /// The statements that find a row by id and check its status (a batch's payments too)
    /// read the key even when the
    /// statistics say that status is rare and it no longer is (a burst of unpaid invoices on
    /// a renewal day, before autovacuum analyzes the table again); through the partial index
    /// on the status, a payment scanned every unpaid invoice (migration 0032). The
    /// background scan that the unpaid invoices' index is for still reads it.
    #[tokio::test]
    async fn lookups_by_id_keep_their_key_under_stale_statistics() {
        let Some(url) = lodge_testkit::pg::test_database_url().await else {
            return;
        };
        let store = crate::Store::open(&url).await.unwrap();
        let mut conn = store.writer().acquire().await.unwrap();
        // Bare rows (foreign keys and the count triggers off for this session), analyzed in
        // statuses the statements do not look for, then moved into those.
        for sql in [
            "SET session_replication_role = replica",
            "INSERT INTO invoices (organization_id, kind, status, currency, subtotal_minor, \
             total_minor, payment_token_digest, due_date, issued_at, created_at, modified_at) \
             SELECT 'o', 'first', 'paid', 'USD', 100, 100, 'd' || n, '2026-12-01', n, 0, 0 \
             FROM generate_series(1, 5000) n",
            "INSERT INTO hosting (id, organization_id, project_id, order_id, plan_id, \
             domain_name, status, billing_cycle, recurring_minor, currency, created_at, \
             modified_at) SELECT 'h' || n, 'o', 'p', 1, 'pl', 'n' || n || '.example', \
             'cancelled', 'monthly', 0, 'USD', 0, 0 FROM generate_series(1, 5000) n",
            "INSERT INTO domains (id, organization_id, project_id, name, sld, tld, status, \
             registrar, created_at, modified_at) SELECT 'd' || n, 'o', 'p', \
             'n' || n || '.example', 'n' || n, 'example', 'cancelled', 'r', 0, 0 \
             FROM generate_series(1, 5000) n",
            "INSERT INTO plan_changes (hosting_id, organization_id, from_plan_id, to_plan_id, \
             summary, old_price_minor, new_price_minor, period_start, period_end, days_left, \
             days_in_period, charge_minor, status, actor, created_at) SELECT 'h' || n, 'o', \
             'pl', 'pl', '', 0, 0, '', '', 1, 1, 0, 'cancelled', 'a', 0 \
             FROM generate_series(1, 5000) n",
            "ANALYZE invoices, hosting, domains, plan_changes",
            "UPDATE invoices SET status = 'unpaid'",
            "UPDATE hosting SET status = 'provisioning'",
            "UPDATE domains SET status = 'pending_registration'",
            "UPDATE plan_changes SET status = 'awaiting_payment'",
        ] {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        let explain = |sql: &str| format!("EXPLAIN {sql}");
        let (pay, pay_batch, account, domain, change, expired) = (
            explain(crate::billing::PAY_IN_FULL),
            explain(crate::billing::PAY_IN_FULL_POSTGRES),
            explain(crate::hosting::MOVE_FROM),
            explain(crate::hosting::DOMAIN_MOVE_FROM),
            explain(crate::plan_change::SETTLE_AWAITING),
            explain(crate::billing::EXPIRED_FIRST_INVOICES),
        );
        let by_id = [
            (
                "invoices_pkey",
                plan(
                    &mut conn,
                    sqlx::query_as(&pay).bind(2_500_i64).bind(0_i64).bind(1_i64),
                )
                .await,
            ),
            (
                "invoices_pkey",
                plan(
                    &mut conn,
                    sqlx::query_as(&pay_batch)
                        .bind(1_i64)
                        .bind("[[2500, 0], [2501, 0]]"),
                )
                .await,
            ),
            (
                "hosting_id_key",
                plan(
                    &mut conn,
                    sqlx::query_as(&account)
                        .bind("h2500")
                        .bind("active")
                        .bind(1_i64)
                        .bind("provisioning"),
                )
                .await,
            ),
            (
                "domains_id_key",
                plan(
                    &mut conn,
                    sqlx::query_as(&domain)
                        .bind("d2500")
                        .bind("active")
                        .bind(1_i64)
                        .bind("pending_registration"),
                )
                .await,
            ),
            (
                "plan_changes_pkey",
                plan(
                    &mut conn,
                    sqlx::query_as(&change)
                        .bind(2_500_i64)
                        .bind("applied")
                        .bind(1_i64),
                )
                .await,
            ),
        ];
        let wrong: Vec<&(&str, String)> = by_id
            .iter()
            .filter(|(key, plan)| !plan.contains(key))
            .collect();
        assert!(wrong.is_empty(), "not read by their key: {wrong:#?}");
        let scan = plan(&mut conn, sqlx::query_as(&expired).bind(100_i64)).await;
        assert!(scan.contains("invoices_unpaid"), "{scan}");
    }
}
