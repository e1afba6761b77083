-- Partial indexes a lookup by id cannot be planned through.
--
-- A statement that finds its row by id and checks its status (`UPDATE invoices … WHERE
-- id = $1 AND status = 'unpaid'`, `UPDATE hosting … WHERE id = $1 AND status =
-- 'provisioning'`, a plan change's `WHERE id = $1 AND status = 'awaiting_payment'`)
-- implies the condition of the partial index on that status, so the planner may read that
-- index instead of the key. It does when the statistics say the status is rare and it no
-- longer is: after a burst of unpaid invoices (a renewal day, or 64,000 unpaid orders
-- placed after 12,000 paid ones in `lodge bench load`) and before autovacuum analyzes the
-- table again, every payment scanned all unpaid invoices (59 ms each at 57,859, against
-- 0.2 ms by the key; BENCHMARKS.md 2026-12-04 late), and a batch of payments took 1.5 s.
-- Each index's condition now also requires a column the statements that should read it
-- constrain with `=` (which proves it not null) and that lookups by id do not mention, so
-- they can no longer choose it. The columns are NOT NULL: the indexes hold the same rows
-- as before, under the same names (constraint violations are told apart by them).
--
-- SQLite's planner takes an equality on a rowid or unique key first; its indexes stay.

DROP INDEX invoices_unpaid;
CREATE INDEX invoices_unpaid ON invoices (kind, issued_at)
    WHERE status = 'unpaid' AND kind IS NOT NULL;

CREATE UNIQUE INDEX hosting_live_name_0032 ON hosting (domain_name)
    WHERE status IN ('pending', 'provisioning', 'active', 'suspended', 'failed')
      AND domain_name IS NOT NULL;
DROP INDEX hosting_live_name;
ALTER INDEX hosting_live_name_0032 RENAME TO hosting_live_name;

CREATE UNIQUE INDEX domains_live_name_0032 ON domains (name)
    WHERE status IN ('pending_registration', 'pending_transfer', 'active')
      AND name IS NOT NULL;
DROP INDEX domains_live_name;
ALTER INDEX domains_live_name_0032 RENAME TO domains_live_name;

CREATE UNIQUE INDEX plan_changes_awaiting_0032 ON plan_changes (hosting_id)
    WHERE status = 'awaiting_payment' AND hosting_id IS NOT NULL;
DROP INDEX plan_changes_awaiting;
ALTER INDEX plan_changes_awaiting_0032 RENAME TO plan_changes_awaiting;
