-- Invoice numbers are gapless: a step of the `invoice_number` counter is taken by the
-- transaction that issues the invoices, and its row stays locked until that transaction
-- ends. A batch of orders took the step in a statement of its own after its last order,
-- then sent its COMMIT: the counter stayed locked across a round trip to Lodge and however
-- long a busy Lodge took to send it, while every other batch waited for it (pg_stat_activity
-- sampled under a load of orders: the holder idle in its transaction after the step as
-- often as a batch running its rows statement, BENCHMARKS.md 2026-12-04 night).
--
-- This trigger numbers the invoices a transaction left unnumbered as it commits: fired at
-- the commit (deferred), its first firing takes one step for all of them, in the order of
-- their ids (the order they were issued in), and the counter is locked from there to the
-- end of the commit, with no round trip between. Issued at the later of the latest
-- `issued_at` among them (the clock of the transaction that wrote them) and the counter's
-- stamp, as the statement numbering them did (0028). Its later firings find nothing left.
-- An invoice given its number before the commit (`billing::number_invoices`) is not
-- touched. SQLite numbers as before: one writer, nothing waits across a round trip.

-- The invoices waiting for their numbers: only those of transactions still open, and
-- their entries' rows end with the commit.
CREATE INDEX invoices_unnumbered ON invoices (id) WHERE number IS NULL;

CREATE FUNCTION lodge_number_invoices() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
DECLARE
    how_many BIGINT;
    latest   BIGINT;
    before   BIGINT;
    issued   BIGINT;
    numbered BIGINT;
BEGIN
    -- Numbered already, by this transaction's first firing (or before the commit): the
    -- later firings stop here, at one lookup of their own row, instead of each reading
    -- the rows its first one numbered (a batch of 128 renewals read 128 x 128).
    IF EXISTS (SELECT 1 FROM invoices WHERE id = NEW.id AND number IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    -- Only this transaction's: another's are not visible until it commits, numbered.
    SELECT COUNT(*), MAX(issued_at) INTO how_many, latest FROM invoices WHERE number IS NULL;
    IF how_many = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE counters SET value = value + how_many, stamp = GREATEST(stamp, latest)
        WHERE name = 'invoice_number'
        RETURNING value - how_many, stamp INTO before, issued;
    IF before IS NULL THEN
        RAISE EXCEPTION 'no invoice_number counter';
    END IF;
    UPDATE invoices AS i
        SET number = 'INV-' || lpad(t.n::text, GREATEST(6, length(t.n::text)), '0'),
            issued_at = issued
        FROM (SELECT id, before + row_number() OVER (ORDER BY id) AS n
              FROM invoices WHERE number IS NULL) AS t
        WHERE i.id = t.id;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered <> how_many THEN
        RAISE EXCEPTION 'numbered % of % invoices', numbered, how_many;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER invoices_numbered AFTER INSERT ON invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.number IS NULL)
    EXECUTE FUNCTION lodge_number_invoices();
