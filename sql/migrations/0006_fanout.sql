-- pushpop 0006: fan-out to subscriptions.
--
-- * A subscription routes the pushes to a topic, or to every topic a pattern matches
--   (`orders.*`, `orders.>`), to a subscriber topic: a push puts one copy into each subscriber
--   topic, in its own transaction, and none into the pushed topic itself.
-- * Each copy is an ordinary message of its subscriber topic; fanout_of names the push it is a
--   copy of (the id push returned), so find(that id) lists the copies and a retried push with
--   the same id adds none.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (6, 'fanout');

CREATE TABLE pushpop.subscriptions (
    pattern    text NOT NULL,
    subscriber text NOT NULL,
    -- NULL for a plain topic. For a pattern: its words before the first wildcard, each
    -- followed by a dot ('' when it starts with one), and the regular expression it stands for.
    prefix     text,
    matcher    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pattern, subscriber)
);
COMMENT ON TABLE pushpop.subscriptions IS
    'Which subscriber topics get a copy of each push to a topic or to the topics a pattern matches. '
    'Private: use pushpop.subscribe(), pushpop.unsubscribe() and pushpop.subscriptions().';

-- A push looks its patterns up by the prefixes of its topic, never reading the others.
CREATE INDEX subscriptions_patterns ON pushpop.subscriptions (prefix) WHERE prefix IS NOT NULL;

ALTER TABLE pushpop.messages ADD COLUMN fanout_of uuid;
COMMENT ON COLUMN pushpop.messages.fanout_of IS
    'For a copy made by fan-out: the id the push returned, shared by all of its copies.';

-- One copy per (push, subscriber topic), whoever retries the push; only copies are indexed,
-- so a plain push costs nothing more.
CREATE UNIQUE INDEX messages_fanout ON pushpop.messages (fanout_of, topic)
    WHERE fanout_of IS NOT NULL;
