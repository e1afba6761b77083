-- TLS certificates by ACME for hosted sites (issue 21).
--
-- The ACME account is one per CA directory, shared by every node: its credentials (the
-- account key and URL, JSON) are sealed with the node's secret key; the first node to create
-- it stores it, the others read it (created idempotently: the CA returns the same account
-- for the same key, and the insert keeps the first row).
CREATE TABLE acme_accounts (
    directory_url TEXT PRIMARY KEY,
    credentials   TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- One certificate per hosting account: `pending` while an order runs, `issued` once
-- installed (its `not_after`), `failed` with the last error (the job retries), `removed`
-- after termination (renewals stop). The private key is sealed; `order_url` lets a retried
-- job reuse the CA's order (its key is the one stored here, made before the CSR).
CREATE TABLE certificates (
    hosting_id  TEXT PRIMARY KEY REFERENCES hosting (id),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'issued', 'failed', 'removed')),
    not_after   BIGINT,
    chain_pem   TEXT,
    private_key TEXT,
    order_url   TEXT,
    order_key   TEXT,
    last_error  TEXT,
    issued_at   BIGINT,
    created_at  BIGINT NOT NULL,
    modified_at BIGINT NOT NULL
);
