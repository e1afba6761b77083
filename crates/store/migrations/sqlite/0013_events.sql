-- Events (SQLite). Keep in step with ../postgres/.
--
-- What happened to an organization's orders, invoices and accounts, written in the same
-- transaction as the change itself (an outbox): mail notices and outgoing webhooks are jobs
-- made from these rows in that transaction, so an event is never lost nor told twice.
-- `dedupe_key` makes an event that may be noticed by several passes (a renewal reminder)
-- happen once. `seq` orders them as they were recorded.

CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    subject         TEXT NOT NULL,
    data            TEXT NOT NULL,
    dedupe_key      TEXT UNIQUE,
    created_at      INTEGER NOT NULL
);
CREATE INDEX events_org ON events (organization_id, seq);
