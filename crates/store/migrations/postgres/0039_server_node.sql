-- The Lodge node whose worker acts on a server (NULL: any node). The nginx driver works on
-- its own machine's files, so with several nodes each nginx server is one node's: its
-- jobs run only there (found by the multi-node audit: suspensions and terminations run
-- by another node left the sites live). Keep in step with ../sqlite/.
ALTER TABLE servers ADD COLUMN node TEXT;
