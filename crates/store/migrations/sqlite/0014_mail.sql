-- Mail notices (SQLite). Keep in step with ../postgres/.
--
-- mail_state: whether this installation sends mail (one row, written by each node at start
-- from its configuration: an SMTP host configured or not). While it is off, events are
-- still recorded but no mail job is made from them.
--
-- mail_log: one row per message (its Message-ID, derived from the event it tells), written
-- when a send starts ('sending') and completed with what came of it: 'sent' (the server
-- accepted it), 'failed' (refused or unreachable: not sent), 'unknown' (the connection broke
-- after the message may have been sent, e.g. the answer to DATA was lost), 'skipped' (no
-- one to send it to). A send after 'sending' or 'unknown' may deliver the message a second
-- time, with the same Message-ID: `possible_duplicate` records it.

CREATE TABLE mail_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    modified_at INTEGER NOT NULL
);

CREATE TABLE mail_log (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id         TEXT NOT NULL UNIQUE,
    event_id           TEXT,
    job_id             INTEGER,
    notice             TEXT NOT NULL,
    to_address         TEXT NOT NULL,
    subject            TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed', 'unknown', 'skipped')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    possible_duplicate INTEGER NOT NULL DEFAULT 0 CHECK (possible_duplicate IN (0, 1)),
    last_error         TEXT,
    smtp_response      TEXT,
    sent_at            INTEGER,
    created_at         INTEGER NOT NULL,
    modified_at        INTEGER NOT NULL
);
CREATE INDEX mail_log_event ON mail_log (event_id);
