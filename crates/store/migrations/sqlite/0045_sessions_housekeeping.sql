-- `/apiv2` login sessions were never forgotten, and a user's were found by reading them
-- all (a password change or a removed user ends them): one row a login for ever (found by
-- the soak audit). Sessions are forgotten a day past their expiry, through the first
-- index; a user's are found through the second. Keep in step with the other engine's.
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id);
