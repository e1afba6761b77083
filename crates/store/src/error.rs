//! The store's one error type.

/// Storage errors. Constraint violations carry the constraint (or column) that failed so the
/// HTTP dialects can turn them into field errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("check constraint violated: {0}")]
    Check(String),
    #[error("not found")]
    NotFound,
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Db(sqlx::Error),
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
                sqlx::error::ErrorKind::UniqueViolation => return StoreError::Conflict(what),
                sqlx::error::ErrorKind::CheckViolation => return StoreError::Check(what),
                _ => {}
            }
            // SQLite reports CHECK failures without a kind in some versions.
            if db.message().starts_with("CHECK constraint failed") {
                return StoreError::Check(what);
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
                    StoreError::Conflict(what)
                } else if what.starts_with("CHECK") {
                    StoreError::Check(what)
                } else {
                    StoreError::Sqlite(e)
                }
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    /// Whether this is a unique violation whose constraint or message mentions `needle`.
    pub fn is_conflict_on(&self, needle: &str) -> bool {
        matches!(self, StoreError::Conflict(w) if w.contains(needle))
    }

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
