-- A counter's stamp: the latest time a step of it was taken at. A group commit numbers its
-- invoices in one statement with one step of `invoice_number` and issues them at the later
-- of its own clock and the stamp, so a higher number is never issued earlier than a lower
-- one though batches read their clocks before they wait for the counter (BENCHMARKS.md,
-- 2026-12-04: the counter's lock, held from its step to the commit, was what batches
-- waited on most; taking the step and numbering in one statement is one round trip less
-- inside it). Keep in step with ../sqlite/.
ALTER TABLE counters ADD COLUMN stamp BIGINT NOT NULL DEFAULT 0;
