-- pushpop 0001: the queue itself.
-- Messages, push, pop, the fenced acknowledgements, maintenance and stats.
-- Apply with: psql -v ON_ERROR_STOP=1 -f sql/0001_core.sql (or `pushpop migrate`).

BEGIN;

-- Every migration holds this lock, so two migrators (psql or Python) never interleave.
DO $$ BEGIN PERFORM pg_advisory_xact_lock(31654335925481328); END $$;

CREATE SCHEMA IF NOT EXISTS pushpop;

CREATE TABLE IF NOT EXISTS pushpop.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE PROCEDURE pushpop.record_migration(version integer, name text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(31654335925481328);
    IF EXISTS (SELECT FROM pushpop.schema_migrations AS s WHERE s.version = record_migration.version) THEN
        RAISE EXCEPTION 'pushpop migration % (%) is already applied', version, name
            USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO pushpop.schema_migrations (version, name) VALUES (version, name);
END $$;
COMMENT ON PROCEDURE pushpop.record_migration(integer, text) IS
    'Called first by each migration file: takes the migration lock, fails if this version is already applied, and records it.';

CALL pushpop.record_migration(1, 'core');

-- The state column holds one more value than callers ever see: "scheduled" is a
-- ready message that is not due yet. Keeping it apart lets the ready index hold
-- only poppable messages, so pop never walks past future ones.
CREATE TABLE pushpop.messages (
    id           uuid PRIMARY KEY,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    state_time   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    priority     integer NOT NULL DEFAULT 0,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25 CHECK (max_attempts >= 1),
    lease        uuid,
    state        text NOT NULL
                 CHECK (state IN ('scheduled', 'ready', 'pending', 'completed', 'discarded')),
    topic        text NOT NULL CHECK (length(topic) BETWEEN 1 AND 255),
    dedup_key    text,
    error        text,
    payload      bytea NOT NULL,
    CHECK ((state = 'pending') = (lease IS NOT NULL))
);
COMMENT ON TABLE pushpop.messages IS
    'Every message, whatever its state. Private: use the pushpop.* functions.';

-- pop: highest priority, then oldest, then push order; only poppable rows are indexed.
CREATE INDEX messages_ready ON pushpop.messages (topic, priority DESC, state_time, seq)
    WHERE state = 'ready';
-- pop promotes due scheduled messages of its topic.
CREATE INDEX messages_scheduled ON pushpop.messages (topic, state_time)
    WHERE state = 'scheduled';
-- requeue_expired finds lapsed leases.
CREATE INDEX messages_pending ON pushpop.messages (state_time)
    WHERE state = 'pending';
-- cleanup finds finished messages past their grace period.
CREATE INDEX messages_finished ON pushpop.messages (state_time)
    WHERE state IN ('completed', 'discarded');
-- push: one live message per (topic, dedup_key).
CREATE UNIQUE INDEX messages_dedup ON pushpop.messages (topic, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('scheduled', 'ready', 'pending');

CREATE TYPE pushpop.message AS (
    id           uuid,
    topic        text,
    state        text,
    state_time   timestamptz,
    payload      bytea,
    priority     integer,
    attempts     integer,
    max_attempts integer,
    lease        uuid,
    created_at   timestamptz,
    error        text,
    dedup_key    text
);
COMMENT ON TYPE pushpop.message IS
    'A message as the functions return it. state is ready, pending, completed or discarded; '
    'state_time is when it may be popped (ready), its lease deadline (pending) or when it finished.';

-- Argument checks: every bad argument raises SQLSTATE 22023 with a message naming it.
CREATE FUNCTION pushpop.require(ok boolean, problem text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'pushpop: %', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require(boolean, text) IS
    'Raises invalid_parameter_value (22023) with the given problem unless ok is true. Used by every function to check its arguments.';

CREATE FUNCTION pushpop.require_topic(topic text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF topic IS NULL OR length(topic) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'pushpop: topic must be 1 to 255 characters, got %',
            coalesce(length(topic) || ' characters', 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require_topic(text) IS
    'Raises invalid_parameter_value (22023) unless topic is 1 to 255 characters.';

CREATE FUNCTION pushpop.push(
    topic        text,
    payload      bytea,
    delay        interval DEFAULT '0',
    priority     integer  DEFAULT 0,
    id           uuid     DEFAULT NULL,
    dedup_key    text     DEFAULT NULL,
    max_attempts integer  DEFAULT 25
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := coalesce(push.id, gen_random_uuid());
    got    uuid;
BEGIN
    PERFORM pushpop.require_topic(push.topic);
    PERFORM pushpop.require(push.payload IS NOT NULL, 'payload must not be NULL');
    PERFORM pushpop.require(push.delay >= interval '0', 'delay must be zero or positive');
    PERFORM pushpop.require(push.priority IS NOT NULL, 'priority must not be NULL');
    PERFORM pushpop.require(push.max_attempts >= 1, 'max_attempts must be at least 1');
    PERFORM pushpop.require(push.dedup_key IS NULL OR push.dedup_key <> '', 'dedup_key must not be empty');
    LOOP
        INSERT INTO pushpop.messages AS m
            (id, topic, state, state_time, priority, max_attempts, dedup_key, payload)
        VALUES (new_id, push.topic,
                CASE WHEN push.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
                now() + push.delay, push.priority, push.max_attempts, push.dedup_key, push.payload)
        ON CONFLICT DO NOTHING
        RETURNING m.id INTO got;
        IF got IS NOT NULL THEN
            IF push.delay = interval '0' THEN
                PERFORM pg_notify('pushpop', push.topic);
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
    'or a dedup_key held by a ready or pending message of the topic, inserts nothing and returns the existing id.';

CREATE FUNCTION pushpop.push_many(
    topic    text,
    payloads bytea[],
    delay    interval DEFAULT '0',
    priority integer  DEFAULT 0
) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require_topic(push_many.topic);
    PERFORM pushpop.require(push_many.payloads IS NOT NULL, 'payloads must not be NULL');
    PERFORM pushpop.require(array_position(push_many.payloads, NULL) IS NULL,
                            'payloads must not contain NULL');
    PERFORM pushpop.require(push_many.delay >= interval '0', 'delay must be zero or positive');
    PERFORM pushpop.require(push_many.priority IS NOT NULL, 'priority must not be NULL');
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
    IF FOUND AND push_many.delay = interval '0' THEN
        PERFORM pg_notify('pushpop', push_many.topic);
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.push_many(text, bytea[], interval, integer) IS
    'Enqueues one message per payload in a single statement and returns their ids in input order.';

CREATE FUNCTION pushpop.pop(
    topic        text,
    lease_for    interval DEFAULT '5 minutes',
    max_messages integer  DEFAULT 1
) RETURNS SETOF pushpop.message LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require_topic(pop.topic);
    PERFORM pushpop.require(pop.lease_for > interval '0', 'lease_for must be positive');
    PERFORM pushpop.require(pop.max_messages >= 1, 'max_messages must be at least 1');

    -- Scheduled messages that are due join the ready ones.
    WITH due AS MATERIALIZED (
        SELECT s.id FROM pushpop.messages AS s
        WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()
        ORDER BY s.state_time
        LIMIT 1000
        FOR UPDATE SKIP LOCKED
    )
    UPDATE pushpop.messages AS m SET state = 'ready'
    FROM due WHERE m.id = due.id;

    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT r.id, r.state_time, r.seq FROM pushpop.messages AS r
        WHERE r.state = 'ready' AND r.topic = pop.topic
        ORDER BY r.priority DESC, r.state_time, r.seq
        LIMIT pop.max_messages
        FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = gen_random_uuid()
        FROM picked WHERE m.id = picked.id
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key,
                  picked.state_time AS queued_at, picked.seq
    )
    SELECT t.id, t.topic, t.state, t.state_time, t.payload, t.priority, t.attempts,
           t.max_attempts, t.lease, t.created_at, t.error, t.dedup_key
    FROM taken AS t
    ORDER BY t.priority DESC, t.queued_at, t.seq;
END $$;
COMMENT ON FUNCTION pushpop.pop(text, interval, integer) IS
    'Takes up to max_messages ready messages of the topic (highest priority, then oldest, then push order) '
    'and leases them for lease_for: each becomes pending with a fresh lease token and one more attempt. '
    'Concurrent callers never wait on each other nor get the same message. No rows when nothing is ready.';

CREATE FUNCTION pushpop.complete(id uuid, lease uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'completed', state_time = now(), lease = NULL
    WHERE m.id = complete.id AND m.lease = complete.lease AND m.state = 'pending';
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.complete(uuid, uuid) IS
    'Marks a pending message completed. Fenced: false, and nothing changes, unless the message is pending under this lease.';

CREATE FUNCTION pushpop.discard(id uuid, lease uuid, reason text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'discarded', state_time = now(), lease = NULL,
        error = coalesce(discard.reason, m.error)
    WHERE m.id = discard.id AND m.lease = discard.lease AND m.state = 'pending';
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.discard(uuid, uuid, text) IS
    'Marks a pending message discarded (it will not be delivered again), keeping reason in error. '
    'Fenced: false unless the message is pending under this lease.';

CREATE FUNCTION pushpop.defer(id uuid, lease uuid, delay interval DEFAULT '0', reason text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require(defer.delay >= interval '0', 'delay must be zero or positive');
    UPDATE pushpop.messages AS m
    SET state = CASE WHEN defer.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
        state_time = now() + defer.delay, lease = NULL,
        error = coalesce(defer.reason, m.error)
    WHERE m.id = defer.id AND m.lease = defer.lease AND m.state = 'pending';
    IF FOUND AND defer.delay = interval '0' THEN
        PERFORM pg_notify('pushpop', (SELECT m.topic FROM pushpop.messages AS m WHERE m.id = defer.id));
    END IF;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.defer(uuid, uuid, interval, text) IS
    'Returns a pending message to the queue, to be popped again after delay, keeping reason in error. '
    'Fenced: false unless the message is pending under this lease.';

CREATE FUNCTION pushpop.extend(id uuid, lease uuid, lease_for interval DEFAULT '5 minutes')
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require(extend.lease_for > interval '0', 'lease_for must be positive');
    UPDATE pushpop.messages AS m
    SET state_time = now() + extend.lease_for
    WHERE m.id = extend.id AND m.lease = extend.lease AND m.state = 'pending';
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.extend(uuid, uuid, interval) IS
    'Moves the lease deadline of a pending message to now() + lease_for. '
    'Fenced: false unless the message is pending under this lease.';

CREATE FUNCTION pushpop.find(id uuid)
RETURNS SETOF pushpop.message LANGUAGE sql STABLE AS $$
    SELECT m.id, m.topic,
           CASE m.state WHEN 'scheduled' THEN 'ready' ELSE m.state END,
           m.state_time, m.payload, m.priority, m.attempts, m.max_attempts, m.lease,
           m.created_at, m.error, m.dedup_key
    FROM pushpop.messages AS m WHERE m.id = find.id
$$;
COMMENT ON FUNCTION pushpop.find(uuid) IS
    'Returns the message with this id, in whatever state, or no row if there is none (or it was cleaned up).';

CREATE FUNCTION pushpop.requeue_expired()
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
    PERFORM pg_notify('pushpop', t) FROM unnest(topics) AS t;
    RETURN moved;
END $$;
COMMENT ON FUNCTION pushpop.requeue_expired() IS
    'Returns every pending message whose lease deadline has passed to the queue, or discards it once it has '
    'used max_attempts (error says why). Returns how many messages it moved.';

CREATE FUNCTION pushpop.cleanup(grace interval DEFAULT '1 day', max_rows integer DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require(cleanup.grace >= interval '0', 'grace must be zero or positive');
    PERFORM pushpop.require(cleanup.max_rows IS NULL OR cleanup.max_rows >= 1,
                            'max_rows must be at least 1 (or NULL for all)');
    WITH old AS MATERIALIZED (
        SELECT f.id FROM pushpop.messages AS f
        WHERE f.state IN ('completed', 'discarded') AND f.state_time < now() - cleanup.grace
        ORDER BY f.state_time
        LIMIT cleanup.max_rows
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM pushpop.messages AS m USING old WHERE m.id = old.id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.cleanup(interval, integer) IS
    'Deletes completed and discarded messages that finished more than grace ago, oldest first, at most max_rows '
    '(NULL: all). Call it repeatedly with a max_rows such as 10000, each call its own transaction, to keep locks short. '
    'Returns how many it deleted.';

CREATE FUNCTION pushpop.stats()
RETURNS TABLE (topic text, ready bigint, scheduled bigint, pending bigint,
               completed bigint, discarded bigint, oldest_ready timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT m.topic,
           count(*) FILTER (WHERE m.state = 'ready' OR (m.state = 'scheduled' AND m.state_time <= now())),
           count(*) FILTER (WHERE m.state = 'scheduled' AND m.state_time > now()),
           count(*) FILTER (WHERE m.state = 'pending'),
           count(*) FILTER (WHERE m.state = 'completed'),
           count(*) FILTER (WHERE m.state = 'discarded'),
           min(m.state_time) FILTER (WHERE m.state = 'ready' OR (m.state = 'scheduled' AND m.state_time <= now()))
    FROM pushpop.messages AS m
    GROUP BY m.topic
    ORDER BY m.topic
$$;
COMMENT ON FUNCTION pushpop.stats() IS
    'One row per topic: messages ready now, scheduled for later, pending, completed and discarded, '
    'and the earliest state_time among those ready now.';

CREATE FUNCTION pushpop.purge(topic text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require_topic(purge.topic);
    DELETE FROM pushpop.messages AS m WHERE m.topic = purge.topic AND m.state <> 'pending';
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.purge(text) IS
    'Deletes every message of the topic that is not pending (in-flight deliveries finish normally). Returns how many.';

COMMIT;
