-- popferry ledger, version 1. Forward-only: never edit a released migration,
-- add a new one. Tables are STRICT; the ledger holds no message content and
-- no secrets.

CREATE TABLE accounts (
    name                 TEXT    NOT NULL PRIMARY KEY,
    last_run_at          INTEGER,           -- unix seconds, start of the last pass
    last_success_at      INTEGER,           -- unix seconds, end of the last clean pass
    last_error           TEXT,              -- the last pass's failure, NULL after a clean one
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_run_at          INTEGER            -- set by the daemon
) STRICT;

-- One row per (account, UIDL). state:
--   appending  intent written, APPEND sent or about to be, outcome unknown
--   pending    an APPEND was refused or failed; retried on later runs
--   appended   the server said OK (mailbox, uidvalidity, uid when known)
--   deleted    appended, then DELE committed by QUIT
--   skipped    over max_message_size; left on the server
--   rejected   refused max_attempts times; left on the server
CREATE TABLE messages (
    account       TEXT    NOT NULL,
    uidl          TEXT    NOT NULL,
    uidl_derived  INTEGER NOT NULL DEFAULT 0,  -- 1: the server had no UIDL, we derived an ID
    state         TEXT    NOT NULL CHECK (state IN ('appending', 'pending', 'appended', 'deleted', 'skipped', 'rejected')),
    size          INTEGER NOT NULL,            -- bytes as appended (CRLF-normalised)
    sha256        TEXT,                        -- hex, of the bytes as appended
    message_id    TEXT,
    message_date  INTEGER,                     -- unix seconds: arrival date (Received, else Date)
    mailbox       TEXT,
    uidvalidity   INTEGER,
    uid           INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,  -- failed APPEND attempts
    last_error    TEXT,
    first_seen_at INTEGER NOT NULL,
    appended_at   INTEGER,
    deleted_at    INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (account, uidl)
) STRICT;

CREATE INDEX messages_by_state ON messages (account, state);
