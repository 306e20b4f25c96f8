-- pushpop 0004: messages that expire, topics that pause, and headers.
--
-- * A message pushed with expires_in is never delivered after its deadline; maintenance
--   discards it (error 'expired').
-- * A paused topic keeps taking pushes but gives nothing to pop until it is resumed.
-- * A message carries headers, a JSON object of strings (a trace context, a content type).
-- push, push_many and stats change their signatures, so their old versions go here; the
-- function files make the new ones.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (4, 'expiry_pause_headers');

ALTER TABLE pushpop.messages ADD COLUMN expires_at timestamptz, ADD COLUMN headers jsonb;
COMMENT ON COLUMN pushpop.messages.expires_at IS
    'The deadline after which the message is never delivered: push''s expires_in from the push.';
COMMENT ON COLUMN pushpop.messages.headers IS
    'The message''s headers: a JSON object of string values, or NULL for none.';

-- Maintenance finds the waiting messages whose deadline has passed; only messages that expire
-- are indexed, so a push without expires_in costs nothing more.
CREATE INDEX messages_expiring ON pushpop.messages (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'ready');

DROP FUNCTION IF EXISTS pushpop.pop(text, interval, integer);
DROP FUNCTION IF EXISTS pushpop.find(uuid);
ALTER TYPE pushpop.message ADD ATTRIBUTE headers jsonb, ADD ATTRIBUTE expires_at timestamptz;

DROP FUNCTION IF EXISTS pushpop.push(text, bytea, interval, integer, uuid, text, integer);
DROP FUNCTION IF EXISTS pushpop.push_many(text, bytea[], interval, integer);
DROP FUNCTION IF EXISTS pushpop.stats();

CREATE TABLE pushpop.paused_topics (
    topic     text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pushpop.paused_topics IS
    'Topics that give nothing to pop. Private: use pushpop.pause() and pushpop.resume().';
