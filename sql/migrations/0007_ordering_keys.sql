-- pushpop 0007: strict order per key.
--
-- * A message pushed with an ordering_key waits, in state "blocked", while an earlier message
--   of its topic and key is live (scheduled, ready or pending). When that one is completed or
--   discarded, the oldest blocked message of the key takes its place. So among the messages
--   of one key at most one can be popped or pending at a time, and they go in push order.
-- * pop needs no change: blocked messages are not in the ready index at all, so a deep
--   backlog behind a few busy keys costs pop nothing.
-- push, push_many, pop, find, browse and stats change their signatures or row type, so their
-- old versions go here; the function files make the new ones.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (7, 'ordering_keys');

ALTER TABLE pushpop.messages ADD COLUMN ordering_key text;
COMMENT ON COLUMN pushpop.messages.ordering_key IS
    'Messages of one topic with the same ordering_key are delivered one at a time, in push order.';
COMMENT ON TABLE pushpop.messages IS
    'Every message, whatever its state. Private: use the pushpop.* functions, which keep its rules: '
    'state is scheduled, ready, pending, blocked, completed or discarded; lease and lease_until are '
    'set while the message is pending, and lease only then; topic has 1 to 255 characters; '
    'max_attempts is at least 1; of the messages of one topic and ordering_key at most one is '
    'scheduled, ready or pending, and blocked ones exist only behind it. state_time is when the '
    'message was pushed, retried or finished, when it is due if scheduled or blocked, and when it '
    'was popped if pending.';

-- The head of each key: at most one live message per (topic, ordering_key). Only keyed
-- messages are indexed, so a push without a key costs nothing more.
CREATE UNIQUE INDEX messages_key_head ON pushpop.messages (topic, ordering_key)
    WHERE ordering_key IS NOT NULL AND state IN ('scheduled', 'ready', 'pending');
-- The messages behind each head, in push order: the next one is the first entry.
CREATE INDEX messages_blocked ON pushpop.messages (topic, ordering_key, seq)
    WHERE state = 'blocked';

-- A blocked message is live: its dedup_key stays taken while it waits.
CREATE UNIQUE INDEX messages_dedup_live ON pushpop.messages (topic, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('scheduled', 'ready', 'pending', 'blocked');
DROP INDEX pushpop.messages_dedup;
ALTER INDEX pushpop.messages_dedup_live RENAME TO messages_dedup;

DROP FUNCTION IF EXISTS pushpop.push(text, bytea, interval, integer, uuid, text, integer, interval, jsonb);
DROP FUNCTION IF EXISTS pushpop.push_many(text, bytea[], interval, integer, interval, jsonb);
DROP FUNCTION IF EXISTS pushpop.pop(text, interval, integer);
DROP FUNCTION IF EXISTS pushpop.find(uuid);
DROP FUNCTION IF EXISTS pushpop.browse(text, text, uuid, integer);
DROP FUNCTION IF EXISTS pushpop.stats();
ALTER TYPE pushpop.message ADD ATTRIBUTE ordering_key text;
