-- Every order checks its organization's quotas of hosting accounts and domains, under the
-- organization's lock, against the accounts not ended (pending orders included) and the
-- domains held or being registered or transferred. Counting those rows cost ~0.5 ms each
-- under a sustained load of orders (pages written moments ago are not yet all-visible, so
-- an index-only scan still reads the heap), half of PostgreSQL's time per order
-- (BENCHMARKS.md, 2026-12-03). The counts are now kept with the rows by these triggers, in
-- the same transaction as the change that moves them, and an order reads two integers.
--
-- A table of their own rather than columns of `organizations`: a transition that ends an
-- account (the worker's termination takes only the account's lock) then never waits for the
-- organization's row, which a payment of the same organization holds while it waits for
-- that account (the lock order, docs/architecture.md). The count row is the last lock any
-- transaction takes for its organization's accounts and domains.
-- No account or domain may change while the counts are taken and the triggers made (a node
-- still on the build before keeps writing until the migration commits).
LOCK TABLE hosting, domains IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE organization_counts (
    organization_id TEXT PRIMARY KEY REFERENCES organizations (id),
    live_accounts   BIGINT NOT NULL DEFAULT 0 CHECK (live_accounts >= 0),
    live_domains    BIGINT NOT NULL DEFAULT 0 CHECK (live_domains >= 0)
);

INSERT INTO organization_counts (organization_id, live_accounts, live_domains)
SELECT o.id,
       (SELECT COUNT(*) FROM hosting h WHERE h.organization_id = o.id
          AND h.status IN ('pending', 'provisioning', 'active', 'suspended', 'failed')),
       (SELECT COUNT(*) FROM domains d WHERE d.organization_id = o.id
          AND d.status IN ('pending_registration', 'pending_transfer', 'active'))
FROM organizations o;

-- Adds to an organization's counts, its row made on first use. An update first: the row is
-- there but for an organization's first account or domain (and an upsert's candidate row
-- must pass the checks before its conflict is seen, which a negative one would not).
CREATE FUNCTION lodge_count_live(org TEXT, accounts BIGINT, domains BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE organization_counts
        SET live_accounts = live_accounts + accounts, live_domains = live_domains + domains
        WHERE organization_id = org;
    IF NOT FOUND THEN
        INSERT INTO organization_counts AS c (organization_id, live_accounts, live_domains)
        VALUES (org, accounts, domains)
        ON CONFLICT (organization_id) DO UPDATE
            SET live_accounts = c.live_accounts + EXCLUDED.live_accounts,
                live_domains = c.live_domains + EXCLUDED.live_domains;
    END IF;
END
$$;

CREATE FUNCTION lodge_hosting_is_live(status TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT status IN ('pending', 'provisioning', 'active', 'suspended', 'failed')
$$;

CREATE FUNCTION lodge_domain_is_live(status TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT status IN ('pending_registration', 'pending_transfer', 'active')
$$;

CREATE FUNCTION lodge_count_live_hosting() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF lodge_hosting_is_live(OLD.status) THEN
            PERFORM lodge_count_live(OLD.organization_id, -1, 0);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF lodge_hosting_is_live(NEW.status) THEN
            PERFORM lodge_count_live(NEW.organization_id, 1, 0);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION lodge_count_live_domains() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF lodge_domain_is_live(OLD.status) THEN
            PERFORM lodge_count_live(OLD.organization_id, 0, -1);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF lodge_domain_is_live(NEW.status) THEN
            PERFORM lodge_count_live(NEW.organization_id, 0, 1);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- The `WHEN` clauses keep the function from running for the changes that move no count
-- (a payment's pending → provisioning, a suspension).
CREATE TRIGGER hosting_count_insert AFTER INSERT ON hosting FOR EACH ROW
    WHEN (lodge_hosting_is_live(NEW.status))
    EXECUTE FUNCTION lodge_count_live_hosting();
CREATE TRIGGER hosting_count_update AFTER UPDATE OF status, organization_id ON hosting FOR EACH ROW
    WHEN (lodge_hosting_is_live(OLD.status) IS DISTINCT FROM lodge_hosting_is_live(NEW.status)
          OR OLD.organization_id IS DISTINCT FROM NEW.organization_id)
    EXECUTE FUNCTION lodge_count_live_hosting();
CREATE TRIGGER hosting_count_delete AFTER DELETE ON hosting FOR EACH ROW
    WHEN (lodge_hosting_is_live(OLD.status))
    EXECUTE FUNCTION lodge_count_live_hosting();

CREATE TRIGGER domains_count_insert AFTER INSERT ON domains FOR EACH ROW
    WHEN (lodge_domain_is_live(NEW.status))
    EXECUTE FUNCTION lodge_count_live_domains();
CREATE TRIGGER domains_count_update AFTER UPDATE OF status, organization_id ON domains FOR EACH ROW
    WHEN (lodge_domain_is_live(OLD.status) IS DISTINCT FROM lodge_domain_is_live(NEW.status)
          OR OLD.organization_id IS DISTINCT FROM NEW.organization_id)
    EXECUTE FUNCTION lodge_count_live_domains();
CREATE TRIGGER domains_count_delete AFTER DELETE ON domains FOR EACH ROW
    WHEN (lodge_domain_is_live(OLD.status))
    EXECUTE FUNCTION lodge_count_live_domains();

-- 0026's partial indexes served only the counts.
DROP INDEX hosting_org_live;
DROP INDEX domains_org_live;
