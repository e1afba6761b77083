-- The node a job waits for: a job of a server bound to a node (servers.node), put back by
-- another node's worker, is claimed by that node's worker only (found by the multi-node
-- re-audit: the other node kept claiming it back, and the job waited minutes). NULL: any
-- node. Keep in step with ../sqlite/.
ALTER TABLE jobs ADD COLUMN node TEXT;
