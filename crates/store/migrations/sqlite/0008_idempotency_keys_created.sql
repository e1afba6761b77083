-- Idempotency keys are forgotten after a day (the scheduler deletes the oldest first): an
-- index on their age, so that pass reads only what it deletes.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
