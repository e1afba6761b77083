-- Payment tokens stored as digests (issue 18). (PostgreSQL.) Keep in step with ../sqlite/
--
-- The payment page's token (`/pay/{token}`) is no longer stored: it is derived from the
-- invoice's `payment_token_salt` (a random, per-invoice value, not a secret) under a key
-- derived from the node's secret key (LODGE_SECRET_KEY), so Lodge can show the link again
-- wherever it does; what the database holds for the lookup is its digest
-- (`payment_token_digest`: the token's 11 leading time digits, then the hex SHA-256 of the
-- whole token). A leaked database then gives neither working links nor what they are made
-- from.
--
-- The old column becomes the digest column (a rename keeps its NOT NULL UNIQUE, and on
-- SQLite needs no rebuild of the table). Until the node converts them at start (one
-- transaction, crates/services/src/payment_tokens.rs), the rows already there still hold
-- their plaintext token in it and an empty salt; the conversion gives each a salt and a
-- digest, and keeps the digest of its old token in `legacy_token_digest`, so that a link
-- sent before the upgrade keeps opening its page.
ALTER TABLE invoices RENAME COLUMN payment_token TO payment_token_digest;
ALTER TABLE invoices ADD COLUMN payment_token_salt TEXT NOT NULL DEFAULT '';
ALTER TABLE invoices ADD COLUMN legacy_token_digest TEXT;
CREATE UNIQUE INDEX invoices_legacy_token ON invoices (legacy_token_digest) WHERE legacy_token_digest IS NOT NULL;
-- The rows left to convert (none once converted: new invoices always have a salt), so the
-- check at each start reads an empty index, not the table.
CREATE INDEX invoices_plaintext_token ON invoices (id) WHERE payment_token_salt = '';
