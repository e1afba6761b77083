-- A plan sold once per organization (a trial): a second order of it by the same
-- organization is refused, whatever became of the first (its cancelled unpaid order aside).
ALTER TABLE plans ADD COLUMN once_per_organization INTEGER NOT NULL DEFAULT 0;
