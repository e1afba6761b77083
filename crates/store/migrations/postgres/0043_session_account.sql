-- The organization an `/apiv2` session acts for, chosen when it was opened (the login's
-- home organization then). Before, it was chosen again on every request, so a session
-- switched to another account the moment the user's memberships changed (added to an
-- older organization as its owner), and its orders and payments went to that account
-- without a new login (found by the upgrade audit). NULL: a session opened before this.
-- Keep in step with ../sqlite/.
ALTER TABLE sessions ADD COLUMN organization_id TEXT;

-- A live session of a user in one organization is pinned to it; one of a user in several
-- is ended (expired when opened), as builds before chose among them by other rules: that
-- user logs in again and is told which account the session acts for.
UPDATE sessions SET organization_id = (
    SELECT m.organization_id FROM memberships m WHERE m.user_id = sessions.user_id
)
WHERE revoked_at IS NULL
  AND (SELECT COUNT(*) FROM memberships m WHERE m.user_id = sessions.user_id) = 1;
UPDATE sessions SET expires_at = created_at
WHERE revoked_at IS NULL AND organization_id IS NULL;
