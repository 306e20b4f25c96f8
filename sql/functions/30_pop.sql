-- pushpop functions, part 3: pop.
--
-- pop leases messages: each becomes pending with a fresh lease token, a deadline and one more
-- attempt. It is fenced by that token from then on (40_acknowledge.sql); a lease that runs out
-- returns the message to the queue (60_maintenance.sql). Concurrent pops skip each other's
-- locked rows, so they never wait on each other nor get the same message.

COMMENT ON TYPE pushpop.message IS
    'A message as the functions return it. state is ready (scheduled ones show as ready), pending, '
    'blocked (waiting for an earlier message of its ordering_key to finish), completed or discarded; '
    'state_time is when it may be popped (ready, blocked), when it was popped (pending) or when it '
    'finished; lease and lease_until, the lease token and its deadline, are set while it is pending; '
    'headers is a JSON object of strings or NULL; expires_at is the deadline after which it is never '
    'delivered, or NULL; ordering_key is its key, or NULL.';

-- pop_at: the part of pop that reads and writes the messages on a distributed installation. pop
-- calls it in a FROM clause, and it is distributed by route with force_delegation
-- (95_distribute.sql), so Citus sends that one call to the node that holds the route's shard
-- and the statements below run there locally. It may therefore touch only the messages of its
-- route (Citus refuses a distributed statement nested in one that runs on a shard), and it
-- cannot NOTIFY the coordinator's listeners. popped_at is the coordinator's now(): the worker's
-- transaction starts later, on another clock, and the times of a message (push, requeue_expired)
-- all come from the coordinator's.
CREATE OR REPLACE FUNCTION pushpop.pop_at(
    route        integer,
    topic        text,
    lease_for    interval,
    max_messages integer,
    popped_at    timestamptz
) RETURNS SETOF pushpop.message LANGUAGE plpgsql
-- Never a bitmap scan, for pop's reason (below).
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_bitmapscan = off AS $$
DECLARE
    fresh  uuid;
    picked uuid[];
    leases uuid[];
BEGIN
    -- Scheduled messages that are due join the ready ones, all of them, so the order of
    -- delivery holds however many fall due at once.
    IF EXISTS (SELECT FROM pushpop.messages AS s
               WHERE s.route = pop_at.route AND s.state = 'scheduled' AND s.topic = pop_at.topic
                 AND s.state_time <= pop_at.popped_at) THEN
        WITH due AS MATERIALIZED (
            SELECT s.id FROM pushpop.messages AS s
            WHERE s.route = pop_at.route AND s.state = 'scheduled' AND s.topic = pop_at.topic
              AND s.state_time <= pop_at.popped_at
            FOR UPDATE SKIP LOCKED
        )
        UPDATE pushpop.messages AS m SET state = 'ready'
        FROM due WHERE m.route = pop_at.route AND m.id = due.id;
    END IF;

    -- One message: a single UPDATE of the row its sub-select locks. Its lease is made first:
    -- Citus refuses a volatile function in an UPDATE of a distributed table.
    IF pop_at.max_messages = 1 THEN
        fresh := pushpop.new_lease(pop_at.route);
        RETURN QUERY
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = pop_at.popped_at,
            lease_until = pop_at.popped_at + pop_at.lease_for,
            attempts = m.attempts + 1, lease = fresh
        WHERE m.route = pop_at.route
          AND m.id = (SELECT r.id FROM pushpop.messages AS r
                      WHERE r.route = pop_at.route AND r.state = 'ready' AND r.topic = pop_at.topic
                        AND (r.expires_at IS NULL OR r.expires_at > pop_at.popped_at)
                      ORDER BY r.priority DESC, r.state_time, r.seq
                      LIMIT 1
                      FOR UPDATE SKIP LOCKED)
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key, m.lease_until,
                  m.headers, m.expires_at, m.ordering_key;
        RETURN;
    END IF;

    -- A batch: lock its rows into an array first, make their leases, then lease them in
    -- delivery order.
    picked := ARRAY(SELECT r.id FROM pushpop.messages AS r
                    WHERE r.route = pop_at.route AND r.state = 'ready' AND r.topic = pop_at.topic
                      AND (r.expires_at IS NULL OR r.expires_at > pop_at.popped_at)
                    ORDER BY r.priority DESC, r.state_time, r.seq
                    LIMIT pop_at.max_messages
                    FOR UPDATE SKIP LOCKED);
    leases := ARRAY(SELECT pushpop.new_lease(pop_at.route)
                    FROM generate_series(1, cardinality(picked)));
    RETURN QUERY
    WITH taken AS (
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = pop_at.popped_at,
            lease_until = pop_at.popped_at + pop_at.lease_for,
            attempts = m.attempts + 1, lease = p.lease
        FROM unnest(picked, leases) AS p(id, lease)
        WHERE m.route = pop_at.route AND m.id = p.id
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key, m.lease_until,
                  m.headers, m.expires_at, m.ordering_key
    )
    SELECT t.id, t.topic, t.state, t.state_time, t.payload, t.priority, t.attempts,
           t.max_attempts, t.lease, t.created_at, t.error, t.dedup_key, t.lease_until,
           t.headers, t.expires_at, t.ordering_key
    FROM taken AS t JOIN unnest(picked) WITH ORDINALITY AS p(id, n) ON p.id = t.id
    ORDER BY p.n;
END $$;
COMMENT ON FUNCTION pushpop.pop_at(integer, text, interval, integer, timestamptz) IS
    'Internal: the messages part of pop on a distributed installation, delegated to the node that '
    'holds the route''s shard. Promotes the topic''s due scheduled messages and leases up to '
    'max_messages of its ready ones, touching only messages of the route, at popped_at (the '
    'caller''s now()). Callers check the arguments, grants and paused topics first; no role may '
    'call it.';

CREATE OR REPLACE FUNCTION pushpop.pop(
    topic        text,
    lease_for    interval DEFAULT '5 minutes',
    max_messages integer  DEFAULT 1
) RETURNS SETOF pushpop.message LANGUAGE plpgsql
-- Never a bitmap scan: planned from statistics that miss a backlog (autovacuum had not yet
-- analyzed the table since it filled), one would read and sort every ready message of the topic
-- on each pop; the ready index gives them in delivery order whatever the statistics say.
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_bitmapscan = off AS $$
DECLARE
    popped_at timestamptz;
    fresh     uuid;
    picked    uuid[];
BEGIN
    IF NOT coalesce(length(pop.topic) BETWEEN 1 AND 255 AND pop.lease_for > interval '0'
                    AND pop.max_messages >= 1, false) THEN
        PERFORM pushpop.require_topic(pop.topic);
        PERFORM pushpop.require(pop.lease_for > interval '0', 'lease_for must be positive');
        PERFORM pushpop.require(pop.max_messages >= 1, 'max_messages must be at least 1');
    END IF;

    IF pushpop.topic_grants_in_use() THEN
        PERFORM pushpop.require_grant('pop', pop.topic);
    END IF;
    -- A paused topic gives nothing (55_controls.sql); looked up only while a topic is paused.
    IF pushpop.topics_paused()
       AND EXISTS (SELECT FROM pushpop.paused_topics AS p WHERE p.topic = pop.topic) THEN
        RETURN;
    END IF;

    -- On a distributed installation the checks above read tables of the coordinator; the rest
    -- is one call, in a FROM clause, that Citus delegates to the node that holds the topic's
    -- route (pop_at, above), where its statements run locally. The leases carry the route for
    -- the acknowledgements (new_lease).
    IF pushpop.distributed() THEN
        -- now() as a value: Citus would send the function itself, for the worker to evaluate.
        popped_at := now();
        RETURN QUERY SELECT * FROM pushpop.pop_at(pushpop.route_of(pop.topic), pop.topic,
                                                  pop.lease_for, pop.max_messages, popped_at);
        RETURN;
    END IF;

    -- Scheduled messages that are due join the ready ones, all of them, so the order of
    -- delivery holds however many fall due at once.
    IF EXISTS (SELECT FROM pushpop.messages AS s
               WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()) THEN
        WITH due AS MATERIALIZED (
            SELECT s.id FROM pushpop.messages AS s
            WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()
            FOR UPDATE SKIP LOCKED
        )
        UPDATE pushpop.messages AS m SET state = 'ready'
        FROM due WHERE m.id = due.id;
    END IF;

    -- One message: a single UPDATE of the row its sub-select locks, planned once.
    IF pop.max_messages = 1 THEN
        fresh := gen_random_uuid();
        RETURN QUERY
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now(), lease_until = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = fresh
        WHERE m.id = (SELECT r.id FROM pushpop.messages AS r
                      WHERE r.state = 'ready' AND r.topic = pop.topic
                        AND (r.expires_at IS NULL OR r.expires_at > now())
                      ORDER BY r.priority DESC, r.state_time, r.seq
                      LIMIT 1
                      FOR UPDATE SKIP LOCKED)
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key, m.lease_until,
                  m.headers, m.expires_at, m.ordering_key;
        RETURN;
    END IF;

    -- A batch: lock its rows into an array first, then lease them in delivery order.
    picked := ARRAY(SELECT r.id FROM pushpop.messages AS r
                    WHERE r.state = 'ready' AND r.topic = pop.topic
                      AND (r.expires_at IS NULL OR r.expires_at > now())
                    ORDER BY r.priority DESC, r.state_time, r.seq
                    LIMIT pop.max_messages
                    FOR UPDATE SKIP LOCKED);
    RETURN QUERY
    WITH taken AS (
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now(), lease_until = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = gen_random_uuid()
        WHERE m.id = ANY (picked)
        RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                  m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key, m.lease_until,
                  m.headers, m.expires_at, m.ordering_key
    )
    SELECT t.id, t.topic, t.state, t.state_time, t.payload, t.priority, t.attempts,
           t.max_attempts, t.lease, t.created_at, t.error, t.dedup_key, t.lease_until,
           t.headers, t.expires_at, t.ordering_key
    FROM taken AS t JOIN unnest(picked) WITH ORDINALITY AS p(id, n) ON p.id = t.id
    ORDER BY p.n;
END $$;
COMMENT ON FUNCTION pushpop.pop(text, interval, integer) IS
    'Takes up to max_messages ready messages of the topic (highest priority, then oldest, then push '
    'order) and leases them for lease_for: each becomes pending with a fresh lease token, a deadline '
    '(lease_until) and one more attempt. Concurrent callers never wait on each other nor get the same '
    'message. No rows when nothing is ready, when the topic is paused, or for a message past its '
    'expiry. A message blocked behind an earlier one of its ordering_key is not ready: at most one '
    'message of a key is ever pending.';
