-- Stage one Lodge order run's rows by order ordinal k (1..N), and make empty copies of the
-- eight order tables (same columns, indexes, unique and partial; no foreign keys).
DROP SCHEMA IF EXISTS s CASCADE; DROP SCHEMA IF EXISTS r CASCADE;
CREATE SCHEMA s; CREATE SCHEMA r;
CREATE TABLE s.ok AS SELECT id AS order_id, row_number() OVER (ORDER BY id) AS k FROM public.orders;
CREATE TABLE s.orders AS SELECT ok.k, o.* FROM public.orders o JOIN s.ok ok ON ok.order_id = o.id;
CREATE TABLE s.hosting AS SELECT ok.k, h.* FROM public.hosting h JOIN s.ok ok ON ok.order_id = h.order_id;
CREATE TABLE s.invoices AS SELECT ok.k, i.* FROM public.invoices i JOIN s.ok ok ON ok.order_id = i.order_id;
CREATE TABLE s.invoice_lines AS SELECT i.k, l.* FROM public.invoice_lines l JOIN s.invoices i ON i.id = l.invoice_id;
CREATE TABLE s.credit_ledger AS SELECT i.k, c.* FROM public.credit_ledger c JOIN s.invoices i ON i.id = c.invoice_id;
CREATE TABLE s.hosting_history AS SELECT h.k, x.* FROM public.hosting_history x JOIN s.hosting h ON h.id = x.hosting_id;
CREATE TABLE s.events AS
  SELECT o.k, e.* FROM public.events e JOIN s.orders o ON e.subject = 'order:' || o.id
  UNION ALL
  SELECT i.k, e.* FROM public.events e JOIN s.invoices i ON e.subject = 'invoice:' || i.id;
CREATE TABLE s.jobs AS SELECT h.k, j.* FROM public.jobs j JOIN s.hosting h ON j.payload = '{"hosting_id":"' || h.id || '"}';
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['orders','hosting','invoices','invoice_lines','credit_ledger','hosting_history','events','jobs'] LOOP
    EXECUTE format('CREATE INDEX ON s.%I (k)', t);
    EXECUTE format('CREATE TABLE r.%I (LIKE public.%I INCLUDING ALL)', t, t);
  END LOOP; END $$;
CREATE TABLE r.organizations AS SELECT * FROM public.organizations;
ALTER TABLE r.organizations ADD PRIMARY KEY (id);
CREATE TABLE r.counters AS SELECT * FROM public.counters;
CREATE SEQUENCE r.batch;
ANALYZE;
SELECT 'orders', count(*) FROM s.orders UNION ALL SELECT 'hosting', count(*) FROM s.hosting
UNION ALL SELECT 'invoices', count(*) FROM s.invoices UNION ALL SELECT 'lines', count(*) FROM s.invoice_lines
UNION ALL SELECT 'ledger', count(*) FROM s.credit_ledger UNION ALL SELECT 'history', count(*) FROM s.hosting_history
UNION ALL SELECT 'events', count(*) FROM s.events UNION ALL SELECT 'jobs', count(*) FROM s.jobs;
