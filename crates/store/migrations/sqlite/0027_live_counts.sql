-- Every order checks its organization's quotas of hosting accounts and domains against the
-- accounts not ended (pending orders included) and the domains held or being registered or
-- transferred: two counts per order, each a scan of the organization's entries in an index
-- (hundreds of entries for a busy organization), twice per order (validated, then written).
-- The counts are now kept with the rows by these triggers, in the same transaction as the
-- change that moves them, and an order reads two integers (BENCHMARKS.md, 2026-12-03).
--
-- The same table and triggers as PostgreSQL's (0027 there). The liveness tests are written
-- with `=` and `OR`: an `IN` list of three or more values costs SQLite a temporary b-tree
-- per row (sqlite/rebuild.rs). The rebuild of the order tables keeps these triggers.
CREATE TABLE organization_counts (
    organization_id TEXT PRIMARY KEY REFERENCES organizations (id),
    live_accounts   INTEGER NOT NULL DEFAULT 0 CHECK (live_accounts >= 0),
    live_domains    INTEGER NOT NULL DEFAULT 0 CHECK (live_domains >= 0)
) WITHOUT ROWID;

INSERT INTO organization_counts (organization_id, live_accounts, live_domains)
SELECT o.id,
       (SELECT COUNT(*) FROM hosting h WHERE h.organization_id = o.id
          AND h.status IN ('pending', 'provisioning', 'active', 'suspended', 'failed')),
       (SELECT COUNT(*) FROM domains d WHERE d.organization_id = o.id
          AND d.status IN ('pending_registration', 'pending_transfer', 'active'))
FROM organizations o;

CREATE TRIGGER hosting_count_insert AFTER INSERT ON hosting
WHEN NEW.status = 'pending' OR NEW.status = 'provisioning' OR NEW.status = 'active'
    OR NEW.status = 'suspended' OR NEW.status = 'failed'
BEGIN
    INSERT INTO organization_counts (organization_id, live_accounts) VALUES (NEW.organization_id, 1)
    ON CONFLICT (organization_id) DO UPDATE SET live_accounts = live_accounts + 1;
END;

CREATE TRIGGER hosting_count_update AFTER UPDATE OF status, organization_id ON hosting
WHEN (OLD.status = 'pending' OR OLD.status = 'provisioning' OR OLD.status = 'active'
        OR OLD.status = 'suspended' OR OLD.status = 'failed')
    IS NOT (NEW.status = 'pending' OR NEW.status = 'provisioning' OR NEW.status = 'active'
        OR NEW.status = 'suspended' OR NEW.status = 'failed')
    OR OLD.organization_id IS NOT NEW.organization_id
BEGIN
    UPDATE organization_counts SET live_accounts = live_accounts - 1
    WHERE organization_id = OLD.organization_id
      AND (OLD.status = 'pending' OR OLD.status = 'provisioning' OR OLD.status = 'active'
           OR OLD.status = 'suspended' OR OLD.status = 'failed');
    INSERT INTO organization_counts (organization_id, live_accounts)
    SELECT NEW.organization_id, 1
    WHERE NEW.status = 'pending' OR NEW.status = 'provisioning' OR NEW.status = 'active'
        OR NEW.status = 'suspended' OR NEW.status = 'failed'
    ON CONFLICT (organization_id) DO UPDATE SET live_accounts = live_accounts + 1;
END;

CREATE TRIGGER hosting_count_delete AFTER DELETE ON hosting
WHEN OLD.status = 'pending' OR OLD.status = 'provisioning' OR OLD.status = 'active'
    OR OLD.status = 'suspended' OR OLD.status = 'failed'
BEGIN
    UPDATE organization_counts SET live_accounts = live_accounts - 1
    WHERE organization_id = OLD.organization_id;
END;

CREATE TRIGGER domains_count_insert AFTER INSERT ON domains
WHEN NEW.status = 'pending_registration' OR NEW.status = 'pending_transfer' OR NEW.status = 'active'
BEGIN
    INSERT INTO organization_counts (organization_id, live_domains) VALUES (NEW.organization_id, 1)
    ON CONFLICT (organization_id) DO UPDATE SET live_domains = live_domains + 1;
END;

CREATE TRIGGER domains_count_update AFTER UPDATE OF status, organization_id ON domains
WHEN (OLD.status = 'pending_registration' OR OLD.status = 'pending_transfer' OR OLD.status = 'active')
    IS NOT (NEW.status = 'pending_registration' OR NEW.status = 'pending_transfer' OR NEW.status = 'active')
    OR OLD.organization_id IS NOT NEW.organization_id
BEGIN
    UPDATE organization_counts SET live_domains = live_domains - 1
    WHERE organization_id = OLD.organization_id
      AND (OLD.status = 'pending_registration' OR OLD.status = 'pending_transfer' OR OLD.status = 'active');
    INSERT INTO organization_counts (organization_id, live_domains)
    SELECT NEW.organization_id, 1
    WHERE NEW.status = 'pending_registration' OR NEW.status = 'pending_transfer' OR NEW.status = 'active'
    ON CONFLICT (organization_id) DO UPDATE SET live_domains = live_domains + 1;
END;

CREATE TRIGGER domains_count_delete AFTER DELETE ON domains
WHEN OLD.status = 'pending_registration' OR OLD.status = 'pending_transfer' OR OLD.status = 'active'
BEGIN
    UPDATE organization_counts SET live_domains = live_domains - 1
    WHERE organization_id = OLD.organization_id;
END;

-- 0026's index of accounts served only the counts (`hosting_org` serves the rest); the
-- domains' stays, the one index of domains by organization.
DROP INDEX hosting_org_status;
