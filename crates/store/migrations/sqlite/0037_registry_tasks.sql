-- What staff must do at a registry by hand: the `manual` registrar (the TLDs no configured
-- registrar serves) renews, changes nameservers and locks nothing itself, so each paid
-- renewal and each customer change there becomes a task on staff's list until they mark
-- it done (as WHMCS's to-do items for a manual registrar). `source` makes a retried job's
-- task one task. Keep in step with ../postgres/.
CREATE TABLE registry_tasks (
    id          INTEGER PRIMARY KEY,
    domain_id   TEXT NOT NULL REFERENCES domains (id),
    kind        TEXT NOT NULL CHECK (kind IN ('renew', 'nameservers', 'lock')),
    detail      TEXT NOT NULL,
    source      TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    done_at     INTEGER,
    done_by     TEXT,
    outcome     TEXT
);
CREATE INDEX registry_tasks_open ON registry_tasks (id) WHERE done_at IS NULL;
CREATE INDEX registry_tasks_domain ON registry_tasks (domain_id, id);
