-- The registry's side of a domain (issue 22, the EPP registrar): what Lodge is waiting for
-- from the registry (`registering`, `transferring`; NULL when nothing), the statuses the
-- registry last reported (a JSON list of EPP statuses), the day it was last read back
-- (the daily sync) and the registrar's last error. New columns rather than new `status`
-- values: the domain's lifecycle is unchanged, and no CHECK constraint moves.
ALTER TABLE domains ADD COLUMN registry_stage TEXT;
ALTER TABLE domains ADD COLUMN registry_statuses TEXT NOT NULL DEFAULT '[]';
ALTER TABLE domains ADD COLUMN registry_synced_on TEXT;
ALTER TABLE domains ADD COLUMN registry_error TEXT;

-- The daily sync reads active domains least recently synced first.
CREATE INDEX domains_registry_sync ON domains (registry_synced_on, legacy_id) WHERE status = 'active';
