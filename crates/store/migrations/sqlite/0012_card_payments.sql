-- Card payments through a gateway (Stripe's PaymentIntents). Keep in step with ../postgres/.
--
-- One row per PaymentIntent Lodge created for an invoice: its amount, the gateway's status as
-- last seen (Stripe's own words: `requires_payment_method`, `succeeded`, `canceled`, …, so no
-- CHECK on it) and the reason of the last failure, shown on the payment page and the invoice.
-- The money itself is a row of `payments` (method `card`, the intent's id as reference), whose
-- unique key records it once whichever of the webhook and the return page arrives first. A new
-- table: no CHECK of an existing one changes.
CREATE TABLE card_payments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway         TEXT NOT NULL,
    intent_id       TEXT NOT NULL,
    invoice_id      INTEGER NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    failure_reason  TEXT,
    created_at      INTEGER NOT NULL,
    modified_at     INTEGER NOT NULL,
    CONSTRAINT card_payments_once UNIQUE (gateway, intent_id)
);
CREATE INDEX card_payments_invoice ON card_payments (invoice_id, id);
-- One open intent per invoice and amount: the payment page reuses it.
CREATE UNIQUE INDEX card_payments_open ON card_payments (gateway, invoice_id, amount_minor)
    WHERE status <> 'succeeded' AND status <> 'canceled';
