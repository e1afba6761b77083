-- An order counts its organization's live hosting accounts and domains twice (when it is
-- validated, and again under the organization's lock when it is written) against its
-- quotas. Through `hosting_org` each count visited every account the organization ever had
-- in the table's heap to read its status. These partial indexes hold the live rows only,
-- with the same predicates as the counts, so a count is an index-only scan over them: 3
-- buffers and 0.06 ms for an organization with 294 live accounts once autovacuum has marked
-- their pages all-visible. Pages written in the last moments still need their heap read, so
-- under a sustained load of orders from few organizations (lodge bench) a count still costs
-- ~0.5 ms; a counter kept with the rows would remove that (BENCHMARKS.md).
CREATE INDEX hosting_org_live ON hosting (organization_id)
    WHERE status IN ('pending', 'provisioning', 'active', 'suspended', 'failed');
CREATE INDEX domains_org_live ON domains (organization_id)
    WHERE status IN ('pending_registration', 'pending_transfer', 'active');
