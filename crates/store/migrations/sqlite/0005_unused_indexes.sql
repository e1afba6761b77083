-- Indexes no query uses, dropped: every order wrote a leaf page of each (one per
-- organization or project touched), and a group commit wrote them all.
-- Orders are read by id (and with their invoices and hosting accounts), never listed by
-- organization; hosting accounts are listed by organization (hosting_org), a project's
-- being a filter on that list.
DROP INDEX orders_org;
DROP INDEX hosting_project;
