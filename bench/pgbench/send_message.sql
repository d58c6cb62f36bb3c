-- The minimal sendMessage transaction, the baseline the harness compares
-- sendMessage with (catbird-mls-bench runs it with pgbench, 8 clients, on
-- the same cluster): lock the conversation row and take the next seq,
-- append a 512-byte entry, commit. Tables: see catbird-mls-bench's
-- pgbench module (bench_convos, bench_log).
BEGIN;
UPDATE bench_convos SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS seq \gset
INSERT INTO bench_log (convo_id, seq, payload) VALUES (1, :seq, :payload);
COMMIT;
