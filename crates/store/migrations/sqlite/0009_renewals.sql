-- Renewals. A service's periods are counted from its anchor, the day its first period
-- started (docs/billing.md: "always from the anchor, never from a clamped date"); accounts
-- paid before this migration take it from their first invoice's plan line.
ALTER TABLE hosting ADD COLUMN period_anchor TEXT;
UPDATE hosting SET period_anchor = (
    SELECT MIN(l.period_start) FROM invoice_lines l
    WHERE l.service_id = hosting.id AND l.kind = 'plan'
) WHERE next_due_date IS NOT NULL;

-- The scheduler's renewal pass reads the services whose period ends within the lead time
-- and that carry no cancellation.
CREATE INDEX hosting_renewal_due ON hosting (next_due_date)
    WHERE next_due_date IS NOT NULL AND cancel_type IS NULL;

-- The overdue pass reads unpaid renewal invoices by due date.
CREATE INDEX invoices_overdue ON invoices (kind, status, due_date);

-- Domains renewing automatically are billed by their paid-through date.
CREATE INDEX domains_renewal_due ON domains (next_billing_date)
    WHERE next_billing_date IS NOT NULL AND auto_renew = 1;
