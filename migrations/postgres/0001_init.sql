-- popferry ledger on PostgreSQL, version 1: the schema the SQLite ledger
-- has after its own migrations (0001-0004, and the columns of its 0005),
-- plus what replicas need (lease generations, pass records). Forward-only:
-- never edit a released migration, add a new one. The ledger holds no
-- message content and no secrets. Times are unix seconds (BIGINT), as in
-- the SQLite ledger, so the facade's types are the same for both.

CREATE TABLE accounts (
    name                 TEXT    NOT NULL PRIMARY KEY,
    last_run_at          BIGINT,            -- unix seconds, start of the last pass
    last_success_at      BIGINT,            -- unix seconds, end of the last clean pass
    last_error           TEXT,              -- the last pass's failure, NULL after a clean one
    consecutive_failures BIGINT  NOT NULL DEFAULT 0,
    next_run_at          BIGINT,            -- set by the daemon
    -- Recovering from a lost ledger (see the SQLite 0002_recovering.sql).
    recovering           BOOLEAN NOT NULL DEFAULT FALSE,
    -- An upload budget stopped appending until then (see the SQLite 0006_budget.sql).
    paused_until         BIGINT,
    paused_reason        TEXT
);

-- One row per (account, UIDL); states as in the SQLite ledger.
CREATE TABLE messages (
    account       TEXT    NOT NULL,
    uidl          TEXT    NOT NULL,
    uidl_derived  BOOLEAN NOT NULL DEFAULT FALSE,  -- the server had no UIDL, we derived an ID
    state         TEXT    NOT NULL CHECK (state IN ('appending', 'pending', 'appended', 'deleted', 'skipped', 'rejected')),
    size          BIGINT  NOT NULL,            -- bytes as appended (CRLF-normalised)
    listed_size   BIGINT,                      -- what LIST said when the row was written
    sha256        TEXT,                        -- hex, of the bytes as appended
    header_sha256 TEXT,                        -- hex, of the header section (guarantee 8)
    superseded    BOOLEAN NOT NULL DEFAULT FALSE,
    message_id    TEXT,
    message_date  BIGINT,                      -- unix seconds: arrival date (Received, else Date)
    mailbox       TEXT,
    uidvalidity   BIGINT,
    uid           BIGINT,
    attempts      BIGINT  NOT NULL DEFAULT 0,  -- failed APPEND attempts
    last_error    TEXT,
    first_seen_at BIGINT  NOT NULL,
    appended_at   BIGINT,
    deleted_at    BIGINT,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (account, uidl)
);

CREATE INDEX messages_by_state ON messages (account, state);

-- Guarantee 9: one process per account. A replica works on an account only
-- while it holds the lease: the holder, when it expires unless renewed (by
-- the database's clock, so that replicas' clocks need not agree), and a
-- generation bumped at every takeover. Every write of a pass checks, in its
-- own transaction, that the lease still has the generation the pass took
-- (fencing): a replica whose lease was taken over cannot commit an intent,
-- so it cannot send the APPEND that follows. A released lease keeps its
-- row (expired), so that generations only grow.
CREATE TABLE leases (
    account    TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,   -- "host pid N" plus a random tag: unique per process
    taken_at   BIGINT  NOT NULL,   -- unix seconds
    expires_at BIGINT  NOT NULL,   -- unix seconds; renewed while a pass runs; 0 when released
    generation BIGINT  NOT NULL DEFAULT 0
);

-- One row per pass: who ran it, under which lease generation, from when to
-- when (microseconds, the database's clock). For operators (which replica
-- did what) and for the tests that prove no two replicas passed an account
-- at once.
CREATE TABLE passes (
    id          BIGSERIAL PRIMARY KEY,
    account     TEXT   NOT NULL,
    holder      TEXT   NOT NULL,
    generation  BIGINT NOT NULL,
    started_us  BIGINT NOT NULL,
    ended_us    BIGINT,
    error       TEXT
);

CREATE INDEX passes_by_account ON passes (account, started_us);
