-- An account whose ledger was found empty while its POP3 mailbox was not
-- (a ledger lost with its volume) is "recovering": every message without a
-- record is looked up in the target before it is appended, on every pass,
-- until one pass has gone through the whole mailbox. Kept here so that a
-- recovery interrupted half-way (a kill, a restart) goes on recovering.
ALTER TABLE accounts ADD COLUMN recovering INTEGER NOT NULL DEFAULT 0;
