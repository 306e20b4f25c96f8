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
    -- NULL on a single server, where every route condition below folds away. On a distributed
    -- installation each statement names the topic's route, so it runs on the one node that
    -- holds the topic, and the leases carry it for the acknowledgements (new_lease).
    topic_route integer := CASE WHEN pushpop.distributed() THEN pushpop.route_of(pop.topic) END;
    fresh       uuid;
    picked      uuid[];
    leases      uuid[];
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

    -- Scheduled messages that are due join the ready ones, all of them, so the order of
    -- delivery holds however many fall due at once.
    IF EXISTS (SELECT FROM pushpop.messages AS s
               WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()
                 AND (NOT pushpop.distributed() OR s.route = topic_route)) THEN
        WITH due AS MATERIALIZED (
            SELECT s.id FROM pushpop.messages AS s
            WHERE s.state = 'scheduled' AND s.topic = pop.topic AND s.state_time <= now()
              AND (NOT pushpop.distributed() OR s.route = topic_route)
            FOR UPDATE SKIP LOCKED
        )
        UPDATE pushpop.messages AS m SET state = 'ready'
        FROM due WHERE m.id = due.id AND (NOT pushpop.distributed() OR m.route = topic_route);
    END IF;

    -- One message: a single UPDATE of the row its sub-select locks, planned once. Its lease is
    -- made first: Citus refuses a volatile function in an UPDATE of a distributed table.
    IF pop.max_messages = 1 THEN
        fresh := CASE WHEN pushpop.distributed() THEN pushpop.new_lease(topic_route)
                      ELSE gen_random_uuid() END;
        RETURN QUERY
        UPDATE pushpop.messages AS m
        SET state = 'pending', state_time = now(), lease_until = now() + pop.lease_for,
            attempts = m.attempts + 1, lease = fresh
        WHERE (NOT pushpop.distributed() OR m.route = topic_route)
          AND m.id = (SELECT r.id FROM pushpop.messages AS r
                      WHERE r.state = 'ready' AND r.topic = pop.topic
                        AND (r.expires_at IS NULL OR r.expires_at > now())
                        AND (NOT pushpop.distributed() OR r.route = topic_route)
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
                      AND (NOT pushpop.distributed() OR r.route = topic_route)
                    ORDER BY r.priority DESC, r.state_time, r.seq
                    LIMIT pop.max_messages
                    FOR UPDATE SKIP LOCKED);
    IF pushpop.distributed() THEN
        -- The leases first, as for one message; the UPDATE names the route.
        leases := ARRAY(SELECT pushpop.new_lease(topic_route)
                        FROM generate_series(1, cardinality(picked)));
        RETURN QUERY
        WITH taken AS (
            UPDATE pushpop.messages AS m
            SET state = 'pending', state_time = now(), lease_until = now() + pop.lease_for,
                attempts = m.attempts + 1, lease = p.lease
            FROM unnest(picked, leases) AS p(id, lease)
            WHERE m.route = topic_route AND m.id = p.id
            RETURNING m.id, m.topic, m.state, m.state_time, m.payload, m.priority, m.attempts,
                      m.max_attempts, m.lease, m.created_at, m.error, m.dedup_key, m.lease_until,
                      m.headers, m.expires_at, m.ordering_key
        )
        SELECT t.id, t.topic, t.state, t.state_time, t.payload, t.priority, t.attempts,
               t.max_attempts, t.lease, t.created_at, t.error, t.dedup_key, t.lease_until,
               t.headers, t.expires_at, t.ordering_key
        FROM taken AS t JOIN unnest(picked) WITH ORDINALITY AS p(id, n) ON p.id = t.id
        ORDER BY p.n;
        RETURN;
    END IF;
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
