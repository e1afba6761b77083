-- The renewal pass reads the accounts due in pages ordered by due date, organization and
-- id (an organization's accounts due on one date are billed on one invoice): the index
-- the pages are ranges of. Ordered by organization first, with the index on the date
-- alone, every page read and sorted all the accounts due (BENCHMARKS.md, 2026-12-04
-- evening). Keep in step with ../sqlite/.
DROP INDEX hosting_renewal_due;
CREATE INDEX hosting_renewal_due ON hosting (next_due_date, organization_id, legacy_id)
    WHERE next_due_date IS NOT NULL AND cancel_type IS NULL;
