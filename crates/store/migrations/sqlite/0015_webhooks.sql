-- Outgoing webhooks (SQLite). Keep in step with ../postgres/.
--
-- Endpoints staff register: a URL, the event kinds it gets (`events`: `*` for all, else the
-- kinds between commas, `,invoice.paid,order.created,`, so one `LIKE` finds the subscribed),
-- optionally one organization's events only, and its signing secret sealed at rest.
-- Each event an endpoint is subscribed to becomes a `webhook` job in the event's
-- transaction; every attempt to deliver it is a row of `webhook_deliveries`.

CREATE TABLE webhook_endpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    organization_id TEXT REFERENCES organizations (id),
    enabled         INTEGER NOT NULL DEFAULT 1,
    secret          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    modified_at     INTEGER NOT NULL
);

-- One attempt to deliver one event to one endpoint (`job_id`: the job that made it; a
-- staff redelivery is a job of its own). `status_code` is the receiver's answer, `error`
-- what went wrong before one (or why a non-2xx answer failed); `delivered` is 1 for a 2xx.
CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    job_id      INTEGER,
    attempt     INTEGER NOT NULL,
    redelivery  INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,
    error       TEXT,
    delivered   INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
