-- pushpop functions, part 5: looking at messages without taking them.

-- PL/pgSQL, not SQL: Citus cannot plan a SQL function's parameters. On a distributed
-- installation the lookup goes first to the shard of the route an id made by push carries,
-- and to every shard only when that finds nothing (an id the caller chose, a fanned-out push);
-- a single server makes the second lookup alone. may() is applied here, never in a statement
-- sent to a Citus worker.
CREATE OR REPLACE FUNCTION pushpop.find(id uuid)
RETURNS SETOF pushpop.message LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found_ pushpop.message;
    any_   boolean := false;
BEGIN
    IF pushpop.distributed() THEN
        FOR found_ IN
            SELECT m.id, m.topic, CASE m.state WHEN 'scheduled' THEN 'ready' ELSE m.state END,
                   m.state_time, m.payload, m.priority, m.attempts, m.max_attempts, NULL::uuid,
                   m.created_at, m.error, m.dedup_key,
                   CASE m.state WHEN 'pending' THEN m.lease_until END, m.headers, m.expires_at,
                   m.ordering_key
            FROM pushpop.messages AS m
            WHERE m.route = pushpop.lease_route(find.id) AND m.id = find.id
        LOOP
            any_ := true;
            IF NOT pushpop.topic_grants_in_use() OR pushpop.may('pop', found_.topic) THEN
                RETURN NEXT found_;
            END IF;
        END LOOP;
        IF any_ THEN
            RETURN;
        END IF;
    END IF;
    FOR found_ IN
        SELECT m.id, m.topic, CASE m.state WHEN 'scheduled' THEN 'ready' ELSE m.state END,
               m.state_time, m.payload, m.priority, m.attempts, m.max_attempts, NULL::uuid,
               m.created_at, m.error, m.dedup_key,
               CASE m.state WHEN 'pending' THEN m.lease_until END, m.headers, m.expires_at,
               m.ordering_key
        FROM pushpop.messages AS m
        WHERE m.id = find.id OR m.fanout_of = find.id
        ORDER BY m.topic
    LOOP
        IF NOT pushpop.topic_grants_in_use() OR pushpop.may('pop', found_.topic) THEN
            RETURN NEXT found_;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION pushpop.find(uuid) IS
    'Returns the message with this id, in whatever state, or no row if there is none (or it was '
    'cleaned up, or its topic is not granted to the caller); for the id of a push that fanned out, '
    'its copies, one row per subscriber topic in topic order. Its lease token is never shown: only '
    'the consumer that popped it holds it.';

-- Each state is counted through its own partial index, not by reading every row.
CREATE OR REPLACE FUNCTION pushpop.stats()
RETURNS TABLE (topic text, ready bigint, scheduled bigint, pending bigint, completed bigint,
               discarded bigint, oldest_ready timestamptz, paused boolean, blocked bigint)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH counts AS (
        SELECT r.topic, count(*) AS ready, 0::bigint AS scheduled, 0::bigint AS pending,
               0::bigint AS completed, 0::bigint AS discarded, min(r.state_time) AS oldest_ready,
               0::bigint AS blocked
        FROM pushpop.messages AS r WHERE r.state = 'ready' GROUP BY r.topic
        UNION ALL
        SELECT s.topic, count(*) FILTER (WHERE s.state_time <= now()),
               count(*) FILTER (WHERE s.state_time > now()), 0, 0, 0,
               min(s.state_time) FILTER (WHERE s.state_time <= now()), 0
        FROM pushpop.messages AS s WHERE s.state = 'scheduled' GROUP BY s.topic
        UNION ALL
        SELECT p.topic, 0, 0, count(*), 0, 0, NULL, 0
        FROM pushpop.messages AS p WHERE p.state = 'pending' GROUP BY p.topic
        UNION ALL
        SELECT b.topic, 0, 0, 0, 0, 0, NULL, count(*)
        FROM pushpop.messages AS b WHERE b.state = 'blocked' GROUP BY b.topic
        UNION ALL
        SELECT f.topic, 0, 0, 0, count(*) FILTER (WHERE f.state = 'completed'),
               count(*) FILTER (WHERE f.state = 'discarded'), NULL, 0
        FROM pushpop.messages AS f WHERE f.state IN ('completed', 'discarded') GROUP BY f.topic
        UNION ALL
        SELECT z.topic, 0, 0, 0, 0, 0, NULL, 0 FROM pushpop.paused_topics AS z
    )
    SELECT c.topic, sum(c.ready)::bigint, sum(c.scheduled)::bigint, sum(c.pending)::bigint,
           sum(c.completed)::bigint, sum(c.discarded)::bigint, min(c.oldest_ready),
           EXISTS (SELECT FROM pushpop.paused_topics AS z WHERE z.topic = c.topic),
           sum(c.blocked)::bigint
    FROM counts AS c
    WHERE NOT pushpop.topic_grants_in_use() OR pushpop.may('pop', c.topic)
    GROUP BY c.topic
    ORDER BY c.topic
$$;
COMMENT ON FUNCTION pushpop.stats() IS
    'One row per topic: messages ready now, scheduled for later, pending, completed and discarded, '
    'the earliest state_time among those ready now, whether the topic is paused, and messages '
    'blocked behind an earlier message of their ordering_key. Topics not granted to the caller are '
    'left out.';

CREATE OR REPLACE FUNCTION pushpop.schema_version()
RETURNS integer LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(s.version) FROM pushpop.schema_migrations AS s
$$;
COMMENT ON FUNCTION pushpop.schema_version() IS
    'The newest numbered migration applied to this database. A client that knows fewer was made '
    'for an older schema: upgrade it.';

-- Finished messages per minute, read from the finished index alone (no table visits).
-- PL/pgSQL, not SQL: Citus cannot plan a SQL function's parameters. On a distributed
-- installation the shards count per minute and topic, and may() is applied on the coordinator.
CREATE OR REPLACE FUNCTION pushpop.throughput(since interval DEFAULT '1 hour', topic text DEFAULT NULL)
RETURNS TABLE (minute timestamptz, completed bigint, discarded bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pushpop.distributed() THEN
        RETURN QUERY
        WITH per_topic AS MATERIALIZED (
            SELECT date_trunc('minute', f.state_time) AS at_minute, f.topic AS of_topic,
                   count(*) FILTER (WHERE f.state = 'completed') AS n_completed,
                   count(*) FILTER (WHERE f.state = 'discarded') AS n_discarded
            FROM pushpop.messages AS f
            WHERE f.state IN ('completed', 'discarded') AND f.state_time > now() - throughput.since
              AND (throughput.topic IS NULL OR f.topic = throughput.topic)
            GROUP BY 1, 2
        )
        SELECT t.at_minute, sum(t.n_completed)::bigint, sum(t.n_discarded)::bigint
        FROM per_topic AS t
        WHERE NOT pushpop.topic_grants_in_use() OR pushpop.may('pop', t.of_topic)
        GROUP BY 1
        ORDER BY 1;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT date_trunc('minute', f.state_time),
           count(*) FILTER (WHERE f.state = 'completed'),
           count(*) FILTER (WHERE f.state = 'discarded')
    FROM pushpop.messages AS f
    WHERE f.state IN ('completed', 'discarded') AND f.state_time > now() - throughput.since
      AND (throughput.topic IS NULL OR f.topic = throughput.topic)
      AND (NOT pushpop.topic_grants_in_use() OR pushpop.may('pop', f.topic))
    GROUP BY 1
    ORDER BY 1;
END $$;
COMMENT ON FUNCTION pushpop.throughput(interval, text) IS
    'Per minute of the last since (one hour by default): how many messages were completed and '
    'discarded, of one topic or of all (NULL) the caller may see. Minutes with none are left out. '
    'Messages deleted by cleanup no longer count.';

CREATE OR REPLACE FUNCTION pushpop.maintenance_leader()
RETURNS uuid LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.worker FROM pushpop.maintenance_leader AS l WHERE l.until > now()
$$;
COMMENT ON FUNCTION pushpop.maintenance_leader() IS
    'The id of the worker that runs maintenance for all now (pushpop.workers() lists it), or NULL '
    'while none leads.';
