-- domains_org is never used: domains are listed per project (domains_project), and read by
-- id or live name. Every order with a domain wrote a leaf page of it.
DROP INDEX domains_org;
