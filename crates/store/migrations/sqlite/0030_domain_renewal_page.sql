-- The renewal pass reads the domains due in pages ordered by billing date, organization
-- and id, as it reads the accounts (0029): the index the pages are ranges of, instead of
-- every due domain read and sorted for each page. Keep in step with ../postgres/.
DROP INDEX domains_renewal_due;
CREATE INDEX domains_renewal_due ON domains (next_billing_date, organization_id, legacy_id)
    WHERE next_billing_date IS NOT NULL AND auto_renew = 1;
