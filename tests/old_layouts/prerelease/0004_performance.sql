-- pushpop 0004: speed at the database's ceiling.
--
-- * Wake-ups cost nothing under load. A NOTIFY makes its transaction take a server-wide lock
--   at commit, so pushes notify only while a consumer waits: a consumer about to sleep calls
--   pushpop.wait_for_push(), and the first push to one of its topics removes that entry and
--   notifies. Busy consumers are not registered, so pushes under load never notify.
-- * pop plans once: a single-message pop is one UPDATE of the row its sub-select locks; a batch
--   locks its rows into an array first. Scheduled messages are promoted only when one is due.
-- * The fenced acknowledgements match on (id, lease) alone: a lease is set only while the
--   message is pending (the table's CHECK), so "state = 'pending'" added nothing.
-- * complete_many acknowledges a batch in one statement.
-- * stats() counts each state through its own partial index instead of reading every row.
-- * Storage: the queue table leaves room on each page and is vacuumed and analysed sooner, so
--   the dead rows its updates leave behind are reused before the table grows.

BEGIN;

CALL pushpop.record_migration(4, 'performance');

ALTER TABLE pushpop.messages SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE pushpop.workers SET (fillfactor = 50);

-- cleanup and stats read finished messages by state and topic without visiting the table.
DROP INDEX pushpop.messages_finished;
CREATE INDEX messages_finished ON pushpop.messages (state_time) INCLUDE (topic, state)
    WHERE state IN ('completed', 'discarded');

-- Consumers asleep until a push to one of their topics. Unlogged: after a crash it starts
-- empty, and every consumer registers again before its next sleep.
CREATE UNLOGGED TABLE pushpop.waiting (
    topic    text NOT NULL,
    consumer uuid NOT NULL,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, consumer)
) WITH (fillfactor = 50);
COMMENT ON TABLE pushpop.waiting IS
    'Consumers waiting for a NOTIFY on channel pushpop, by topic. Private: use pushpop.wait_for_push().';

CREATE FUNCTION pushpop.wait_for_push(consumer uuid, topics text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require(wait_for_push.consumer IS NOT NULL, 'consumer must not be NULL');
    PERFORM pushpop.require(cardinality(wait_for_push.topics) >= 1, 'topics must not be empty');
    PERFORM pushpop.require_topic(t) FROM unnest(wait_for_push.topics) AS t;
    INSERT INTO pushpop.waiting AS w (topic, consumer)
    SELECT DISTINCT t, wait_for_push.consumer FROM unnest(wait_for_push.topics) AS t
    ON CONFLICT ON CONSTRAINT waiting_pkey DO UPDATE SET since = now();
END $$;
COMMENT ON FUNCTION pushpop.wait_for_push(uuid, text[]) IS
    'Call before sleeping on LISTEN pushpop: the next message to become ready in one of topics then sends '
    'a NOTIFY (payload: the topic) and ends the registration. Wait about 100 ms (or until notified) after this '
    'call and pop once more, then sleep: a push that was committing as you called did not notify. '
    'consumer is any id of your own; calling again renews it. '
    'Registrations older than a minute are dropped by prune_workers() unless consumer is a live worker '
    '(pushpop.worker_heartbeat), so any other sleeper renews its registration each time it wakes.';

-- Ends the registrations of the given topics and notifies once per topic that had one.
CREATE FUNCTION pushpop.wake(topics text[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    notified integer;
BEGIN
    -- Rows another transaction is waking already are skipped: it notifies for them.
    WITH woken AS (
        DELETE FROM pushpop.waiting AS w
        WHERE (w.topic, w.consumer) IN (
            SELECT x.topic, x.consumer FROM pushpop.waiting AS x
            WHERE x.topic = ANY (wake.topics)
            FOR UPDATE SKIP LOCKED)
        RETURNING w.topic
    )
    SELECT count(pg_notify('pushpop', t.topic)) INTO notified
    FROM (SELECT DISTINCT o.topic FROM woken AS o) AS t;
    RETURN notified;
END $$;
COMMENT ON FUNCTION pushpop.wake(text[]) IS
    'Sends the NOTIFY that wakes consumers waiting (pushpop.wait_for_push) on any of topics and returns '
    'how many topics it notified. The functions that make messages ready call it when someone waits.';

-- push and push_many: as in 0003, but they notify only when a consumer waits for the topic.
CREATE OR REPLACE FUNCTION pushpop.push(
    topic        text,
    payload      bytea,
    delay        interval DEFAULT '0',
    priority     integer  DEFAULT 0,
    id           uuid     DEFAULT NULL,
    dedup_key    text     DEFAULT NULL,
    max_attempts integer  DEFAULT 25
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    new_id    uuid := coalesce(push.id, gen_random_uuid());
    got       uuid;
    max_bytes integer;
BEGIN
    -- The helpers raise the error that names the bad argument; they run only when one is bad.
    IF NOT coalesce(length(push.topic) BETWEEN 1 AND 255 AND push.payload IS NOT NULL
                    AND push.delay >= interval '0' AND push.priority IS NOT NULL
                    AND push.max_attempts >= 1
                    AND (push.dedup_key IS NULL OR octet_length(push.dedup_key) BETWEEN 1 AND 1024),
                    false) THEN
        PERFORM pushpop.require_topic(push.topic);
        PERFORM pushpop.require(push.payload IS NOT NULL, 'payload must not be NULL');
        PERFORM pushpop.require(push.delay >= interval '0', 'delay must be zero or positive');
        PERFORM pushpop.require(push.priority IS NOT NULL, 'priority must not be NULL');
        PERFORM pushpop.require(push.max_attempts >= 1, 'max_attempts must be at least 1');
        PERFORM pushpop.require(push.dedup_key <> '', 'dedup_key must not be empty');
        PERFORM pushpop.require(false, format('dedup_key must be at most 1024 bytes, got %s',
                                              octet_length(push.dedup_key)));
    END IF;
    SELECT s.max_payload_bytes INTO max_bytes FROM pushpop.settings AS s;
    IF octet_length(push.payload) > max_bytes THEN
        RAISE EXCEPTION 'pushpop: payload is % bytes, more than the limit of % bytes',
            octet_length(push.payload), max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'pushpop.set_max_payload_bytes() changes the limit of this database.';
    END IF;
    LOOP
        INSERT INTO pushpop.messages AS m
            (id, topic, state, state_time, priority, max_attempts, dedup_key, payload)
        VALUES (new_id, push.topic,
                CASE WHEN push.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
                now() + push.delay, push.priority, push.max_attempts, push.dedup_key, push.payload)
        ON CONFLICT DO NOTHING
        RETURNING m.id INTO got;
        IF got IS NOT NULL THEN
            IF push.delay = interval '0'
               AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = push.topic) THEN
                PERFORM pushpop.wake(ARRAY[push.topic]);
            END IF;
            RETURN got;
        END IF;
        -- Nothing inserted: this id exists already, or a live message holds the dedup_key.
        SELECT m.id INTO got FROM pushpop.messages AS m WHERE m.id = new_id;
        IF got IS NULL THEN
            SELECT m.id INTO got FROM pushpop.messages AS m
            WHERE m.topic = push.topic AND m.dedup_key = push.dedup_key
              AND m.state IN ('scheduled', 'ready', 'pending');
        END IF;
        IF got IS NOT NULL THEN
            RETURN got;
        END IF;
        -- The conflicting message finished in between: try the insert again.
    END LOOP;
END $$;
COMMENT ON FUNCTION pushpop.push(text, bytea, interval, integer, uuid, text, integer) IS
    'Enqueues one message and returns its id; it may be popped after delay. An id that exists already, '
    'or a dedup_key held by a ready or pending message of the topic, inserts nothing and returns the existing id. '
    'A payload above pushpop.max_payload_bytes() raises program_limit_exceeded (54000).';

CREATE OR REPLACE FUNCTION pushpop.push_many(
    topic    text,
    payloads bytea[],
    delay    interval DEFAULT '0',
    priority integer  DEFAULT 0
) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    max_bytes integer;
    too_big   record;
BEGIN
    -- As in push: the helpers only run to name what is wrong.
    IF NOT coalesce(length(push_many.topic) BETWEEN 1 AND 255 AND push_many.payloads IS NOT NULL
                    AND CASE WHEN coalesce(array_ndims(push_many.payloads), 1) = 1
                             THEN array_position(push_many.payloads, NULL) IS NULL END
                    AND push_many.delay >= interval '0' AND push_many.priority IS NOT NULL,
                    false) THEN
        PERFORM pushpop.require_topic(push_many.topic);
        PERFORM pushpop.require(push_many.payloads IS NOT NULL, 'payloads must not be NULL');
        PERFORM pushpop.require(coalesce(array_ndims(push_many.payloads), 1) = 1,
                                'payloads must be a one-dimensional array');
        PERFORM pushpop.require(array_position(push_many.payloads, NULL) IS NULL,
                                'payloads must not contain NULL');
        PERFORM pushpop.require(push_many.delay >= interval '0', 'delay must be zero or positive');
        PERFORM pushpop.require(false, 'priority must not be NULL');
    END IF;
    SELECT s.max_payload_bytes INTO max_bytes FROM pushpop.settings AS s;
    SELECT p.n, octet_length(p.payload) AS bytes INTO too_big
    FROM unnest(push_many.payloads) WITH ORDINALITY AS p(payload, n)
    WHERE octet_length(p.payload) > max_bytes
    ORDER BY p.n LIMIT 1;
    IF too_big.n IS NOT NULL THEN
        RAISE EXCEPTION 'pushpop: payload % of % is % bytes, more than the limit of % bytes',
            too_big.n, cardinality(push_many.payloads), too_big.bytes, max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'pushpop.set_max_payload_bytes() changes the limit of this database.';
    END IF;
    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT gen_random_uuid() AS id, p.payload, p.n
        FROM unnest(push_many.payloads) WITH ORDINALITY AS p(payload, n)
    ), inserted AS (
        INSERT INTO pushpop.messages (id, topic, state, state_time, priority, payload)
        SELECT i.id, push_many.topic,
               CASE WHEN push_many.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
               now() + push_many.delay, push_many.priority, i.payload
        FROM input AS i ORDER BY i.n
    )
    SELECT i.id FROM input AS i ORDER BY i.n;
    IF FOUND AND push_many.delay = interval '0'
       AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = push_many.topic) THEN
        PERFORM pushpop.wake(ARRAY[push_many.topic]);
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.push_many(text, bytea[], interval, integer) IS
    'Enqueues one message per payload in a single statement and returns their ids in input order. '
    'Any payload above pushpop.max_payload_bytes() raises program_limit_exceeded (54000) and enqueues none.';

CREATE OR REPLACE FUNCTION pushpop.pop(
    topic        text,
    lease_for    interval DEFAULT '5 minutes',
    max_messages integer  DEFAULT 1
) RETURNS SETOF pushpop.message LANGUAGE plpgsql AS $$
DECLARE
    picked uuid[];
BEGIN
    IF NOT coalesce(length(pop.topic) BETWEEN 1 AND 255 AND pop.lease_for > interval '0'
                    AND pop.max_messages >= 1, false) THEN
        PERFORM pushpop.require_topic(pop.topic);
        PERFORM pushpop.require(pop.lease_for > interval '0', 'lease_for must be positive');
        PERFORM pushpop.require(pop.max_messages >= 1, 'max_messages must be at least 1');
    END IF;

    -- Scheduled messages that are due join the ready ones.
    IF EXISTS (SELECT FROM pushpop.messages AS s
               WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()) THEN
        WITH due AS MATERIALIZED (
            SELECT s.id FROM pushpop.messages AS s
            WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()
            ORDER BY s.state_time
            LIMIT 1000
            FOR UPDATE SKIP LOCKED
        )
        UPDATE pushpop.messages AS m SET state = 'ready'
        FROM due WHERE m.id = due.id;
    END IF;

    IF pop.max_messages = 1 THEN
        RETURN QUERY
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = gen_random_uuid()
        WHERE m.id = (SELECT r.id FROM pushpop.messages AS r
                      WHERE r.state = 'ready' AND r.topic = pop.topic
                      ORDER BY r.priority DESC, r.state_time, r.seq
                      LIMIT 1
                      FOR UPDATE SKIP LOCKED)
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key;
        RETURN;
    END IF;

    picked := ARRAY(SELECT r.id FROM pushpop.messages AS r
                    WHERE r.state = 'ready' AND r.topic = pop.topic
                    ORDER BY r.priority DESC, r.state_time, r.seq
                    LIMIT pop.max_messages
                    FOR UPDATE SKIP LOCKED);
    RETURN QUERY
    WITH taken AS (
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = gen_random_uuid()
        WHERE m.id = ANY (picked)
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key
    )
    SELECT t.id, t.topic, t.state, t.state_time, t.payload, t.priority, t.attempts,
           t.max_attempts, t.lease, t.created_at, t.error, t.dedup_key
    FROM taken AS t JOIN unnest(picked) WITH ORDINALITY AS p(id, n) ON p.id = t.id
    ORDER BY p.n;
END $$;
COMMENT ON FUNCTION pushpop.pop(text, interval, integer) IS
    'Takes up to max_messages ready messages of the topic (highest priority, then oldest, then push order) '
    'and leases them for lease_for: each becomes pending with a fresh lease token and one more attempt. '
    'Concurrent callers never wait on each other nor get the same message. No rows when nothing is ready.';

CREATE OR REPLACE FUNCTION pushpop.complete(id uuid, lease uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'completed', state_time = now(), lease = NULL
    WHERE m.id = complete.id AND m.lease = complete.lease;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.complete(uuid, uuid) IS
    'Marks a pending message completed. Fenced: false, and nothing changes, unless the message is pending under this lease.';

CREATE FUNCTION pushpop.complete_many(ids uuid[], leases uuid[])
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
BEGIN
    IF NOT coalesce(cardinality(complete_many.ids) = cardinality(complete_many.leases), false) THEN
        PERFORM pushpop.require(complete_many.ids IS NOT NULL, 'ids must not be NULL');
        PERFORM pushpop.require(complete_many.leases IS NOT NULL, 'leases must not be NULL');
        PERFORM pushpop.require(false, format('ids and leases must be as long as each other, got %s and %s',
                                              cardinality(complete_many.ids), cardinality(complete_many.leases)));
    END IF;
    RETURN QUERY
    UPDATE pushpop.messages AS m
    SET state = 'completed', state_time = now(), lease = NULL
    FROM unnest(complete_many.ids, complete_many.leases) AS d(id, lease)
    WHERE m.id = d.id AND m.lease = d.lease
    RETURNING m.id;
END $$;
COMMENT ON FUNCTION pushpop.complete_many(uuid[], uuid[]) IS
    'Completes many pending messages in one statement: ids[i] under leases[i]. Fenced like complete: '
    'returns the ids it completed; one missing from the result was no longer pending under that lease.';

CREATE OR REPLACE FUNCTION pushpop.discard(id uuid, lease uuid, reason text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'discarded', state_time = now(), lease = NULL,
        error = coalesce(discard.reason, m.error)
    WHERE m.id = discard.id AND m.lease = discard.lease;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.discard(uuid, uuid, text) IS
    'Marks a pending message discarded (it will not be delivered again), keeping reason in error. '
    'Fenced: false unless the message is pending under this lease.';

CREATE OR REPLACE FUNCTION pushpop.defer(id uuid, lease uuid, delay interval DEFAULT '0', reason text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    deferred_topic text;
BEGIN
    IF NOT coalesce(defer.delay >= interval '0', false) THEN
        PERFORM pushpop.require(false, 'delay must be zero or positive');
    END IF;
    UPDATE pushpop.messages AS m
    SET state = CASE WHEN defer.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
        state_time = now() + defer.delay, lease = NULL,
        error = coalesce(defer.reason, m.error)
    WHERE m.id = defer.id AND m.lease = defer.lease
    RETURNING m.topic INTO deferred_topic;
    IF deferred_topic IS NULL THEN
        RETURN false;
    END IF;
    IF defer.delay = interval '0'
       AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = deferred_topic) THEN
        PERFORM pushpop.wake(ARRAY[deferred_topic]);
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.defer(uuid, uuid, interval, text) IS
    'Returns a pending message to the queue, to be popped again after delay, keeping reason in error. '
    'Fenced: false unless the message is pending under this lease.';

CREATE OR REPLACE FUNCTION pushpop.extend(id uuid, lease uuid, lease_for interval DEFAULT '5 minutes')
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT coalesce(extend.lease_for > interval '0', false) THEN
        PERFORM pushpop.require(false, 'lease_for must be positive');
    END IF;
    UPDATE pushpop.messages AS m
    SET state_time = now() + extend.lease_for
    WHERE m.id = extend.id AND m.lease = extend.lease;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.extend(uuid, uuid, interval) IS
    'Moves the lease deadline of a pending message to now() + lease_for. '
    'Fenced: false unless the message is pending under this lease.';

CREATE OR REPLACE FUNCTION pushpop.requeue_expired()
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    moved  integer;
    topics text[];
BEGIN
    WITH expired AS MATERIALIZED (
        SELECT p.id FROM pushpop.messages AS p
        WHERE p.state = 'pending' AND p.state_time < now()
        FOR UPDATE SKIP LOCKED
    ), moved_rows AS (
        UPDATE pushpop.messages AS m
        SET state = CASE WHEN m.attempts >= m.max_attempts THEN 'discarded' ELSE 'ready' END,
            state_time = now(), lease = NULL,
            error = format('lease expired on attempt %s of %s', m.attempts, m.max_attempts)
                    || CASE WHEN m.attempts >= m.max_attempts THEN ': discarded' ELSE '' END
        FROM expired WHERE m.id = expired.id
        RETURNING m.topic, m.state
    )
    SELECT count(*), array_agg(DISTINCT r.topic) FILTER (WHERE r.state = 'ready')
    INTO moved, topics FROM moved_rows AS r;
    IF topics IS NOT NULL THEN
        PERFORM pushpop.wake(topics);
    END IF;
    RETURN moved;
END $$;
COMMENT ON FUNCTION pushpop.requeue_expired() IS
    'Returns every pending message whose lease deadline has passed to the queue, or discards it once it has '
    'used max_attempts (error says why). Returns how many messages it moved.';

-- Each state is counted through the partial index that holds it, never by reading the table.
CREATE OR REPLACE FUNCTION pushpop.stats()
RETURNS TABLE (topic text, ready bigint, scheduled bigint, pending bigint,
               completed bigint, discarded bigint, oldest_ready timestamptz)
LANGUAGE sql STABLE AS $$
    WITH counts AS (
        SELECT r.topic, count(*) AS ready, 0::bigint AS scheduled, 0::bigint AS pending,
               0::bigint AS completed, 0::bigint AS discarded, min(r.state_time) AS oldest_ready
        FROM pushpop.messages AS r WHERE r.state = 'ready' GROUP BY r.topic
        UNION ALL
        SELECT s.topic, count(*) FILTER (WHERE s.state_time <= now()),
               count(*) FILTER (WHERE s.state_time > now()), 0, 0, 0,
               min(s.state_time) FILTER (WHERE s.state_time <= now())
        FROM pushpop.messages AS s WHERE s.state = 'scheduled' GROUP BY s.topic
        UNION ALL
        SELECT p.topic, 0, 0, count(*), 0, 0, NULL
        FROM pushpop.messages AS p WHERE p.state = 'pending' GROUP BY p.topic
        UNION ALL
        SELECT f.topic, 0, 0, 0, count(*) FILTER (WHERE f.state = 'completed'),
               count(*) FILTER (WHERE f.state = 'discarded'), NULL
        FROM pushpop.messages AS f WHERE f.state IN ('completed', 'discarded') GROUP BY f.topic
    )
    SELECT c.topic, sum(c.ready)::bigint, sum(c.scheduled)::bigint, sum(c.pending)::bigint,
           sum(c.completed)::bigint, sum(c.discarded)::bigint, min(c.oldest_ready)
    FROM counts AS c
    GROUP BY c.topic
    ORDER BY c.topic
$$;
COMMENT ON FUNCTION pushpop.stats() IS
    'One row per topic: messages ready now, scheduled for later, pending, completed and discarded, '
    'and the earliest state_time among those ready now.';

-- The worker registry forgets waiting registrations along with the workers.
CREATE OR REPLACE FUNCTION pushpop.worker_stopped(id uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pushpop.waiting AS w WHERE w.consumer = worker_stopped.id;
    DELETE FROM pushpop.workers AS w WHERE w.id = worker_stopped.id;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.worker_stopped(uuid) IS
    'Removes a worker from the registry (and from the consumers waiting for a push) when it shuts down '
    'cleanly. True if it was registered.';

CREATE OR REPLACE FUNCTION pushpop.prune_workers(stale_after interval DEFAULT '1 minute')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require(prune_workers.stale_after > interval '0', 'stale_after must be positive');
    -- A live worker's registration stays however long it sleeps between polls.
    DELETE FROM pushpop.waiting AS w
    WHERE w.since <= now() - prune_workers.stale_after
      AND NOT EXISTS (SELECT FROM pushpop.workers AS k
                      WHERE k.id = w.consumer AND k.heartbeat_at > now() - prune_workers.stale_after);
    DELETE FROM pushpop.workers AS w WHERE w.heartbeat_at <= now() - prune_workers.stale_after;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.prune_workers(interval) IS
    'Deletes registry entries of workers that stopped heartbeating more than stale_after ago '
    '(they crashed or were killed), and waiting registrations (pushpop.wait_for_push) as old '
    'unless they belong to a live worker. '
    'Returns how many workers it removed.';

-- Lock down, as 0003 explains: every routine runs as its owner with a pinned search_path,
-- and PUBLIC may call none of the new ones.
DO $$
DECLARE
    routine record;
BEGIN
    FOR routine IN
        SELECT p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'pushpop'::regnamespace
    LOOP
        EXECUTE pg_catalog.format(
            'ALTER ROUTINE pushpop.%I(%s) SECURITY DEFINER SET search_path = pg_catalog, pg_temp',
            routine.proname, routine.args);
    END LOOP;
END $$;
REVOKE ALL ON ALL ROUTINES IN SCHEMA pushpop FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pushpop FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    pushpop.complete_many(uuid[], uuid[]),
    pushpop.wait_for_push(uuid, text[])
TO pushpop_consumer, pushpop_admin;

COMMIT;
