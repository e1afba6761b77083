-- Lodge foundation schema (SQLite). Times are unix microseconds (UTC), dates 'YYYY-MM-DD',
-- money integer minor units, flags 0/1 integers. Keep in step with ../postgres/.

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL CHECK (value >= 0)
);
INSERT INTO counters (name, value) VALUES ('catalog_version', 1), ('invoice_number', 0), ('order_number', 0);

CREATE TABLE users (
    legacy_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    is_staff      INTEGER NOT NULL DEFAULT 0 CHECK (is_staff IN (0, 1)),
    is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at    INTEGER NOT NULL,
    modified_at   INTEGER NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE organizations (
    legacy_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    name               TEXT NOT NULL,
    organization_type  TEXT NOT NULL DEFAULT 'personal' CHECK (organization_type IN ('personal', 'professional')),
    support_plan       TEXT NOT NULL DEFAULT 'basic' CHECK (support_plan IN ('basic', 'advanced', 'business')),
    modules            TEXT NOT NULL DEFAULT '["hosting","domains"]',
    user_quota         INTEGER NOT NULL DEFAULT 5,
    project_quota      INTEGER NOT NULL DEFAULT 10,
    instance_quota     INTEGER NOT NULL DEFAULT 10,
    domain_quota       INTEGER NOT NULL DEFAULT 50,
    logo               TEXT,
    company_name       TEXT NOT NULL DEFAULT '',
    address_1          TEXT NOT NULL DEFAULT '',
    address_2          TEXT NOT NULL DEFAULT '',
    city               TEXT NOT NULL DEFAULT '',
    state              TEXT NOT NULL DEFAULT '',
    postcode           TEXT NOT NULL DEFAULT '',
    country            TEXT NOT NULL DEFAULT '',
    phone              TEXT NOT NULL DEFAULT '',
    vat_number         TEXT NOT NULL DEFAULT '',
    is_active          INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    currency           TEXT NOT NULL DEFAULT 'USD',
    credit_balance_minor INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    modified_at        INTEGER NOT NULL,
    CONSTRAINT organizations_credit_nonnegative CHECK (credit_balance_minor >= 0)
);

CREATE TABLE memberships (
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id         TEXT NOT NULL REFERENCES users (id),
    role            TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer', 'guest')),
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE projects (
    legacy_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    is_default      INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at      INTEGER NOT NULL,
    modified_at     INTEGER NOT NULL
);
CREATE INDEX projects_org ON projects (organization_id, legacy_id);
CREATE UNIQUE INDEX projects_one_default ON projects (organization_id) WHERE is_default = 1;

-- Project membership for guests (a guest sees only the projects it is added to).
CREATE TABLE project_members (
    project_id TEXT NOT NULL REFERENCES projects (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE api_keys (
    legacy_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    digest          TEXT NOT NULL,
    display_prefix  TEXT NOT NULL,
    name            TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users (id),
    organization_id TEXT REFERENCES organizations (id),
    scopes          TEXT NOT NULL,
    expires_at      INTEGER,
    last_used_at    INTEGER,
    revoked_at      INTEGER,
    created_at      INTEGER NOT NULL,
    CONSTRAINT api_keys_digest_key UNIQUE (digest)
);
CREATE INDEX api_keys_org ON api_keys (organization_id, legacy_id);

CREATE TABLE sessions (
    digest     TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE plan_groups (
    legacy_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    slug          TEXT NOT NULL,
    name          TEXT NOT NULL,
    name_en       TEXT NOT NULL DEFAULT '',
    name_fr       TEXT NOT NULL DEFAULT '',
    headline      TEXT NOT NULL DEFAULT '',
    headline_en   TEXT NOT NULL DEFAULT '',
    headline_fr   TEXT NOT NULL DEFAULT '',
    tagline       TEXT NOT NULL DEFAULT '',
    tagline_en    TEXT NOT NULL DEFAULT '',
    tagline_fr    TEXT NOT NULL DEFAULT '',
    display_order INTEGER NOT NULL DEFAULT 0,
    is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at    INTEGER NOT NULL,
    modified_at   INTEGER NOT NULL,
    CONSTRAINT plan_groups_slug_key UNIQUE (slug)
);

CREATE TABLE plans (
    legacy_id          INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    group_id           TEXT NOT NULL REFERENCES plan_groups (id),
    slug               TEXT NOT NULL,
    name               TEXT NOT NULL,
    name_en            TEXT NOT NULL DEFAULT '',
    name_fr            TEXT NOT NULL DEFAULT '',
    description        TEXT NOT NULL DEFAULT '',
    description_en     TEXT NOT NULL DEFAULT '',
    description_fr     TEXT NOT NULL DEFAULT '',
    hosting_type       TEXT NOT NULL DEFAULT 'hostingaccount' CHECK (hosting_type IN ('hostingaccount', 'reselleraccount')),
    disk_space_mb      INTEGER NOT NULL DEFAULT 0,
    bandwidth_mb       INTEGER NOT NULL DEFAULT 0,
    max_email_accounts INTEGER NOT NULL DEFAULT 0,
    max_databases      INTEGER NOT NULL DEFAULT 0,
    max_subdomains     INTEGER NOT NULL DEFAULT 0,
    max_addon_domains  INTEGER NOT NULL DEFAULT 0,
    max_parked_domains INTEGER NOT NULL DEFAULT 0,
    max_ftp_accounts   INTEGER NOT NULL DEFAULT 0,
    max_accounts       INTEGER NOT NULL DEFAULT 0,
    category           TEXT NOT NULL DEFAULT '204',
    type_id            TEXT NOT NULL DEFAULT '206',
    field1             TEXT NOT NULL DEFAULT '',
    field2             TEXT NOT NULL DEFAULT '',
    driver             TEXT NOT NULL DEFAULT 'nginx',
    html               TEXT NOT NULL DEFAULT '',
    moreinfo_url       TEXT NOT NULL DEFAULT '',
    buyable            INTEGER NOT NULL DEFAULT 1 CHECK (buyable IN (0, 1)),
    hidden             INTEGER NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1)),
    is_active          INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    display_order      INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    modified_at        INTEGER NOT NULL,
    CONSTRAINT plans_slug_key UNIQUE (slug)
);
CREATE INDEX plans_group ON plans (group_id);

CREATE TABLE plan_prices (
    plan_id         TEXT NOT NULL REFERENCES plans (id),
    billing_cycle   TEXT NOT NULL CHECK (billing_cycle IN ('free', 'one_time', 'monthly', 'quarterly', 'semi_annually', 'annually', 'biennially', 'triennially')),
    currency        TEXT NOT NULL,
    price_minor     INTEGER NOT NULL CHECK (price_minor >= 0),
    setup_fee_minor INTEGER NOT NULL DEFAULT 0 CHECK (setup_fee_minor >= 0),
    is_default      INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    PRIMARY KEY (plan_id, billing_cycle)
);

CREATE TABLE service_offers (
    legacy_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    plan_id            TEXT NOT NULL REFERENCES plans (id),
    intro_total_minor  INTEGER NOT NULL CHECK (intro_total_minor >= 0),
    intro_months       INTEGER NOT NULL CHECK (intro_months > 0),
    renewal_minor      INTEGER NOT NULL CHECK (renewal_minor >= 0),
    renewal_months     INTEGER NOT NULL CHECK (renewal_months > 0),
    allow_coupon       INTEGER NOT NULL DEFAULT 1 CHECK (allow_coupon IN (0, 1)),
    is_active          INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at         INTEGER NOT NULL,
    modified_at        INTEGER NOT NULL,
    deleted_at         INTEGER
);
CREATE INDEX service_offers_plan ON service_offers (plan_id);

CREATE TABLE coupons (
    legacy_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    code        TEXT NOT NULL,
    kind        INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
    value       INTEGER NOT NULL CHECK (value >= 0),
    recurring   INTEGER NOT NULL DEFAULT 0 CHECK (recurring IN (0, 1)),
    plan_id     TEXT REFERENCES plans (id),
    max_uses    INTEGER,
    uses        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER,
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    CONSTRAINT coupons_code_key UNIQUE (code),
    CONSTRAINT coupons_usage_limit CHECK (max_uses IS NULL OR uses <= max_uses),
    CONSTRAINT coupons_percent_range CHECK (kind <> 1 OR value <= 10000)
);

CREATE TABLE tlds (
    tld              TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    category         TEXT NOT NULL DEFAULT 'generic',
    register_open    INTEGER NOT NULL DEFAULT 1 CHECK (register_open IN (0, 1)),
    transfer_open    INTEGER NOT NULL DEFAULT 1 CHECK (transfer_open IN (0, 1)),
    min_years        INTEGER NOT NULL DEFAULT 1 CHECK (min_years >= 1),
    max_years        INTEGER NOT NULL DEFAULT 10,
    is_active        INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at       INTEGER NOT NULL,
    modified_at      INTEGER NOT NULL,
    CONSTRAINT tlds_years CHECK (max_years >= min_years)
);

CREATE TABLE tld_prices (
    tld            TEXT NOT NULL REFERENCES tlds (tld),
    years          INTEGER NOT NULL CHECK (years BETWEEN 1 AND 10),
    currency       TEXT NOT NULL,
    register_minor INTEGER NOT NULL CHECK (register_minor >= 0),
    renew_minor    INTEGER NOT NULL CHECK (renew_minor >= 0),
    transfer_minor INTEGER NOT NULL CHECK (transfer_minor >= 0),
    PRIMARY KEY (tld, years)
);
