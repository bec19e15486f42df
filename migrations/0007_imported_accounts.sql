-- Accounts kept in the ledger (`popferry accounts import FILE.csv`), beside
-- the configuration file's: one row per account, what its CSV line gave.
-- The other settings come from the file's [account_template]. Passwords
-- are references only (`env:NAME`, `file:/path`, `command:CMD`), never a
-- secret: `accounts import` refuses anything else.
CREATE TABLE imported_accounts (
    name            TEXT    NOT NULL PRIMARY KEY,
    source_host     TEXT    NOT NULL,
    source_username TEXT    NOT NULL,
    source_password TEXT    NOT NULL,   -- a reference, never the password
    target_host     TEXT    NOT NULL,
    target_username TEXT    NOT NULL,
    target_password TEXT    NOT NULL,   -- a reference, never the password
    mailbox         TEXT,               -- NULL: the template's, else INBOX
    delete_policy   TEXT,               -- NULL: the template's, else never
    imported_at     INTEGER NOT NULL    -- unix seconds, of the last import of this row
) STRICT;
