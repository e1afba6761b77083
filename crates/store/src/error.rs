//! The store's one error type, with constraint violations typed: a service matches on a
//! [`Conflict`] or a [`Check`], never on how an engine spells a constraint.

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("configuration: {0}")]
    Config(String),
    /// A unique constraint refused the write.
    #[error("unique constraint violated: {0}")]
    Conflict(Conflict),
    /// A check constraint refused the write.
    #[error("check constraint violated: {0}")]
    Check(Check),
    #[error("not found")]
    NotFound,
    /// An operation refused as a whole, in words for the operator (a copy's target that
    /// holds data, say).
    #[error("{0}")]
    Refused(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The SQLite file open was deleted or replaced under the running process.
    #[error(
        "the database file {0} was deleted or replaced while Lodge has it open: what is \
         written now is lost when Lodge stops; put the file back (or restart on the one now \
         there)"
    )]
    FileGone(String),
    #[error("database: {0}")]
    Db(sqlx::Error),
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    /// A failure [`StoreError::is_unavailable`] said was a moment's outage, passed on by
    /// something that could not keep the original (a group commit's many callers).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Not a `source`: its words are in the message already (an error chain printed whole
    /// said them twice: found by the operator audit).
    #[error("migration: {}", migrate_words(.0))]
    Migrate(sqlx::migrate::MigrateError),
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// sqlx's words, and what they mean for an operator where they need saying.
fn migrate_words(e: &sqlx::migrate::MigrateError) -> String {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => format!(
            "{e}: this database was migrated by a newer Lodge (its migration {v} is unknown to \
             this build); run that build, or restore the backup taken before the upgrade"
        ),
        other => other.to_string(),
    }
}

impl StoreError {
    /// Whether the database could not be reached or is going away (the pool's wait ran
    /// out, the connection broke, PostgreSQL is shutting down or refusing connections):
    /// a moment's outage to retry, not a fault of the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // SQLSTATE class 08 (connection exception), 53 (insufficient resources: too
            // many connections, out of memory or disk), 57P0x (operator intervention: admin
            // or crash shutdown, starting up) and 55000 (the database not accepting
            // connections).
            // SQLite's result codes (sqlx gives the extended code, numeric and at most four
            // digits, where PostgreSQL's SQLSTATE is five characters): busy, locked, I/O
            // error, disk full, cannot open (found by the resilience audit: a full disk or a
            // write lock held by another process was a 500, not a 503 to retry).
            StoreError::Db(sqlx::Error::Database(d)) => d.code().is_some_and(|c| {
                if c.len() <= 4 {
                    return c
                        .parse::<i32>()
                        .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14));
                }
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "55000"
            }),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::CannotOpen
            ),
            StoreError::Unavailable(_) => true,
            _ => false,
        }
    }
}

/// What a write would have duplicated, whichever engine refused it. PostgreSQL names the
/// constraint; SQLite lists its columns (`UNIQUE constraint failed: users.email`): both
/// spellings of each are in [`Conflict::from_engine`], and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A domain name a live domain object already holds (`domains_live_name`).
    LiveDomainName,
    /// A domain name a live hosting account already carries (`hosting_live_name`).
    LiveHostingName,
    /// A user's email.
    UserEmail,
    /// A server's name.
    ServerName,
    /// A plan's numeric (legacy) id.
    PlanLegacyId,
    /// A plan's slug.
    PlanSlug,
    /// A plan group's slug.
    PlanGroupSlug,
    /// A coupon's code.
    CouponCode,
    /// An organization's second default project.
    DefaultProject,
    /// A user already member of the organization.
    Membership,
    /// A payment already recorded: its method and reference (`payments_once`).
    PaymentReference,
    /// An invoice number.
    InvoiceNumber,
    /// A service's period billed twice (`invoice_lines_once`).
    InvoiceLinePeriod,
    /// A job's dedupe key.
    JobDedupeKey,
    /// An idempotency key, in its scope.
    IdempotencyKey,
    /// Another unique constraint, as its engine named it.
    Other(String),
}

impl Conflict {
    /// The conflict a unique violation reported as `what` stands for: PostgreSQL's
    /// constraint name or SQLite's message.
    pub(crate) fn from_engine(what: &str) -> Self {
        let sqlite = what.strip_prefix("UNIQUE constraint failed: ");
        match sqlite.unwrap_or(what) {
            "domains_live_name" | "domains.name" => Conflict::LiveDomainName,
            "hosting_live_name" | "hosting.domain_name" => Conflict::LiveHostingName,
            "users_email_key" | "users.email" => Conflict::UserEmail,
            "servers_name_key" | "servers.name" => Conflict::ServerName,
            "plans_pkey" | "plans.legacy_id" => Conflict::PlanLegacyId,
            "plans_slug_key" | "plans.slug" => Conflict::PlanSlug,
            "plan_groups_slug_key" | "plan_groups.slug" => Conflict::PlanGroupSlug,
            "coupons_code_key" | "coupons.code" => Conflict::CouponCode,
            "projects_one_default" | "projects.organization_id" => Conflict::DefaultProject,
            "memberships_pkey" | "memberships.organization_id, memberships.user_id" => {
                Conflict::Membership
            }
            "payments_once" | "payments.method, payments.reference" => Conflict::PaymentReference,
            "invoices_number_key" | "invoices.number" => Conflict::InvoiceNumber,
            "invoice_lines_once"
            | "invoice_lines.service_id, invoice_lines.period_start, invoice_lines.kind" => {
                Conflict::InvoiceLinePeriod
            }
            "jobs_dedupe_key_key" | "jobs.dedupe_key" => Conflict::JobDedupeKey,
            "idempotency_keys_pkey" | "idempotency_keys.scope, idempotency_keys.key" => {
                Conflict::IdempotencyKey
            }
            _ => Conflict::Other(what.to_owned()),
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conflict::LiveDomainName => "live domain name",
            Conflict::LiveHostingName => "live hosting name",
            Conflict::UserEmail => "user email",
            Conflict::ServerName => "server name",
            Conflict::PlanLegacyId => "plan legacy id",
            Conflict::PlanSlug => "plan slug",
            Conflict::PlanGroupSlug => "plan group slug",
            Conflict::CouponCode => "coupon code",
            Conflict::DefaultProject => "default project",
            Conflict::Membership => "membership",
            Conflict::PaymentReference => "payment reference",
            Conflict::InvoiceNumber => "invoice number",
            Conflict::InvoiceLinePeriod => "invoice line period",
            Conflict::JobDedupeKey => "job dedupe key",
            Conflict::IdempotencyKey => "idempotency key",
            Conflict::Other(what) => what,
        })
    }
}

/// What a check constraint refused, whichever engine refused it. A named check has the
/// same name on both engines; an unnamed one is named by PostgreSQL and quoted by SQLite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A credit balance below zero (`organizations_credit_nonnegative`, or the ledger
    /// entry's balance after it).
    NegativeBalance,
    /// A coupon used more times than it may be (`coupons_usage_limit`).
    CouponUsedUp,
    /// An invoice paid beyond its total (`invoices_not_overpaid`).
    InvoiceOverpaid,
    /// Another check, as its engine named it.
    Other(String),
}

impl Check {
    /// The check a check violation reported as `what` stands for: PostgreSQL's constraint
    /// name or SQLite's message.
    pub(crate) fn from_engine(what: &str) -> Self {
        let sqlite = what.strip_prefix("CHECK constraint failed: ");
        match sqlite.unwrap_or(what) {
            "organizations_credit_nonnegative"
            | "credit_ledger_balance_after_minor_check"
            | "balance_after_minor >= 0" => Check::NegativeBalance,
            "coupons_usage_limit" => Check::CouponUsedUp,
            "invoices_not_overpaid" => Check::InvoiceOverpaid,
            _ => Check::Other(what.to_owned()),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::NegativeBalance => "negative balance",
            Check::CouponUsedUp => "coupon used up",
            Check::InvoiceOverpaid => "invoice overpaid",
            Check::Other(what) => what,
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = e {
            return StoreError::NotFound;
        }
        if let sqlx::Error::ColumnDecode { index, source } = &e {
            return StoreError::Corrupt(format!("column {index}: {source}"));
        }
        if let Some(db) = e.as_database_error() {
            let what = db
                .constraint()
                .map(str::to_owned)
                .unwrap_or_else(|| db.message().to_owned());
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return StoreError::Conflict(Conflict::from_engine(&what))
                }
                sqlx::error::ErrorKind::CheckViolation => {
                    return StoreError::Check(Check::from_engine(&what))
                }
                _ => {}
            }
            // SQLite reports CHECK failures without a kind in some versions.
            if db.message().starts_with("CHECK constraint failed") {
                return StoreError::Check(Check::from_engine(&what));
            }
        }
        StoreError::Db(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, msg)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let what = msg.clone().unwrap_or_else(|| f.to_string());
                // The same messages sqlx reports for SQLite ("UNIQUE constraint failed: …").
                if what.starts_with("UNIQUE") {
                    StoreError::Conflict(Conflict::from_engine(&what))
                } else if what.starts_with("CHECK") {
                    StoreError::Check(Check::from_engine(&what))
                } else {
                    StoreError::Sqlite(e)
                }
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// Whether the transaction failed only because of other transactions (a PostgreSQL
    /// deadlock or serialization failure), so running it again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| crate::postgres::TRANSIENT_SQLSTATES.contains(&c.as_ref())),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
