-- pushpop functions, part 5c: looking through a topic, and sending messages round again.
--
-- browse reads without taking: it locks nothing and changes no row. retry and
-- retry_discarded return dead messages to the queue; cancel discards one that was never
-- delivered. Unknown ids are not errors: those calls return false.

CREATE OR REPLACE FUNCTION pushpop.browse(
    topic    text,
    state    text    DEFAULT NULL,
    after    uuid    DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS SETOF pushpop.message LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    states     text[] := ARRAY['ready', 'scheduled', 'pending', 'blocked', 'completed',
                               'discarded'];
    c_state    text;
    c_priority integer;
    c_time     timestamptz;
    c_seq      bigint;
    wanted     text;
    left_      integer := browse.max_rows;
    got        integer;
    resuming   boolean;
BEGIN
    PERFORM pushpop.require_topic(browse.topic);
    PERFORM pushpop.require(browse.state IS NULL OR browse.state = ANY (states),
                            format('state must be one of %s (or NULL for all), got %s',
                                   array_to_string(states, ', '),
                                   coalesce(quote_literal(browse.state), 'NULL')));
    PERFORM pushpop.require(browse.max_rows >= 1, 'max_rows must be at least 1');
    IF pushpop.topic_grants_in_use() THEN
        PERFORM pushpop.require_grant('pop', browse.topic);
    END IF;
    IF browse.after IS NOT NULL THEN
        SELECT m.state, m.priority, m.state_time, m.seq INTO c_state, c_priority, c_time, c_seq
        FROM pushpop.messages AS m WHERE m.id = browse.after AND m.topic = browse.topic
          AND (NOT pushpop.distributed() OR m.route = pushpop.route_of(browse.topic));
        PERFORM pushpop.require(c_state IS NOT NULL,
                                format('after must be the id of a message of topic %s; there is '
                                       'no message %s in it (any more)',
                                       quote_literal(browse.topic), browse.after));
    END IF;
    -- One state at a time, in the order above; a cursor resumes inside its message's state, and
    -- the states before it were shown in full on earlier pages.
    FOREACH wanted IN ARRAY states LOOP
        CONTINUE WHEN browse.state IS NOT NULL AND wanted <> browse.state;
        CONTINUE WHEN c_state IS NOT NULL
                      AND array_position(states, wanted) < array_position(states, c_state);
        resuming := wanted = c_state;
        IF wanted = 'ready' AND resuming THEN
            -- pop's order, through pop's index: the rest of the cursor's priority, then lower ones.
            RETURN QUERY
            SELECT r.id, r.topic, r.state, r.state_time, r.payload, r.priority, r.attempts,
                   r.max_attempts, NULL::uuid, r.created_at, r.error, r.dedup_key,
                   NULL::timestamptz, r.headers, r.expires_at, r.ordering_key
            FROM pushpop.messages AS r
            WHERE r.state = 'ready' AND r.topic = browse.topic
              AND (NOT pushpop.distributed() OR r.route = pushpop.route_of(browse.topic))
              AND r.priority = c_priority
              AND (r.state_time, r.seq) > (c_time, c_seq)
            ORDER BY r.priority DESC, r.state_time, r.seq
            LIMIT left_;
            GET DIAGNOSTICS got = ROW_COUNT;
            left_ := left_ - got;
            EXIT WHEN left_ <= 0;
            RETURN QUERY
            SELECT r.id, r.topic, r.state, r.state_time, r.payload, r.priority, r.attempts,
                   r.max_attempts, NULL::uuid, r.created_at, r.error, r.dedup_key,
                   NULL::timestamptz, r.headers, r.expires_at, r.ordering_key
            FROM pushpop.messages AS r
            WHERE r.state = 'ready' AND r.topic = browse.topic
              AND (NOT pushpop.distributed() OR r.route = pushpop.route_of(browse.topic))
              AND r.priority < c_priority
            ORDER BY r.priority DESC, r.state_time, r.seq
            LIMIT left_;
        ELSIF wanted = 'ready' THEN
            RETURN QUERY
            SELECT r.id, r.topic, r.state, r.state_time, r.payload, r.priority, r.attempts,
                   r.max_attempts, NULL::uuid, r.created_at, r.error, r.dedup_key,
                   NULL::timestamptz, r.headers, r.expires_at, r.ordering_key
            FROM pushpop.messages AS r
            WHERE r.state = 'ready' AND r.topic = browse.topic
              AND (NOT pushpop.distributed() OR r.route = pushpop.route_of(browse.topic))
            ORDER BY r.priority DESC, r.state_time, r.seq
            LIMIT left_;
        ELSIF resuming THEN
            -- Oldest first by state_time: when it falls due, was popped or finished.
            RETURN QUERY
            SELECT o.id, o.topic, o.state, o.state_time, o.payload, o.priority, o.attempts,
                   o.max_attempts, NULL::uuid, o.created_at, o.error, o.dedup_key,
                   CASE o.state WHEN 'pending' THEN o.lease_until END, o.headers, o.expires_at,
                   o.ordering_key
            FROM pushpop.messages AS o
            WHERE o.state = wanted AND o.topic = browse.topic
              AND (NOT pushpop.distributed() OR o.route = pushpop.route_of(browse.topic))
              AND o.state_time >= c_time
              AND (o.state_time, o.seq) > (c_time, c_seq)
            ORDER BY o.state_time, o.seq
            LIMIT left_;
        ELSE
            RETURN QUERY
            SELECT o.id, o.topic, o.state, o.state_time, o.payload, o.priority, o.attempts,
                   o.max_attempts, NULL::uuid, o.created_at, o.error, o.dedup_key,
                   CASE o.state WHEN 'pending' THEN o.lease_until END, o.headers, o.expires_at,
                   o.ordering_key
            FROM pushpop.messages AS o
            WHERE o.state = wanted AND o.topic = browse.topic
              AND (NOT pushpop.distributed() OR o.route = pushpop.route_of(browse.topic))
            ORDER BY o.state_time, o.seq
            LIMIT left_;
        END IF;
        GET DIAGNOSTICS got = ROW_COUNT;
        left_ := left_ - got;
        EXIT WHEN left_ <= 0;
    END LOOP;
END $$;
COMMENT ON FUNCTION pushpop.browse(text, text, uuid, integer) IS
    'Up to max_rows messages of the topic, without taking them: it locks nothing, changes nothing, '
    'and never shows a lease token. state is scheduled, ready, pending, blocked, completed or '
    'discarded (NULL: all, in that order: ready, scheduled, pending, blocked, completed, discarded). '
    'Ready messages come '
    'in the order pop delivers them, the others oldest first by state_time. after is the id of the '
    'last message of the previous page (keyset pagination: every page costs what the first costs). '
    'Needs the pop grant on the topic once topic grants are in use.';

CREATE OR REPLACE FUNCTION pushpop.retry(id uuid)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    retried_topic text;
    retried_state text;
    -- NULL on a single server. On a distributed one the message's route, read without a lock
    -- from every shard, so that the UPDATE below runs on one.
    id_route      integer;
BEGIN
    PERFORM pushpop.require(retry.id IS NOT NULL, 'id must not be NULL');
    IF pushpop.distributed() THEN
        SELECT m.route INTO id_route FROM pushpop.messages AS m
        WHERE m.id = retry.id AND m.state = 'discarded' LIMIT 1;
    END IF;
    BEGIN
        -- A message of a key that has a live message waits behind it, next in line.
        UPDATE pushpop.messages AS m
        SET state = CASE WHEN m.ordering_key IS NOT NULL AND EXISTS (
                             SELECT FROM pushpop.messages AS h
                             WHERE h.topic = m.topic AND h.ordering_key = m.ordering_key
                               AND h.state IN ('scheduled', 'ready', 'pending')
                               AND (NOT pushpop.distributed() OR h.route = id_route))
                         THEN 'blocked' ELSE 'ready' END,
            state_time = now(), attempts = 0, expires_at = NULL
        WHERE m.id = retry.id AND m.state = 'discarded'
          AND (NOT pushpop.distributed() OR m.route = id_route)
        RETURNING m.topic, m.state INTO retried_topic, retried_state;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'pushpop: message % cannot be retried: a live message of its topic holds its '
                        'dedup_key, or its ordering_key has just become live', retry.id
            USING ERRCODE = 'unique_violation';
    END;
    IF retried_topic IS NULL THEN
        RETURN false;
    END IF;
    IF retried_state = 'ready'
       AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = retried_topic) THEN
        PERFORM pushpop.wake(ARRAY[retried_topic]);
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.retry(uuid) IS
    'Returns a discarded message (failed, cancelled or expired) to the queue, ready now, with a fresh '
    'count of attempts and no expiry; its error stays until its next failure. A message whose '
    'ordering_key has a live message is blocked behind it, next in line. False if there is no '
    'discarded message with this id. Raises unique_violation (23505) if a live message of its topic '
    'holds its dedup_key.';

CREATE OR REPLACE FUNCTION pushpop.retry_discarded(topic text, max_rows integer DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    retried     integer;
    -- NULL on a single server; on a distributed one each statement names the topic's route.
    topic_route integer := CASE WHEN pushpop.distributed() THEN pushpop.route_of(retry_discarded.topic) END;
BEGIN
    PERFORM pushpop.require_topic(retry_discarded.topic);
    PERFORM pushpop.require(retry_discarded.max_rows IS NULL OR retry_discarded.max_rows >= 1,
                            'max_rows must be at least 1 (or NULL for all)');
    WITH dead AS MATERIALIZED (
        SELECT d.id, d.dedup_key, d.ordering_key, d.state_time, d.seq FROM pushpop.messages AS d
        WHERE d.state = 'discarded' AND d.topic = retry_discarded.topic
          AND (NOT pushpop.distributed() OR d.route = topic_route)
        ORDER BY d.state_time, d.seq
        LIMIT retry_discarded.max_rows
        FOR UPDATE SKIP LOCKED
    ), eligible AS (
        -- A dedup_key may be live once: a message whose key a live message holds stays
        -- discarded, and of several with one key only the oldest is retried.
        SELECT c.id, c.ordering_key, c.seq FROM (
            SELECT d.id, d.dedup_key, d.ordering_key, d.seq,
                   row_number() OVER (PARTITION BY d.dedup_key ORDER BY d.state_time, d.seq) AS n
            FROM dead AS d
        ) AS c
        WHERE c.dedup_key IS NULL
           OR (c.n = 1 AND NOT EXISTS (
                   SELECT FROM pushpop.messages AS l
                   WHERE l.topic = retry_discarded.topic AND l.dedup_key = c.dedup_key
                     AND l.state IN ('scheduled', 'ready', 'pending', 'blocked')
                     AND (NOT pushpop.distributed() OR l.route = topic_route)))
    ), chosen AS (
        -- Of the messages of one ordering_key, the first in push order is ready unless the key
        -- has a live message; the others wait behind it.
        SELECT e.id,
               CASE WHEN e.ordering_key IS NULL THEN 'ready'
                    WHEN row_number() OVER (PARTITION BY e.ordering_key ORDER BY e.seq) = 1
                         AND NOT EXISTS (
                             SELECT FROM pushpop.messages AS h
                             WHERE h.topic = retry_discarded.topic
                               AND h.ordering_key = e.ordering_key
                               AND h.state IN ('scheduled', 'ready', 'pending')
                               AND (NOT pushpop.distributed() OR h.route = topic_route)) THEN 'ready'
                    ELSE 'blocked' END AS new_state
        FROM eligible AS e
    )
    UPDATE pushpop.messages AS m
    SET state = chosen.new_state, state_time = now(), attempts = 0, expires_at = NULL
    FROM chosen WHERE m.id = chosen.id AND (NOT pushpop.distributed() OR m.route = topic_route);
    GET DIAGNOSTICS retried = ROW_COUNT;
    IF retried > 0 AND EXISTS (SELECT FROM pushpop.waiting AS w
                               WHERE w.topic = retry_discarded.topic) THEN
        PERFORM pushpop.wake(ARRAY[retry_discarded.topic]);
    END IF;
    RETURN retried;
END $$;
COMMENT ON FUNCTION pushpop.retry_discarded(text, integer) IS
    'retry for the topic''s discarded messages (failed, cancelled and expired ones), oldest first, at '
    'most max_rows (NULL: all). A message whose dedup_key a live message holds stays discarded; '
    'the messages of an ordering_key go back in push order, behind its live message if it has one. '
    'Returns how many it retried.';

CREATE OR REPLACE FUNCTION pushpop.cancel(id uuid)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done_topic text;
    done_key   text;
    -- NULL on a single server; on a distributed one the message's route (as in retry).
    id_route   integer;
BEGIN
    PERFORM pushpop.require(cancel.id IS NOT NULL, 'id must not be NULL');
    IF pushpop.distributed() THEN
        SELECT m.route INTO id_route FROM pushpop.messages AS m
        WHERE m.id = cancel.id AND m.state IN ('scheduled', 'ready', 'blocked') LIMIT 1;
    END IF;
    -- A pop that holds the row wins: once it commits the message is pending, and untouched here.
    UPDATE pushpop.messages AS m
    SET state = 'discarded', state_time = now(), error = 'cancelled'
    WHERE m.id = cancel.id AND m.state IN ('scheduled', 'ready', 'blocked')
      AND (NOT pushpop.distributed() OR m.route = id_route)
    RETURNING m.topic, m.ordering_key INTO done_topic, done_key;
    IF done_key IS NOT NULL THEN
        PERFORM pushpop.unblock(ARRAY[done_topic], ARRAY[done_key]);
    END IF;
    RETURN done_topic IS NOT NULL;
END $$;
COMMENT ON FUNCTION pushpop.cancel(uuid) IS
    'Discards a ready, scheduled or blocked message with error ''cancelled'': it is never delivered '
    '(the next message of its ordering_key takes its place). False, and '
    'nothing changes, for a pending message (its consumer holds it: it finishes or fails as usual), a '
    'finished one, or an unknown id.';
