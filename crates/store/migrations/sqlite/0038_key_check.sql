-- A value sealed with the installation's secret key by the first node that opened the
-- database: every node opening it checks that its own key opens it, and refuses to start
-- otherwise (a node with another key made payment links the others answer 404 and failed
-- every job touching a sealed secret, with nothing said at start). Keep in step with
-- ../postgres/.
CREATE TABLE key_check (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
