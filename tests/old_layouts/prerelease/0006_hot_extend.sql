-- pushpop 0006: extending a lease is a HOT update.
--
-- A lease deadline now lives in a column of its own, lease_until, which no index covers.
-- extend changes nothing else, so PostgreSQL updates the row in place on its page (a HOT
-- update): no new index entries, and the old version is pruned without VACUUM. Before, the
-- deadline was state_time, which the ready, scheduled, pending and finished indexes all cover,
-- so every extend wrote an entry into the primary key and the pending index. While a message
-- is pending, state_time is when it was popped, which extend leaves alone; the pending index
-- keeps that key, so a pop still appends its entry at the index's end (tried: keying it by the
-- random lease token let the index reuse its dead entries' room between vacuums, but made
-- every pop of a batch about a tenth dearer). requeue_expired now reads every pending message
-- (never more than those in flight) rather than only the lapsed ones.

BEGIN;

CALL pushpop.record_migration(6, 'hot_extend');

ALTER TABLE pushpop.messages ADD COLUMN lease_until timestamptz;
UPDATE pushpop.messages SET lease_until = state_time WHERE state = 'pending';

COMMENT ON COLUMN pushpop.messages.lease_until IS
    'When the latest lease runs out; requeue_expired looks at it while the message is pending.';
COMMENT ON TABLE pushpop.messages IS
    'Every message, whatever its state. Private: use the pushpop.* functions, which keep its rules: '
    'state is scheduled, ready, pending, completed or discarded; lease and lease_until are set while '
    'the message is pending, and lease only then; topic has 1 to 255 characters; max_attempts is at '
    'least 1. state_time is when the message was pushed, retried or finished, when it is due if '
    'scheduled, and when it was popped if pending.';

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

    -- A pending message's state_time is shown as its lease deadline.
    IF pop.max_messages = 1 THEN
        RETURN QUERY
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now(), lease_until = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = gen_random_uuid()
        WHERE m.id = (SELECT r.id FROM pushpop.messages AS r
                      WHERE r.state = 'ready' AND r.topic = pop.topic
                      ORDER BY r.priority DESC, r.state_time, r.seq
                      LIMIT 1
                      FOR UPDATE SKIP LOCKED)
        RETURNING m.id, m.topic, m.state, m.lease_until, m.payload, m.priority, m.attempts,
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
        SET state = 'pending', state_time = now(), lease_until = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = gen_random_uuid()
        WHERE m.id = ANY (picked)
        RETURNING m.id, m.topic, m.state, m.lease_until, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key
    )
    SELECT t.id, t.topic, t.state, t.lease_until, t.payload, t.priority, t.attempts,
           t.max_attempts, t.lease, t.created_at, t.error, t.dedup_key
    FROM taken AS t JOIN unnest(picked) WITH ORDINALITY AS p(id, n) ON p.id = t.id
    ORDER BY p.n;
END $$;
COMMENT ON FUNCTION pushpop.pop(text, interval, integer) IS
    'Takes up to max_messages ready messages of the topic (highest priority, then oldest, then push order) '
    'and leases them for lease_for: each becomes pending with a fresh lease token and one more attempt. '
    'Concurrent callers never wait on each other nor get the same message. No rows when nothing is ready.';

-- Only lease_until changes, and no index covers it: a HOT update.
CREATE OR REPLACE FUNCTION pushpop.extend(id uuid, lease uuid, lease_for interval DEFAULT '5 minutes')
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT coalesce(extend.lease_for > interval '0', false) THEN
        PERFORM pushpop.require(false, 'lease_for must be positive');
    END IF;
    UPDATE pushpop.messages AS m
    SET lease_until = now() + extend.lease_for
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
        WHERE p.state = 'pending' AND p.lease_until < now()
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

CREATE OR REPLACE FUNCTION pushpop.find(id uuid)
RETURNS SETOF pushpop.message LANGUAGE sql STABLE AS $$
    SELECT m.id, m.topic,
           CASE m.state WHEN 'scheduled' THEN 'ready' ELSE m.state END,
           CASE m.state WHEN 'pending' THEN m.lease_until ELSE m.state_time END,
           m.payload, m.priority, m.attempts, m.max_attempts, m.lease,
           m.created_at, m.error, m.dedup_key
    FROM pushpop.messages AS m WHERE m.id = find.id
$$;
COMMENT ON FUNCTION pushpop.find(uuid) IS
    'Returns the message with this id, in whatever state, or no row if there is none (or it was cleaned up).';

-- Lock down, as 0003 explains: every routine runs as its owner with a pinned search_path,
-- and PUBLIC may call none of them.
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

COMMIT;
