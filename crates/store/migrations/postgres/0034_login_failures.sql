-- Failed logins, counted in the database so that every node sharing it counts the same
-- (before, each node counted in its own memory, and N nodes let N times the tries
-- through). `key`: `e:` and the SHA-256 of the normalized e-mail (not the e-mail), or
-- `a:` and the client address. Times in microseconds. Keep in step with ../sqlite/.
CREATE TABLE login_failures (
    key           TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    last_failure  BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX login_failures_quiet ON login_failures (last_failure);
