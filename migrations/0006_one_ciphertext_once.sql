-- The same bytes twice in one conversation's log are never legitimate: a
-- member could otherwise take another member's ciphertext from the log and
-- send it again under a new msgId (issue 14). One unique index over every
-- entry's payload hash replaces the one over handshake messages only.
--
-- A log written before this migration may already hold such copies. They
-- stay (seq is gapless and a log is never rewritten); each later copy's
-- payload_hash gets its seq appended (40 bytes, never a SHA-256), so the
-- index holds for everything sent from now on. Such a copy can no longer
-- be answered as a repeat of its msgId, which only a replay would want.
UPDATE convo_messages AS m
SET payload_hash = m.payload_hash || int8send(m.seq)
FROM (
    SELECT convo_id, seq,
           row_number() OVER (PARTITION BY convo_id, payload_hash ORDER BY seq) AS copy
    FROM convo_messages
) AS copies
WHERE copies.convo_id = m.convo_id AND copies.seq = m.seq AND copies.copy > 1;

CREATE UNIQUE INDEX convo_messages_payload ON convo_messages (convo_id, payload_hash);
DROP INDEX convo_messages_handshake;

-- sendMessage records its idempotency key in the statement that appends the
-- message (server/idempotency.rs): the stored answer is that log entry,
-- rendered again for a retry, instead of a response body written after it.
ALTER TABLE idempotency_keys ADD COLUMN convo_id bytea;
ALTER TABLE idempotency_keys ADD COLUMN seq bigint;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_answer CHECK (
    state = 'in_progress'
    OR (status IS NOT NULL AND (body IS NOT NULL OR seq IS NOT NULL))
);
