-- A batch of orders writes its accounts, and a registration's domains, in one multi-row
-- statement (crate::deferred). 0027's row triggers ran a PL/pgSQL function and an UPDATE
-- of `organization_counts` for each of those rows: 9% of that statement's time under a
-- load of orders (auto_explain with triggers, BENCHMARKS.md 2026-12-04 night). Inserts are
-- now counted once a statement, from its transition table: one upsert for every
-- organization the statement gave live rows to, in the order of their ids (the order a
-- batch locks organizations in). Updates and deletes keep 0027's row triggers: a trigger
-- with a column list cannot have a transition table, and those change a row at a time.
--
-- SQLite has no statement triggers; its 0027 triggers stay as they are.

DROP TRIGGER hosting_count_insert ON hosting;
DROP TRIGGER domains_count_insert ON domains;

-- The counts the live rows of `inserted` add, per organization. Positive, so the upsert's
-- candidate row passes the checks (0027's `lodge_count_live` updates first for that).
CREATE FUNCTION lodge_count_inserted_hosting() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO organization_counts AS c (organization_id, live_accounts, live_domains)
    SELECT organization_id, COUNT(*), 0 FROM inserted
        WHERE lodge_hosting_is_live(status)
        GROUP BY organization_id ORDER BY organization_id
    ON CONFLICT (organization_id) DO UPDATE
        SET live_accounts = c.live_accounts + EXCLUDED.live_accounts;
    RETURN NULL;
END
$$;

CREATE FUNCTION lodge_count_inserted_domains() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO organization_counts AS c (organization_id, live_accounts, live_domains)
    SELECT organization_id, 0, COUNT(*) FROM inserted
        WHERE lodge_domain_is_live(status)
        GROUP BY organization_id ORDER BY organization_id
    ON CONFLICT (organization_id) DO UPDATE
        SET live_domains = c.live_domains + EXCLUDED.live_domains;
    RETURN NULL;
END
$$;

CREATE TRIGGER hosting_count_insert AFTER INSERT ON hosting
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION lodge_count_inserted_hosting();
CREATE TRIGGER domains_count_insert AFTER INSERT ON domains
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION lodge_count_inserted_domains();
