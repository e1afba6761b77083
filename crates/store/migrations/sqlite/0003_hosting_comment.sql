-- The free-form note a customer gives with an /apiv2 order (`comment`).
ALTER TABLE hosting ADD COLUMN comment TEXT NOT NULL DEFAULT '';
