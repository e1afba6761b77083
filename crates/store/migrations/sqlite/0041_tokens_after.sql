-- Login tokens (JWT access tokens) issued before this instant (microseconds) are refused:
-- set when a user's sessions end (a new password, a deactivation), so a token taken with
-- the old password, or held when the user was shut out, does not outlive it (found by the
-- secrets audit: they stayed good for their 15 minutes, and came back on reactivation).
-- Keep in step with ../postgres/.
ALTER TABLE users ADD COLUMN tokens_after BIGINT NOT NULL DEFAULT 0;
