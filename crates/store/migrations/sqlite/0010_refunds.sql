-- Refunds (SQLite). Keep in step with ../postgres/.
--
-- A refund gives back part or all of what a paid invoice received: to the organization's
-- account credit (with a `refund` entry in its ledger) or in cash outside Lodge (recorded
-- here only). The invoice keeps the running total in `refunded_minor`, so a read of the
-- invoice row says how much went back, and its status becomes `partially_refunded`, then
-- `refunded`.

CREATE TABLE refunds (
    id              INTEGER PRIMARY KEY,
    invoice_id      INTEGER NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    destination     TEXT NOT NULL CHECK (destination = 'credit' OR destination = 'cash'),
    reference       TEXT,
    reason          TEXT NOT NULL DEFAULT '',
    actor           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    -- A cash refund names the bank's or gateway's reference of the money sent back.
    CONSTRAINT refunds_cash_reference CHECK (destination = 'credit' OR reference IS NOT NULL)
);
CREATE INDEX refunds_invoice ON refunds (invoice_id, id);
-- A cash refund recorded twice (a retried request) changes nothing the second time.
CREATE UNIQUE INDEX refunds_cash_once ON refunds (reference) WHERE destination = 'cash';

-- Never more back than the invoice received (credit applied and payments).
ALTER TABLE invoices ADD COLUMN refunded_minor INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_minor >= 0 AND refunded_minor <= credit_applied_minor + paid_minor);

-- The status check accepts `partially_refunded`. SQLite cannot alter a CHECK; loosening
-- one is done on the stored definition (https://sqlite.org/lang_altertable.html#otheralter).
-- The definition is in one of two forms: as migration 0002 wrote it (an `IN` list), or as
-- the one-time rebuild of the order tables rewrote it (`status = … OR …`,
-- store/src/sqlite/rebuild.rs); each `replace` matches one form only. The DDL above has
-- changed the schema's version in this transaction, so every connection reads the
-- definitions again; `RESET` makes this one read them at once.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(
        replace(sql,
            '''paid'', ''refunded'', ''cancelled'')',
            '''paid'', ''partially_refunded'', ''refunded'', ''cancelled'')'),
        'status = ''paid'' OR status = ''refunded''',
        'status = ''paid'' OR status = ''partially_refunded'' OR status = ''refunded''')
WHERE type = 'table' AND name = 'invoices';
PRAGMA writable_schema = RESET;
