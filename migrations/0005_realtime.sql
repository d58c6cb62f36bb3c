-- Realtime: which log entries each device may receive, and the
-- notifications that tell every replica about new entries.

-- A device's leaf covers the log entries after joined_seq (the commit that
-- added it; 0 for the creator) up to and including left_seq (the commit
-- that removed it), so fan-out can check membership at any seq.
ALTER TABLE convo_devices ADD COLUMN joined_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE convo_devices ADD COLUMN left_seq bigint;
ALTER TABLE convo_devices ADD COLUMN left_reason text
    CHECK (left_reason IN ('removed', 'banned', 'left'));
CREATE INDEX convo_devices_by_convo ON convo_devices (convo_id, joined_seq);

-- Every log entry is announced in the transaction that appends it, so a
-- listener never sees an id before its row is visible, and a rolled-back
-- append is never announced. Ids only: "e <convo hex> <seq>".
CREATE FUNCTION announce_log_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('catbird_events', 'e ' || encode(NEW.convo_id, 'hex') || ' ' || NEW.seq);
    RETURN NULL;
END
$$;
CREATE TRIGGER convo_messages_announce AFTER INSERT ON convo_messages
    FOR EACH ROW EXECUTE FUNCTION announce_log_entry();

-- One-use tickets for subscribeConvoEvents (clients that cannot send an
-- Authorization header on a WebSocket). Only a hash is stored.
CREATE TABLE stream_tickets (
    ticket_hash bytea PRIMARY KEY,
    did text NOT NULL,
    device_id text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX stream_tickets_by_expiry ON stream_tickets (expires_at);
