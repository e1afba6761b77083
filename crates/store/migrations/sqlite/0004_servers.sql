-- Servers that host accounts, and which plans each serves (none listed: every plan of its
-- driver). Credentials are sealed by the application before they are stored.
CREATE TABLE servers (
    legacy_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    driver      TEXT NOT NULL,
    credentials TEXT,
    ns1         TEXT NOT NULL DEFAULT '',
    ns2         TEXT NOT NULL DEFAULT '',
    capacity    INTEGER NOT NULL DEFAULT 0 CHECK (capacity >= 0),
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    CONSTRAINT servers_name_key UNIQUE (name)
);

CREATE TABLE server_plans (
    server_id TEXT NOT NULL REFERENCES servers (id),
    plan_id   TEXT NOT NULL REFERENCES plans (id),
    PRIMARY KEY (server_id, plan_id)
);

CREATE INDEX hosting_server ON hosting (server_id, status);
CREATE INDEX hosting_cancel_due ON hosting (cancel_type, cancel_effective_date);
