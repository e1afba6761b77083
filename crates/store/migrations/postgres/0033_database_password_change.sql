-- A change of an account's database password in progress: until when (microseconds) the
-- one change that claimed it holds it. Setting the password on the database server and
-- recording it in Lodge are two steps; two changes at once could otherwise leave the
-- server with one password and Lodge (and the customer) with the other. A claim that
-- outlives its change (a crashed node) lapses by itself. Keep in step with ../sqlite/.
ALTER TABLE hosting_databases ADD COLUMN changing_until BIGINT;
