-- pushpop 0002: a consumer asking for a wake-up never waits for a producer.
--
-- A push that wakes consumers deletes their registrations, and holds those rows until it
-- commits. Keyed by (topic, consumer), a consumer registering again meanwhile had to wait for
-- that row, which a producer in a long transaction of its own could hold for as long as it
-- liked, stalling the consumer and every other topic it serves. Without the key, a consumer
-- adds a fresh row and removes only its old rows that nobody holds.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (2, 'wakeups_never_block');

ALTER TABLE pushpop.waiting DROP CONSTRAINT waiting_pkey;
-- wake finds a topic's consumers; worker_stopped and prune_workers read the whole (small) table.
CREATE INDEX waiting_topic ON pushpop.waiting (topic);
