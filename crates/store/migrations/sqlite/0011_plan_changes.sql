-- Plan changes of hosting accounts (upgrades and downgrades, prorated; docs/billing.md): what
-- was asked, its figures, the invoice of an upgrade, and when it took effect. A new table, so
-- no CHECK of an existing one changes. Keep in step with ../postgres/.
CREATE TABLE plan_changes (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    hosting_id         TEXT NOT NULL REFERENCES hosting (id),
    organization_id    TEXT NOT NULL REFERENCES organizations (id),
    from_plan_id       TEXT NOT NULL REFERENCES plans (id),
    to_plan_id         TEXT NOT NULL REFERENCES plans (id),
    -- "Starter → Business", for the account's history.
    summary            TEXT NOT NULL,
    old_price_minor    INTEGER NOT NULL CHECK (old_price_minor >= 0),
    new_price_minor    INTEGER NOT NULL CHECK (new_price_minor >= 0),
    period_start       TEXT NOT NULL,
    period_end         TEXT NOT NULL,
    days_left          INTEGER NOT NULL CHECK (days_left > 0),
    days_in_period     INTEGER NOT NULL CHECK (days_in_period >= days_left),
    -- Signed: an upgrade's charge (invoiced), or minus a downgrade's credit.
    charge_minor       INTEGER NOT NULL,
    invoice_id         INTEGER REFERENCES invoices (id),
    status             TEXT NOT NULL CHECK (status IN ('awaiting_payment', 'applied', 'cancelled')),
    actor              TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    applied_at         INTEGER,
    -- When the worker's change_package job told the driver (once per change).
    package_changed_at INTEGER,
    CONSTRAINT plan_changes_invoiced CHECK ((charge_minor > 0) = (invoice_id IS NOT NULL))
);
CREATE INDEX plan_changes_hosting ON plan_changes (hosting_id, id);
CREATE UNIQUE INDEX plan_changes_invoice ON plan_changes (invoice_id);
-- At most one change waits for its payment per account.
CREATE UNIQUE INDEX plan_changes_awaiting ON plan_changes (hosting_id) WHERE status = 'awaiting_payment';
