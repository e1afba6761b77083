-- Two indexes every order wrote an entry to, for the few rows their one query selects:
-- the expiry of unpaid first invoices and the end-of-period cancellations due. Partial,
-- they hold only those rows; an order paid from credit (issued paid, not cancelling)
-- writes neither.
DROP INDEX invoices_unpaid;
CREATE INDEX invoices_unpaid ON invoices (kind, issued_at) WHERE status = 'unpaid';
DROP INDEX hosting_cancel_due;
CREATE INDEX hosting_cancel_due ON hosting (cancel_effective_date) WHERE cancel_type = 'end_of_period';
