TRUNCATE r.orders, r.hosting, r.invoices, r.invoice_lines, r.credit_ledger, r.hosting_history, r.events, r.jobs;
SELECT setval('r.batch', 1, false);
CHECKPOINT;
