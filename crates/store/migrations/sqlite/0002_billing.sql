-- Orders, invoices, payments, account credit, hosting accounts, domains, jobs and
-- idempotency keys (SQLite). Keep in step with ../postgres/.

CREATE TABLE orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid            TEXT NOT NULL UNIQUE,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    project_id      TEXT NOT NULL REFERENCES projects (id),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'active', 'cancelled', 'fraud')),
    source          TEXT NOT NULL CHECK (source IN ('v1', 'apiv2', 'admin')),
    currency        TEXT NOT NULL,
    coupon_id       TEXT REFERENCES coupons (id),
    actor           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    modified_at     INTEGER NOT NULL
);
CREATE INDEX orders_org ON orders (organization_id, id);

CREATE TABLE invoices (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    number               TEXT UNIQUE,
    organization_id      TEXT NOT NULL REFERENCES organizations (id),
    order_id             INTEGER REFERENCES orders (id),
    kind                 TEXT NOT NULL CHECK (kind IN ('first', 'renewal', 'manual')),
    status               TEXT NOT NULL CHECK (status IN ('draft', 'unpaid', 'paid', 'refunded', 'cancelled')),
    currency             TEXT NOT NULL,
    subtotal_minor       INTEGER NOT NULL,
    tax_minor            INTEGER NOT NULL DEFAULT 0,
    total_minor          INTEGER NOT NULL,
    credit_applied_minor INTEGER NOT NULL DEFAULT 0,
    paid_minor           INTEGER NOT NULL DEFAULT 0,
    payment_token        TEXT NOT NULL UNIQUE,
    due_date             TEXT NOT NULL,
    issued_at            INTEGER NOT NULL,
    paid_at              INTEGER,
    cancelled_at         INTEGER,
    created_at           INTEGER NOT NULL,
    modified_at          INTEGER NOT NULL,
    CONSTRAINT invoices_total CHECK (total_minor = subtotal_minor + tax_minor AND total_minor >= 0),
    CONSTRAINT invoices_not_overpaid CHECK (credit_applied_minor >= 0 AND paid_minor >= 0 AND credit_applied_minor + paid_minor <= total_minor)
);
CREATE INDEX invoices_org ON invoices (organization_id, id);
CREATE INDEX invoices_order ON invoices (order_id);
CREATE INDEX invoices_unpaid ON invoices (status, kind, issued_at);

CREATE TABLE invoice_lines (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    invoice_id    INTEGER NOT NULL REFERENCES invoices (id),
    position      INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('plan', 'setup_fee', 'domain_registration', 'domain_transfer', 'domain_renewal', 'discount', 'adjustment')),
    description   TEXT NOT NULL,
    service_id    TEXT,
    period_start  TEXT,
    period_end    TEXT,
    amount_minor  INTEGER NOT NULL,
    tax_rate_bp   INTEGER NOT NULL DEFAULT 0,
    tax_minor     INTEGER NOT NULL DEFAULT 0,
    -- One line per (service, period start, reason): billing a period twice is impossible.
    CONSTRAINT invoice_lines_once UNIQUE (service_id, period_start, kind)
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, position);

CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    invoice_id      INTEGER NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    method          TEXT NOT NULL,
    reference       TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    actor           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    -- A gateway reporting the same payment twice changes nothing the second time.
    CONSTRAINT payments_once UNIQUE (method, reference)
);
CREATE INDEX payments_invoice ON payments (invoice_id);

CREATE TABLE credit_ledger (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id     TEXT NOT NULL REFERENCES organizations (id),
    kind                TEXT NOT NULL CHECK (kind IN ('deposit', 'applied', 'refund', 'adjustment')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor <> 0),
    balance_after_minor INTEGER NOT NULL CHECK (balance_after_minor >= 0),
    currency            TEXT NOT NULL,
    invoice_id          INTEGER REFERENCES invoices (id),
    note                TEXT NOT NULL DEFAULT '',
    actor               TEXT NOT NULL,
    created_at          INTEGER NOT NULL
);
CREATE INDEX credit_ledger_org ON credit_ledger (organization_id, id);

CREATE TABLE domains (
    legacy_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    organization_id   TEXT NOT NULL REFERENCES organizations (id),
    project_id        TEXT NOT NULL REFERENCES projects (id),
    order_id          INTEGER REFERENCES orders (id),
    name              TEXT NOT NULL,
    sld               TEXT NOT NULL,
    tld               TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending_registration', 'pending_transfer', 'active', 'expired', 'transferred_away', 'cancelled')),
    registrar         TEXT NOT NULL,
    epp_code          TEXT,
    registration_date TEXT,
    expiration_date   TEXT,
    auto_renew        INTEGER NOT NULL DEFAULT 1 CHECK (auto_renew IN (0, 1)),
    is_locked         INTEGER NOT NULL DEFAULT 1 CHECK (is_locked IN (0, 1)),
    nameservers       TEXT NOT NULL DEFAULT '[]',
    next_billing_date TEXT,
    created_at        INTEGER NOT NULL,
    modified_at       INTEGER NOT NULL
);
CREATE INDEX domains_project ON domains (project_id, legacy_id);
CREATE INDEX domains_org ON domains (organization_id, legacy_id);
-- A name is held by at most one live domain object.
CREATE UNIQUE INDEX domains_live_name ON domains (name) WHERE status IN ('pending_registration', 'pending_transfer', 'active');

CREATE TABLE hosting (
    legacy_id             INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    organization_id       TEXT NOT NULL REFERENCES organizations (id),
    project_id            TEXT NOT NULL REFERENCES projects (id),
    order_id              INTEGER NOT NULL REFERENCES orders (id),
    plan_id               TEXT NOT NULL REFERENCES plans (id),
    domain_name           TEXT NOT NULL,
    domain_id             TEXT REFERENCES domains (id),
    server_id             TEXT,
    username              TEXT,
    status                TEXT NOT NULL CHECK (status IN ('pending', 'provisioning', 'active', 'suspended', 'terminated', 'failed', 'cancelled')),
    billing_cycle         TEXT NOT NULL,
    recurring_minor       INTEGER NOT NULL CHECK (recurring_minor >= 0),
    first_period_months   INTEGER,
    renewal_months        INTEGER,
    currency              TEXT NOT NULL,
    coupon_id             TEXT REFERENCES coupons (id),
    next_due_date         TEXT,
    cancel_type           TEXT CHECK (cancel_type IN ('immediate', 'end_of_period')),
    cancel_reason         TEXT,
    cancel_requested_at   INTEGER,
    cancel_effective_date TEXT,
    last_error            TEXT,
    secret                TEXT,
    created_at            INTEGER NOT NULL,
    modified_at           INTEGER NOT NULL
);
CREATE INDEX hosting_project ON hosting (project_id, legacy_id);
CREATE INDEX hosting_org ON hosting (organization_id, legacy_id);
CREATE INDEX hosting_order ON hosting (order_id);
-- A name carries at most one live hosting account.
CREATE UNIQUE INDEX hosting_live_name ON hosting (domain_name) WHERE status IN ('pending', 'provisioning', 'active', 'suspended', 'failed');

CREATE TABLE hosting_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    hosting_id  TEXT NOT NULL REFERENCES hosting (id),
    from_status TEXT,
    to_status   TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX hosting_history_hosting ON hosting_history (hosting_id, id);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 8,
    run_at       INTEGER NOT NULL,
    locked_by    TEXT,
    locked_until INTEGER,
    last_error   TEXT,
    dedupe_key   TEXT UNIQUE,
    created_at   INTEGER NOT NULL,
    modified_at  INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, run_at);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code  INTEGER,
    response     TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
