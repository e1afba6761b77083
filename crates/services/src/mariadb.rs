//! A MariaDB database and user per hosting account (off unless configured): made on the
//! configured server through an administrative login (sqlx's MySQL driver), named from the
//! account's login (`<user>_db`, user `<user>`), granted that database only, locked while
//! the account is suspended (`ACCOUNT LOCK`, MariaDB ≥ 10.4), and on termination dumped
//! (`mariadb-dump`) into the archive directory, then dropped with its user. Every step is
//! idempotent (`IF NOT EXISTS` / `IF EXISTS`; a retried creation sets the same stored
//! password again).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

/// Where the database server is and how accounts' databases are made.
#[derive(Clone)]
pub struct MariaDbSettings {
    /// The administrative login: `mysql://user:password@host:port/` or
    /// `mysql://user:password@localhost/?socket=/run/mysqld/mysqld.sock`.
    pub url: SecretString,
    /// The host customers connect to (shown with their credentials).
    pub host: String,
    /// The port customers connect to.
    pub port: u16,
    /// The host part of the accounts' users (`localhost`: this machine only; `%`: any).
    pub user_host: String,
    /// `mariadb-dump`.
    pub dump_binary: PathBuf,
    /// `MAX_USER_CONNECTIONS` of each account's user.
    pub max_user_connections: u32,
    /// Where a terminated account's dump is written (the nginx driver's archive).
    pub archive_dir: PathBuf,
}

impl std::fmt::Debug for MariaDbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbSettings")
            .field("url", &"[redacted]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user_host", &self.user_host)
            .field("dump_binary", &self.dump_binary)
            .field("max_user_connections", &self.max_user_connections)
            .field("archive_dir", &self.archive_dir)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

fn db_err(context: &str, e: impl std::fmt::Display) -> DbError {
    DbError(format!("{context}: {e}"))
}

/// The database and user names of an account: `<login>_db` and `<login>` (MariaDB allows
/// 64 characters for a database, 80 for a user; Lodge's logins are far shorter). Only
/// lowercase letters, digits and `_`, so they never need more than backquotes.
pub fn names(login: &str) -> Option<(String, String)> {
    let ok = !login.is_empty()
        && login.len() <= 32
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| (format!("{login}_db"), login.to_owned()))
}

/// A new password: 24 letters and digits (no quoting needed anywhere).
pub fn new_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

/// `'text'` as a MariaDB string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `` `name` `` as a MariaDB identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A database name as a `GRANT … ON <pattern>.*` names it: there `_` and `%` are
/// wildcards, so `shop_db` would also grant `shopXdb`, databases the account could then
/// create beyond its plan and that termination would leave behind (found by the stack
/// audit). Escaped, the grant is of that one database.
fn grant_pattern(db: &str) -> String {
    ident(
        &db.replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%"),
    )
}

/// A value of a MariaDB option file, quoted: unquoted, a `#` starts a comment (a password
/// holding one was cut there, and every dump was refused: found by the stack audit).
fn option_value(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    format!("\"{escaped}\"")
}

/// A client of the database server (its administrative login).
#[derive(Clone)]
pub struct MariaDb {
    settings: MariaDbSettings,
    pool: MySqlPool,
    options: MySqlConnectOptions,
}

impl std::fmt::Debug for MariaDb {
    /// The settings only (their URL redacted): the connect options hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MariaDb {
    pub fn new(settings: MariaDbSettings) -> Result<Self, DbError> {
        use sqlx::ConnectOptions;
        // Statements carry passwords (`IDENTIFIED BY`): never logged, slow or not.
        let options = MySqlConnectOptions::from_str(settings.url.expose_secret())
            .map_err(|_| DbError("the MariaDB URL is not a mysql:// URL".into()))?
            .disable_statement_logging();
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        Ok(MariaDb {
            settings,
            pool,
            options,
        })
    }

    pub fn settings(&self) -> &MariaDbSettings {
        &self.settings
    }

    fn account(&self, user: &str) -> String {
        format!("{}@{}", literal(user), literal(&self.settings.user_host))
    }

    async fn exec(&self, sql: &str, what: &str) -> Result<(), DbError> {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| db_err(what, e))
    }

    /// The database, its user (with `password`) and the grant on that database only.
    pub async fn ensure(&self, db: &str, user: &str, password: &str) -> Result<(), DbError> {
        let account = self.account(user);
        let limit = self.settings.max_user_connections;
        self.exec(
            &format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                ident(db)
            ),
            "creating the database",
        )
        .await?;
        self.exec(
            &format!(
                "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {} WITH MAX_USER_CONNECTIONS {limit}",
                literal(password)
            ),
            "creating the database user",
        )
        .await?;
        // A user left by an attempt whose answer was lost gets the stored password again.
        self.exec(
            &format!(
                "ALTER USER {account} IDENTIFIED BY {} WITH MAX_USER_CONNECTIONS {limit}",
                literal(password)
            ),
            "setting the database user's password",
        )
        .await?;
        self.exec(
            &format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {account}",
                grant_pattern(db)
            ),
            "granting the database to its user",
        )
        .await
    }

    /// Narrows the grants made before `_` was escaped (`` `<login>_db`.* ``, a pattern
    /// that also matched `<login>Xdb`: 885bae6) to the one database, for the accounts given
    /// as (database, user). Returns how many it narrowed, and the databases other than
    /// theirs the old patterns matched (made by the accounts beyond their plan: left as
    /// they are, their data, but no longer granted, for staff to settle); once none is
    /// left, it is one query. Another node narrowing the same grant meanwhile is no error.
    pub async fn narrow_old_grants(
        &self,
        accounts: &[(String, String)],
    ) -> Result<(usize, Vec<String>), DbError> {
        let old: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(User AS CHAR), CAST(Db AS CHAR) FROM mysql.db \
             WHERE Host = ? AND Db = CONCAT(User, '_db')",
        )
        .bind(&self.settings.user_host)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err("reading the grants", e))?;
        let ours: std::collections::HashSet<(&str, &str)> = accounts
            .iter()
            .map(|(d, u)| (d.as_str(), u.as_str()))
            .collect();
        let (mut narrowed, mut beyond) = (0, Vec::new());
        for (user, db) in old {
            if !ours.contains(&(db.as_str(), user.as_str())) {
                continue; // not one of Lodge's accounts
            }
            // What the old pattern reached besides the account's own database (the
            // pattern is the grant's own string: `_` and `%` match as in the grant).
            let matched: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME LIKE ? AND SCHEMA_NAME <> ?",
            )
            .bind(&db)
            .bind(&db)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err("listing the databases the old grant reached", e))?;
            beyond.extend(matched.into_iter().map(|m| format!("{m} ({user})")));
            let account = self.account(&user);
            self.exec(
                &format!(
                    "GRANT ALL PRIVILEGES ON {}.* TO {account}",
                    grant_pattern(&db)
                ),
                "granting the database to its user",
            )
            .await?;
            let revoked = self
                .exec(
                    &format!("REVOKE ALL PRIVILEGES ON {}.* FROM {account}", ident(&db)),
                    "revoking the grant made before `_` was escaped",
                )
                .await;
            if let Err(e) = revoked {
                // Gone meanwhile (another node narrowed it first): done all the same.
                let left: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM mysql.db WHERE Host = ? AND User = ? AND Db = ?",
                )
                .bind(&self.settings.user_host)
                .bind(&user)
                .bind(&db)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| db_err("reading the grants", e))?;
                if left > 0 {
                    return Err(e);
                }
                continue;
            }
            narrowed += 1;
        }
        Ok((narrowed, beyond))
    }

    /// Sets the user's password.
    pub async fn set_password(&self, user: &str, password: &str) -> Result<(), DbError> {
        self.exec(
            &format!(
                "ALTER USER {} IDENTIFIED BY {}",
                self.account(user),
                literal(password)
            ),
            "setting the database user's password",
        )
        .await
    }

    /// Locks (no login) or unlocks the user; a lock also ends its open sessions.
    pub async fn lock(&self, user: &str, locked: bool) -> Result<(), DbError> {
        let word = if locked { "LOCK" } else { "UNLOCK" };
        self.exec(
            &format!("ALTER USER IF EXISTS {} ACCOUNT {word}", self.account(user)),
            "locking the database user",
        )
        .await?;
        if locked {
            // As text: the column is BIGINT UNSIGNED on MySQL and a signed BIGINT on MariaDB
            // 10.11 (found by the stack audit: decoding it as u64 failed there, so every
            // suspension of an account with an open session failed half done).
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(ID AS CHAR) FROM information_schema.PROCESSLIST WHERE USER = ?",
            )
            .bind(user)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err("listing the user's sessions", e))?;
            for id in ids.iter().filter_map(|i| i.trim().parse::<u64>().ok()) {
                // Gone meanwhile: fine.
                let _ = self
                    .exec(&format!("KILL CONNECTION {id}"), "ending a session")
                    .await;
            }
        }
        Ok(())
    }

    /// Whether the database exists.
    pub async fn exists(&self, db: &str) -> Result<bool, DbError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind(db)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err("looking for the database", e))?;
        Ok(found.is_some())
    }

    /// Drops the database and its user (either already gone is fine).
    pub async fn drop_all(&self, db: &str, user: &str) -> Result<(), DbError> {
        self.exec(
            &format!("DROP DATABASE IF EXISTS {}", ident(db)),
            "dropping the database",
        )
        .await?;
        self.exec(
            &format!("DROP USER IF EXISTS {}", self.account(user)),
            "dropping the database user",
        )
        .await
    }

    /// Dumps the database into `dest` (`mariadb-dump`, the administrative login passed in
    /// a private option file, never on the command line); written aside and renamed.
    pub async fn dump(&self, db: &str, dest: &Path) -> Result<(), DbError> {
        let dir = dest
            .parent()
            .ok_or_else(|| DbError("the dump has no directory".into()))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| db_err("creating the archive directory", e))?;
        let url = self.settings.url.expose_secret();
        let parsed =
            reqwest::Url::parse(url).map_err(|_| DbError("the MariaDB URL is not a URL".into()))?;
        let user = urlencoding_decode(parsed.username());
        let password = urlencoding_decode(parsed.password().unwrap_or(""));
        let mut cnf = format!(
            "[client]\nuser={}\npassword={}\n",
            option_value(&user),
            option_value(&password)
        );
        let socket = parsed
            .query_pairs()
            .find(|(k, _)| k == "socket")
            .map(|(_, v)| v.into_owned());
        match socket {
            Some(s) => cnf.push_str(&format!("socket={}\nprotocol=socket\n", option_value(&s))),
            None => {
                let host = parsed.host_str().unwrap_or("localhost");
                let port = parsed.port().unwrap_or(3306);
                cnf.push_str(&format!(
                    "host={}\nport={port}\nprotocol=tcp\n",
                    option_value(host)
                ));
            }
        }
        let cnf_path = dir.join(format!(".lodge-dump-{}.cnf", uuid_like()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&cnf_path)
                .map_err(|e| db_err("writing the dump's option file", e))?;
            f.write_all(cnf.as_bytes())
                .map_err(|e| db_err("writing the dump's option file", e))?;
        }
        let partial = dest.with_extension("sql.partial");
        // Readable by Lodge's user only, as the customer's data in it is (found by the
        // stack audit: 0644 from the umask); made before the dump writes into it.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
                .map_err(|e| db_err("creating the dump file", e))?;
        }
        let out = tokio::process::Command::new(&self.settings.dump_binary)
            .arg(format!("--defaults-extra-file={}", cnf_path.display()))
            .args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--databases",
                db,
            ])
            .arg(format!("--result-file={}", partial.display()))
            .output()
            .await;
        let _ = std::fs::remove_file(&cnf_path);
        let out = out.map_err(|e| {
            db_err(
                &format!("cannot run {}", self.settings.dump_binary.display()),
                e,
            )
        })?;
        if !out.status.success() {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(DbError(format!(
                "{} failed: {}",
                self.settings.dump_binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|e| db_err("archiving the dump", e))
    }

    /// Checks the administrative login (server version).
    pub async fn check(&self) -> Result<String, DbError> {
        let v: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_err("connecting", e))?;
        Ok(v)
    }

    /// The connect options of the administrative login (for tests and `check`).
    pub fn options(&self) -> &MySqlConnectOptions {
        &self.options
    }
}

/// Percent-decoding of a URL's user or password.
fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        if b == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uuid_like() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_quoting_and_redaction() {
        assert_eq!(
            names("shopexam42"),
            Some(("shopexam42_db".into(), "shopexam42".into()))
        );
        assert_eq!(names("a'b"), None);
        assert_eq!(names(""), None);
        assert_eq!(literal("it's"), "'it\\'s'");
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(grant_pattern("shop_db"), "`shop\\_db`");
        assert_eq!(grant_pattern("a%b\\c"), "`a\\%b\\\\c`");
        assert_eq!(option_value("p#ss"), "\"p#ss\"");
        assert_eq!(option_value("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(urlencoding_decode("p%40ss%2Fw"), "p@ss/w");
        let settings = MariaDbSettings {
            url: SecretString::from("mysql://admin:hunter2@127.0.0.1:3306/"),
            host: "db.example".into(),
            port: 3306,
            user_host: "localhost".into(),
            dump_binary: "mariadb-dump".into(),
            max_user_connections: 10,
            archive_dir: "archive".into(),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let client = MariaDb::new(settings).unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("db.example"),
            "{shown}"
        );
        let p = new_password();
        assert_eq!(p.len(), 24);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
