-- Guarantee 8: a UIDL is not trusted alone. The size the POP3 server's LIST
-- gave when the row was written, compared with what LIST says now: a
-- server that reuses a UIDL for a new message (a rebuilt UID list) lists it
-- with another size, and the new message is copied under its own key
-- ("UIDL SIZE"). NULL on rows written before this migration: those are
-- matched by UIDL alone, as they always were.
ALTER TABLE messages ADD COLUMN listed_size INTEGER;
