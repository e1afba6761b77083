-- A MariaDB database per hosting account (issue 21). (PostgreSQL.) Keep in step with ../sqlite/
--
-- One row per account whose database Lodge made (or is making) on the database server:
-- its name and user there, and the user's password sealed with the node's secret key
-- (`lodge.sealer`). `ready` turns 1 once the database and user exist; `shown_at` is when
-- the customer was shown the password (it is shown once: NULL until then). The row goes
-- when the account is terminated (after the database was dumped and dropped).
CREATE TABLE hosting_databases (
    hosting_id   TEXT PRIMARY KEY REFERENCES hosting (id),
    name         TEXT NOT NULL UNIQUE,
    username     TEXT NOT NULL UNIQUE,
    secret       TEXT NOT NULL,
    ready        INTEGER NOT NULL DEFAULT 0,
    shown_at     BIGINT,
    created_at   BIGINT NOT NULL,
    modified_at  BIGINT NOT NULL
);
