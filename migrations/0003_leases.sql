-- Guarantee 9: one process per account. A process works on an account only
-- while it holds the account's lease: a row naming the holder and when the
-- lease expires unless renewed. A process that dies loses its leases when
-- they expire, and another takes the account over. No foreign key to
-- accounts: a lease may be taken before the account's first run.
CREATE TABLE leases (
    account    TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,   -- "host pid N" plus a random tag: unique per process
    taken_at   INTEGER NOT NULL,   -- unix seconds
    expires_at INTEGER NOT NULL    -- unix seconds; renewed while a pass runs
) STRICT;
