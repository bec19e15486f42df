-- Guarantee 8, when the size agrees too: a server that gives a gone
-- message's UIDL to a new one of the very same size. Before popferry
-- deletes a message it did not read in that session, it compares the
-- header section the server has now (TOP n 0) with the one recorded here
-- at the copy (or, where this is NULL or the server has no TOP, the whole
-- message with sha256). On a mismatch the row is marked superseded: it
-- keeps the copy's history, and the message now listed under the UIDL is
-- copied under a key of its own.
ALTER TABLE messages ADD COLUMN header_sha256 TEXT;
ALTER TABLE messages ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
