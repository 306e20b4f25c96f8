-- pushpop functions, part 4: acknowledgements.
--
-- Each is fenced by the lease token pop issued: it changes the message only while it is
-- pending under that very lease, and otherwise returns false and changes nothing (the lease
-- ran out and the message may be with another consumer). A lease is set only while a message
-- is pending, so matching (id, lease) is the whole test. On a distributed installation the
-- lease also says where the message lives (pushpop.lease_route): each statement names that
-- route, so it runs on the one node that holds the message; on a single server that condition
-- folds away.

-- When the live message of a key finishes, the oldest blocked message of the key takes its
-- place. Only the call that finishes a key's live message unblocks, and it holds that row, so
-- two calls never unblock one key at once; a blocked message cancelled in between is passed by
-- on the next round.
CREATE OR REPLACE FUNCTION pushpop.unblock(topics text[], ordering_keys text[])
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found_ integer;
    moved  integer;
    woken  text[];
    -- Citus refuses a function other than IMMUTABLE inside CASE in an UPDATE.
    at_    timestamptz := now();
    -- On a distributed installation each call handles the keys of one topic (below), so each
    -- statement names one route.
    one_route integer := CASE WHEN pushpop.distributed() THEN pushpop.route_of(unblock.topics[1]) END;
    one_topic text;
BEGIN
    IF pushpop.distributed()
       AND EXISTS (SELECT FROM unnest(unblock.topics) AS t WHERE t <> unblock.topics[1]) THEN
        FOR one_topic IN SELECT DISTINCT t FROM unnest(unblock.topics) AS t LOOP
            PERFORM pushpop.unblock(
                ARRAY(SELECT f.topic FROM unnest(unblock.topics, unblock.ordering_keys) AS f(topic, k)
                      WHERE f.topic = one_topic),
                ARRAY(SELECT f.k FROM unnest(unblock.topics, unblock.ordering_keys) AS f(topic, k)
                      WHERE f.topic = one_topic));
        END LOOP;
        RETURN;
    END IF;
    LOOP
        WITH freed AS (
            SELECT DISTINCT f.topic, f.ordering_key
            FROM unnest(unblock.topics, unblock.ordering_keys) AS f(topic, ordering_key)
            WHERE f.ordering_key IS NOT NULL
              AND NOT EXISTS (SELECT FROM pushpop.messages AS h
                              WHERE h.topic = f.topic AND h.ordering_key = f.ordering_key
                                AND h.state IN ('scheduled', 'ready', 'pending')
                                AND (NOT pushpop.distributed() OR h.route = one_route))
        ), next AS MATERIALIZED (
            SELECT n.id FROM freed AS f
            CROSS JOIN LATERAL (SELECT b.id FROM pushpop.messages AS b
                                WHERE b.state = 'blocked' AND b.topic = f.topic
                                  AND b.ordering_key = f.ordering_key
                                  AND (NOT pushpop.distributed() OR b.route = one_route)
                                ORDER BY b.seq LIMIT 1) AS n
        ), moved_rows AS (
            UPDATE pushpop.messages AS m
            SET state = CASE WHEN m.state_time > at_ THEN 'scheduled' ELSE 'ready' END
            FROM next WHERE m.id = next.id AND m.state = 'blocked'
              AND (NOT pushpop.distributed() OR m.route = one_route)
            RETURNING m.topic, m.state
        )
        SELECT (SELECT count(*) FROM next), count(*),
               array_agg(DISTINCT r.topic) FILTER (WHERE r.state = 'ready')
        INTO found_, moved, woken FROM moved_rows AS r;
        IF woken IS NOT NULL
           AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = ANY (woken)) THEN
            PERFORM pushpop.wake(woken);
        END IF;
        EXIT WHEN moved = found_;
    END LOOP;
END $$;
COMMENT ON FUNCTION pushpop.unblock(text[], text[]) IS
    'Internal: for each (topics[i], ordering_keys[i]) that has no scheduled, ready or pending '
    'message, makes the oldest blocked message of that key ready (or scheduled, if not yet due).';

-- The same for one key whose live message its caller has just finished (complete, discard):
-- one UPDATE in the usual case, the careful loop above only if the next one was cancelled in
-- between.
CREATE OR REPLACE FUNCTION pushpop.unblock_next(topic text, ordering_key text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    next_state text;
    at_        timestamptz := now();
    key_route  integer := CASE WHEN pushpop.distributed() THEN pushpop.route_of(unblock_next.topic) END;
BEGIN
    UPDATE pushpop.messages AS m
    SET state = CASE WHEN m.state_time > at_ THEN 'scheduled' ELSE 'ready' END
    WHERE m.id = (SELECT b.id FROM pushpop.messages AS b
                  WHERE b.state = 'blocked' AND b.topic = unblock_next.topic
                    AND b.ordering_key = unblock_next.ordering_key
                    AND (NOT pushpop.distributed() OR b.route = key_route)
                  ORDER BY b.seq LIMIT 1)
      AND m.state = 'blocked' AND (NOT pushpop.distributed() OR m.route = key_route)
    RETURNING m.state INTO next_state;
    IF next_state = 'ready' THEN
        IF EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = unblock_next.topic) THEN
            PERFORM pushpop.wake(ARRAY[unblock_next.topic]);
        END IF;
    ELSIF next_state IS NULL THEN
        PERFORM pushpop.unblock(ARRAY[unblock_next.topic], ARRAY[unblock_next.ordering_key]);
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.unblock_next(text, text) IS
    'Internal: after its caller finished the live message of (topic, ordering_key), makes the '
    'oldest blocked message of that key ready (or scheduled, if not yet due).';

CREATE OR REPLACE FUNCTION pushpop.complete(id uuid, lease uuid)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done_topic text;
    done_key   text;
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'completed', state_time = now(), lease = NULL
    WHERE m.id = complete.id AND m.lease = complete.lease
      AND (NOT pushpop.distributed() OR m.route = pushpop.lease_route(complete.lease))
    RETURNING m.topic, m.ordering_key INTO done_topic, done_key;
    IF done_key IS NOT NULL THEN
        PERFORM pushpop.unblock_next(done_topic, done_key);
    END IF;
    RETURN done_topic IS NOT NULL;
END $$;
COMMENT ON FUNCTION pushpop.complete(uuid, uuid) IS
    'Marks a pending message completed (the next message of its ordering_key, if any, becomes '
    'ready). Fenced: false, and nothing changes, unless the message is pending under this lease.';

CREATE OR REPLACE FUNCTION pushpop.complete_many(ids uuid[], leases uuid[])
RETURNS boolean[] LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done        boolean[];
    done_topics text[];
    done_keys   text[];
    one_route   integer;
    row_        record;
BEGIN
    IF NOT coalesce(cardinality(complete_many.ids) = cardinality(complete_many.leases), false) THEN
        PERFORM pushpop.require(complete_many.ids IS NOT NULL, 'ids must not be NULL');
        PERFORM pushpop.require(complete_many.leases IS NOT NULL, 'leases must not be NULL');
        PERFORM pushpop.require(false, format('ids and leases must be as long as each other, got %s and %s',
                                              cardinality(complete_many.ids), cardinality(complete_many.leases)));
    END IF;
    IF pushpop.distributed() THEN
        -- One statement per route the leases carry: a batch popped from one topic is one
        -- statement on one node.
        done := array_fill(false, ARRAY[cardinality(complete_many.ids)]);
        FOR one_route IN SELECT DISTINCT pushpop.lease_route(l) FROM unnest(complete_many.leases) AS l
                         WHERE l IS NOT NULL LOOP
            FOR row_ IN
                WITH completed AS (
                    UPDATE pushpop.messages AS m
                    SET state = 'completed', state_time = now(), lease = NULL
                    FROM unnest(complete_many.ids, complete_many.leases) WITH ORDINALITY AS d(id, lease, n)
                    WHERE m.route = one_route AND m.id = d.id AND m.lease = d.lease
                    RETURNING d.n, m.topic, m.ordering_key
                )
                SELECT c.n, c.topic, c.ordering_key FROM completed AS c
            LOOP
                done[row_.n] := true;
                IF row_.ordering_key IS NOT NULL THEN
                    done_topics := done_topics || row_.topic;
                    done_keys := done_keys || row_.ordering_key;
                END IF;
            END LOOP;
        END LOOP;
        IF done_keys IS NOT NULL THEN
            PERFORM pushpop.unblock(done_topics, done_keys);
        END IF;
        RETURN done;
    END IF;
    WITH completed AS (
        UPDATE pushpop.messages AS m
        SET state = 'completed', state_time = now(), lease = NULL
        FROM unnest(complete_many.ids, complete_many.leases) WITH ORDINALITY AS d(id, lease, n)
        WHERE m.id = d.id AND m.lease = d.lease
        RETURNING d.n, m.topic, m.ordering_key
    )
    SELECT coalesce(array_agg(c.n IS NOT NULL ORDER BY i.n), '{}'),
           array_agg(c.topic) FILTER (WHERE c.ordering_key IS NOT NULL),
           array_agg(c.ordering_key) FILTER (WHERE c.ordering_key IS NOT NULL)
    INTO done, done_topics, done_keys
    FROM generate_series(1, cardinality(complete_many.ids)) AS i(n)
    LEFT JOIN completed AS c ON c.n = i.n;
    IF done_keys IS NOT NULL THEN
        PERFORM pushpop.unblock(done_topics, done_keys);
    END IF;
    RETURN done;
END $$;
COMMENT ON FUNCTION pushpop.complete_many(uuid[], uuid[]) IS
    'Completes many pending messages in one statement: ids[i] under leases[i], each fenced like '
    'complete. Returns one boolean per input, in input order: true where that delivery was completed.';

CREATE OR REPLACE FUNCTION pushpop.discard(id uuid, lease uuid, reason text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done_topic text;
    done_key   text;
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'discarded', state_time = now(), lease = NULL,
        error = coalesce(discard.reason, m.error)
    WHERE m.id = discard.id AND m.lease = discard.lease
      AND (NOT pushpop.distributed() OR m.route = pushpop.lease_route(discard.lease))
    RETURNING m.topic, m.ordering_key INTO done_topic, done_key;
    IF done_key IS NOT NULL THEN
        PERFORM pushpop.unblock_next(done_topic, done_key);
    END IF;
    RETURN done_topic IS NOT NULL;
END $$;
COMMENT ON FUNCTION pushpop.discard(uuid, uuid, text) IS
    'Marks a pending message discarded (it will not be delivered again), keeping reason in error; '
    'the next message of its ordering_key, if any, becomes ready. Fenced: false unless the message '
    'is pending under this lease.';

CREATE OR REPLACE FUNCTION pushpop.defer(
    id     uuid,
    lease  uuid,
    delay  interval DEFAULT '0',
    reason text     DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
      AND (NOT pushpop.distributed() OR m.route = pushpop.lease_route(defer.lease))
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
    'A message with an ordering_key keeps its key blocked until it is completed or discarded. '
    'Fenced: false unless the message is pending under this lease.';

-- Only lease_until changes, which no index covers: a HOT update, in place on its page.
CREATE OR REPLACE FUNCTION pushpop.extend(id uuid, lease uuid, lease_for interval DEFAULT '5 minutes')
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce(extend.lease_for > interval '0', false) THEN
        PERFORM pushpop.require(false, 'lease_for must be positive');
    END IF;
    UPDATE pushpop.messages AS m
    SET lease_until = now() + extend.lease_for
    WHERE m.id = extend.id AND m.lease = extend.lease
      AND (NOT pushpop.distributed() OR m.route = pushpop.lease_route(extend.lease));
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.extend(uuid, uuid, interval) IS
    'Moves the lease deadline of a pending message to now() + lease_for. Fenced: false unless the '
    'message is pending under this lease.';
