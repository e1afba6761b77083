-- An order counts its organization's live hosting accounts and domains twice (when it is
-- validated, and again when it is written) against its quotas (since 5837aa7). Without
-- these, counting the domains read the whole domains table (domains_org was dropped by
-- 0006, before the count existed) and counting the accounts looked every account the
-- organization ever had up in the table to read its status: order placement fell from
-- ~3,900 to ~2,000 orders/s, and with a registration from ~3,400 to 400–800/s in
-- `lodge bench`. Each count is now a scan of the covering index's entries for the
-- organization, without reading the table.
CREATE INDEX hosting_org_status ON hosting (organization_id, status);
CREATE INDEX domains_org_status ON domains (organization_id, status);
