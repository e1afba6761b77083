-- Refresh tokens (sqlite). Keep in step with the other engine's file.
--
-- A refresh token works once: using it marks it `used` and issues the next of its family
-- (the chain that began at one login). A token of the family used a second time means it
-- was stolen or replayed: the whole family is `revoked`, and its holder must log in again.
-- Only the token's id (the JWT's `jti`) is stored, never the token.

CREATE TABLE refresh_tokens (
    jti        TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    status     TEXT NOT NULL CHECK (status IN ('live', 'used', 'revoked')),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
