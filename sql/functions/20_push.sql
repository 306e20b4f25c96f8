-- pushpop functions, part 2: push.
--
-- A push inserts one row. It notifies only when a consumer waits for the topic
-- (70_wakeups.sql): a NOTIFY makes its transaction take a server-wide lock at commit, so
-- pushes under load, when every consumer is busy, never notify. A push to a topic with
-- subscribers (15_subscriptions.sql) inserts one copy per subscriber topic instead.

CREATE OR REPLACE FUNCTION pushpop.set_max_payload_bytes(max_bytes integer)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require(set_max_payload_bytes.max_bytes BETWEEN 1 AND 1073741824,
                            'max_bytes must be between 1 and 1073741824 (1 GiB)');
    CALL pushpop.define_setting('max_payload_bytes', 'integer', set_max_payload_bytes.max_bytes::text);
    RETURN set_max_payload_bytes.max_bytes;
END $$;
COMMENT ON FUNCTION pushpop.set_max_payload_bytes(integer) IS
    'Sets the largest payload push and push_many accept in this database, in bytes (1 to 1 GiB), '
    'and returns it. Pushes check the new limit from their next transaction on. '
    'Messages already queued are not affected.';

-- max_payload_bytes() keeps the limit this database has (1 MiB on a new one).
DO $$
DECLARE
    limit_now integer := 1048576;
BEGIN
    IF to_regprocedure('pushpop.max_payload_bytes()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.max_payload_bytes()' INTO limit_now;
    END IF;
    PERFORM pushpop.set_max_payload_bytes(limit_now);
END $$;
COMMENT ON FUNCTION pushpop.max_payload_bytes() IS
    'The largest payload, in bytes, that push and push_many accept in this database (default 1048576).';

CREATE OR REPLACE FUNCTION pushpop.set_max_header_bytes(max_bytes integer)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require(set_max_header_bytes.max_bytes BETWEEN 2 AND 1048576,
                            'max_bytes must be between 2 and 1048576 (1 MiB)');
    CALL pushpop.define_setting('max_header_bytes', 'integer', set_max_header_bytes.max_bytes::text);
    RETURN set_max_header_bytes.max_bytes;
END $$;
COMMENT ON FUNCTION pushpop.set_max_header_bytes(integer) IS
    'Sets the largest headers object push and push_many accept in this database, in bytes of its '
    'JSON text (2 to 1 MiB), and returns it. Messages already queued are not affected.';

-- max_header_bytes() keeps the limit this database has (8 KiB on a new one).
DO $$
DECLARE
    limit_now integer := 8192;
BEGIN
    IF to_regprocedure('pushpop.max_header_bytes()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.max_header_bytes()' INTO limit_now;
    END IF;
    PERFORM pushpop.set_max_header_bytes(limit_now);
END $$;
COMMENT ON FUNCTION pushpop.max_header_bytes() IS
    'The largest headers object, in bytes of its JSON text, that push and push_many accept in this '
    'database (default 8192).';

-- Headers are a JSON object of strings: what every language can read back as a map.
CREATE OR REPLACE FUNCTION pushpop.require_headers(headers jsonb)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad_key text;
BEGIN
    PERFORM pushpop.require(jsonb_typeof(require_headers.headers) = 'object',
                            format('headers must be a JSON object of strings, got a %s',
                                   jsonb_typeof(require_headers.headers)));
    SELECT h.key INTO bad_key FROM jsonb_each(require_headers.headers) AS h
    WHERE jsonb_typeof(h.value) <> 'string' LIMIT 1;
    PERFORM pushpop.require(bad_key IS NULL,
                            format('headers must be a JSON object of strings: %s is not a string',
                                   quote_literal(bad_key)));
    IF octet_length(require_headers.headers::text) > pushpop.max_header_bytes() THEN
        RAISE EXCEPTION 'pushpop: headers are % bytes, more than the limit of % bytes',
            octet_length(require_headers.headers::text), pushpop.max_header_bytes()
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'pushpop.set_max_header_bytes() changes the limit of this database.';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require_headers(jsonb) IS
    'Raises invalid_parameter_value (22023) unless headers is a JSON object of string values, and '
    'program_limit_exceeded (54000) when its text is longer than pushpop.max_header_bytes().';

-- The one insert behind push and push_many, for a message or a fan-out copy. A message with an
-- ordering_key is blocked while its key has a live message (scheduled, ready or pending): FOR
-- SHARE holds that one until this push commits, so it cannot finish in between and leave the
-- new message blocked with nothing ahead of it. Pushes of one key share that lock, so they
-- never wait for each other.
CREATE OR REPLACE FUNCTION pushpop.enqueue(
    topic        text,
    payload      bytea,
    delay        interval,
    priority     integer,
    id           uuid,
    dedup_key    text,
    max_attempts integer,
    expires_in   interval,
    headers      jsonb,
    ordering_key text,
    fanout_of    uuid
) RETURNS uuid LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_state text := CASE WHEN enqueue.delay > interval '0' THEN 'scheduled' ELSE 'ready' END;
    -- NULL on a single server; on a distributed one, every statement below names it, so it
    -- runs on the one node that holds the topic.
    topic_route integer := CASE WHEN pushpop.distributed() THEN pushpop.route_of(enqueue.topic) END;
    got         uuid;
    taken_by    text;
BEGIN
    LOOP
        IF enqueue.ordering_key IS NOT NULL THEN
            PERFORM FROM pushpop.messages AS h
            WHERE h.topic = enqueue.topic AND h.ordering_key = enqueue.ordering_key
              AND h.state IN ('scheduled', 'ready', 'pending')
              AND (NOT pushpop.distributed() OR h.route = topic_route)
            FOR SHARE;
            first_state := CASE WHEN FOUND THEN 'blocked'
                                WHEN enqueue.delay > interval '0' THEN 'scheduled'
                                ELSE 'ready' END;
        END IF;
        INSERT INTO pushpop.messages AS m
            (id, route, topic, state, state_time, priority, max_attempts, dedup_key, payload,
             expires_at, headers, ordering_key, fanout_of)
        VALUES (enqueue.id, topic_route, enqueue.topic, first_state, now() + enqueue.delay,
                enqueue.priority,
                enqueue.max_attempts, enqueue.dedup_key, enqueue.payload,
                now() + enqueue.expires_in, enqueue.headers, enqueue.ordering_key,
                enqueue.fanout_of)
        ON CONFLICT DO NOTHING
        RETURNING m.id INTO got;
        IF got IS NOT NULL THEN
            IF first_state = 'ready'
               AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = enqueue.topic) THEN
                PERFORM pushpop.wake(ARRAY[enqueue.topic]);
            END IF;
            RETURN got;
        END IF;
        -- Nothing inserted: this id exists already, a live message holds the dedup_key, or
        -- another push of the key became its head in between.
        -- On a distributed installation an id is unique per topic only: the topic's shard.
        SELECT m.id, m.topic INTO got, taken_by FROM pushpop.messages AS m
        WHERE m.id = enqueue.id AND (NOT pushpop.distributed() OR m.route = topic_route);
        IF taken_by IS DISTINCT FROM enqueue.topic AND got IS NOT NULL THEN
            -- Idempotency is per topic: a message of another topic is no copy of this one.
            PERFORM pushpop.require(false, format('id %s is taken by a message of another topic',
                                                  enqueue.id));
        END IF;
        IF got IS NULL AND enqueue.dedup_key IS NOT NULL THEN
            SELECT m.id INTO got FROM pushpop.messages AS m
            WHERE m.topic = enqueue.topic AND m.dedup_key = enqueue.dedup_key
              AND m.state IN ('scheduled', 'ready', 'pending', 'blocked')
              AND (NOT pushpop.distributed() OR m.route = topic_route);
        END IF;
        IF got IS NOT NULL THEN
            RETURN got;
        END IF;
        -- The conflicting message finished, or became the key's head, in between: again.
    END LOOP;
END $$;
COMMENT ON FUNCTION pushpop.enqueue(text, bytea, interval, integer, uuid, text, integer, interval, jsonb, text, uuid) IS
    'Internal to push and push_many, which check the arguments: inserts one message (blocked '
    'behind a live message of its ordering_key), or returns the id of the message that holds its '
    'id or dedup_key.';

CREATE OR REPLACE FUNCTION pushpop.push(
    topic        text,
    payload      bytea,
    delay        interval DEFAULT '0',
    priority     integer  DEFAULT 0,
    id           uuid     DEFAULT NULL,
    dedup_key    text     DEFAULT NULL,
    max_attempts integer  DEFAULT 25,
    expires_in   interval DEFAULT NULL,
    headers      jsonb    DEFAULT NULL,
    ordering_key text     DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id      uuid := coalesce(push.id, gen_random_uuid());
    got         uuid;
    taken_by    text;
    subscribers text[];
BEGIN
    IF NOT coalesce(length(push.topic) BETWEEN 1 AND 255 AND push.payload IS NOT NULL
                    AND push.delay >= interval '0' AND push.priority IS NOT NULL
                    AND push.max_attempts >= 1
                    AND (push.dedup_key IS NULL OR octet_length(push.dedup_key) BETWEEN 1 AND 1024)
                    AND (push.ordering_key IS NULL OR length(push.ordering_key) BETWEEN 1 AND 255),
                    false) THEN
        PERFORM pushpop.require_topic(push.topic);
        PERFORM pushpop.require(push.payload IS NOT NULL, 'payload must not be NULL');
        PERFORM pushpop.require(push.delay >= interval '0', 'delay must be zero or positive');
        PERFORM pushpop.require(push.priority IS NOT NULL, 'priority must not be NULL');
        PERFORM pushpop.require(push.max_attempts >= 1, 'max_attempts must be at least 1');
        PERFORM pushpop.require_ordering_key(push.ordering_key);
        PERFORM pushpop.require(push.dedup_key <> '', 'dedup_key must not be empty');
        -- The unique index on (topic, dedup_key) cannot hold longer keys.
        PERFORM pushpop.require(false, format('dedup_key must be at most 1024 bytes, got %s',
                                              octet_length(push.dedup_key)));
    END IF;
    IF push.expires_in IS NOT NULL OR push.headers IS NOT NULL THEN
        PERFORM pushpop.require(push.expires_in IS NULL OR push.expires_in > interval '0',
                                'expires_in must be positive (or NULL for never)');
        IF push.headers IS NOT NULL THEN
            PERFORM pushpop.require_headers(push.headers);
        END IF;
    END IF;
    IF pushpop.topic_grants_in_use() THEN
        PERFORM pushpop.require_grant('push', push.topic);
    END IF;
    -- On a distributed installation the ids made here carry the topic's route in their first
    -- bytes, so find() looks in one shard first.
    IF pushpop.distributed() AND push.id IS NULL THEN
        new_id := pushpop.new_lease(pushpop.route_of(push.topic));
    END IF;
    IF octet_length(push.payload) > pushpop.max_payload_bytes() THEN
        RAISE EXCEPTION 'pushpop: payload is % bytes, more than the limit of % bytes',
            octet_length(push.payload), pushpop.max_payload_bytes()
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'pushpop.set_max_payload_bytes() changes the limit of this database.';
    END IF;
    IF pushpop.subscriptions_in_use() THEN
        subscribers := pushpop.subscribers_of(push.topic);
    END IF;
    IF subscribers IS NULL THEN
        IF push.ordering_key IS NULL THEN
            -- The common case, inline: one insert. enqueue sorts out a conflict.
            INSERT INTO pushpop.messages AS m
                (id, route, topic, state, state_time, priority, max_attempts, dedup_key, payload,
                 expires_at, headers)
            -- The route: NULL on a single server (folded into the plan), else the topic's.
            VALUES (new_id, CASE WHEN pushpop.distributed() THEN pushpop.route_of(push.topic) END,
                    push.topic,
                    CASE WHEN push.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
                    now() + push.delay, push.priority, push.max_attempts, push.dedup_key,
                    push.payload, now() + push.expires_in, push.headers)
            ON CONFLICT DO NOTHING
            RETURNING m.id INTO got;
            IF got IS NOT NULL THEN
                IF push.delay = interval '0'
                   AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = push.topic) THEN
                    PERFORM pushpop.wake(ARRAY[push.topic]);
                END IF;
                RETURN got;
            END IF;
        END IF;
        RETURN pushpop.enqueue(push.topic, push.payload, push.delay, push.priority, new_id,
                               push.dedup_key, push.max_attempts, push.expires_in, push.headers,
                               push.ordering_key, NULL);
    END IF;
    -- Fan-out: one copy per subscriber topic, each with an id of its own; fanout_of holds the
    -- id this push returns. The unique index on (fanout_of, topic) makes a retried push add no
    -- copy, and the one on (topic, dedup_key) skips a subscriber topic that holds the
    -- dedup_key live.
    IF push.id IS NOT NULL THEN
        -- A retried push: its copies exist (even if the subscriptions changed since). They may
        -- be on any shard of a distributed queue, and Citus cannot run a query over every
        -- shard with an empty select list: so SELECT 1.
        IF EXISTS (SELECT 1 FROM pushpop.messages AS m WHERE m.fanout_of = new_id) THEN
            RETURN new_id;
        END IF;
        SELECT m.topic INTO taken_by FROM pushpop.messages AS m WHERE m.id = new_id;
        IF taken_by = push.topic THEN
            RETURN new_id;  -- pushed before the topic had subscribers
        END IF;
        PERFORM pushpop.require(taken_by IS NULL,
                                format('id %s is taken by a message of another topic', new_id));
    END IF;
    IF push.ordering_key IS NOT NULL THEN
        -- Each subscriber topic orders the key on its own.
        PERFORM pushpop.enqueue(s.subscriber, push.payload, push.delay, push.priority,
                                gen_random_uuid(), push.dedup_key, push.max_attempts,
                                push.expires_in, push.headers, push.ordering_key, new_id)
        FROM unnest(subscribers) AS s(subscriber) ORDER BY s.subscriber;
        RETURN new_id;
    END IF;
    INSERT INTO pushpop.messages
        (id, route, topic, state, state_time, priority, max_attempts, dedup_key, payload,
         expires_at, headers, fanout_of)
    SELECT gen_random_uuid(),
           CASE WHEN pushpop.distributed() THEN pushpop.route_of(s.subscriber) END, s.subscriber,
           CASE WHEN push.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
           now() + push.delay, push.priority, push.max_attempts, push.dedup_key,
           push.payload, now() + push.expires_in, push.headers, new_id
    FROM unnest(subscribers) AS s(subscriber)
    ON CONFLICT DO NOTHING;
    IF push.delay = interval '0'
       AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = ANY (subscribers)) THEN
        PERFORM pushpop.wake(subscribers);
    END IF;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION pushpop.push(text, bytea, interval, integer, uuid, text, integer, interval, jsonb, text) IS
    'Enqueues one message and returns its id; it may be popped after delay. An id that a message of '
    'this topic has already (until cleanup deletes it), or a dedup_key held by a live (scheduled, '
    'ready, pending or blocked) message of the topic, inserts nothing and returns the existing id; '
    'an id taken in another topic raises invalid_parameter_value (22023). A payload above '
    'pushpop.max_payload_bytes() raises program_limit_exceeded (54000). A message with expires_in is '
    'never delivered once that long has passed since the push (delay included); headers is a JSON '
    'object of strings (pushpop.require_headers). Messages of the topic with the same ordering_key '
    '(1 to 255 characters) are delivered one at a time in push order: each waits, blocked, until '
    'the one before it is completed or discarded. A topic with subscribers (pushpop.subscribe) gets '
    'no message itself: each subscriber topic gets a copy with an id of its own, find(returned id) '
    'lists them, and a retried push with the same id adds none.';

CREATE OR REPLACE FUNCTION pushpop.push_many(
    topic         text,
    payloads      bytea[],
    delay         interval DEFAULT '0',
    priority      integer  DEFAULT 0,
    expires_in    interval DEFAULT NULL,
    headers       jsonb    DEFAULT NULL,
    ordering_keys text[]   DEFAULT NULL
) RETURNS SETOF uuid LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    too_big     record;
    subscribers text[];
    new_id      uuid;
    -- NULL on a single server; on a distributed one the topic's shard key.
    topic_route integer := CASE WHEN pushpop.distributed() THEN pushpop.route_of(push_many.topic) END;
    ids         uuid[];
BEGIN
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
    IF push_many.expires_in IS NOT NULL OR push_many.headers IS NOT NULL THEN
        PERFORM pushpop.require(push_many.expires_in IS NULL OR push_many.expires_in > interval '0',
                                'expires_in must be positive (or NULL for never)');
        IF push_many.headers IS NOT NULL THEN
            PERFORM pushpop.require_headers(push_many.headers);
        END IF;
    END IF;
    IF push_many.ordering_keys IS NOT NULL THEN
        PERFORM pushpop.require(coalesce(array_ndims(push_many.ordering_keys), 1) = 1
                                AND cardinality(push_many.ordering_keys)
                                    = cardinality(push_many.payloads),
                                format('ordering_keys must be a one-dimensional array as long as '
                                       'payloads (%s), got %s', cardinality(push_many.payloads),
                                       cardinality(push_many.ordering_keys)));
        PERFORM pushpop.require_ordering_key(k) FROM unnest(push_many.ordering_keys) AS k
        WHERE k IS NOT NULL;
    END IF;
    IF pushpop.topic_grants_in_use() THEN
        PERFORM pushpop.require_grant('push', push_many.topic);
    END IF;
    SELECT p.n, octet_length(p.payload) AS bytes INTO too_big
    FROM unnest(push_many.payloads) WITH ORDINALITY AS p(payload, n)
    WHERE octet_length(p.payload) > pushpop.max_payload_bytes()
    ORDER BY p.n LIMIT 1;
    IF too_big.n IS NOT NULL THEN
        RAISE EXCEPTION 'pushpop: payload % of % is % bytes, more than the limit of % bytes',
            too_big.n, cardinality(push_many.payloads), too_big.bytes, pushpop.max_payload_bytes()
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'pushpop.set_max_payload_bytes() changes the limit of this database.';
    END IF;
    IF pushpop.subscriptions_in_use() THEN
        subscribers := pushpop.subscribers_of(push_many.topic);
    END IF;
    IF cardinality(array_remove(push_many.ordering_keys, NULL)) > 0 THEN
        -- Keyed messages one at a time, in input order: each may be blocked behind the last.
        FOR n IN 1 .. cardinality(push_many.payloads) LOOP
            new_id := CASE WHEN pushpop.distributed() THEN pushpop.new_lease(topic_route)
                           ELSE gen_random_uuid() END;
            IF subscribers IS NULL THEN
                -- 25: the max_attempts push_many gives every message (the table's default).
                RETURN NEXT pushpop.enqueue(push_many.topic, push_many.payloads[n], push_many.delay,
                                            push_many.priority, new_id, NULL, 25,
                                            push_many.expires_in, push_many.headers,
                                            push_many.ordering_keys[n], NULL);
            ELSE
                PERFORM pushpop.enqueue(s.subscriber, push_many.payloads[n], push_many.delay,
                                        push_many.priority, gen_random_uuid(), NULL, 25,
                                        push_many.expires_in, push_many.headers,
                                        push_many.ordering_keys[n], new_id)
                FROM unnest(subscribers) AS s(subscriber) ORDER BY s.subscriber;
                RETURN NEXT new_id;
            END IF;
        END LOOP;
        RETURN;
    END IF;
    IF subscribers IS NOT NULL AND pushpop.distributed() THEN
        -- Fan-out, as below, with the shared ids made first: Citus would send the result of a
        -- CTE to every node, and take every node into the commit. So the copies reach the
        -- nodes of the subscriber topics only.
        ids := ARRAY(SELECT gen_random_uuid()
                     FROM generate_series(1, cardinality(push_many.payloads)));
        INSERT INTO pushpop.messages
            (id, route, topic, state, state_time, priority, payload, expires_at, headers,
             fanout_of)
        SELECT gen_random_uuid(), pushpop.route_of(s.subscriber), s.subscriber,
               CASE WHEN push_many.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
               now() + push_many.delay, push_many.priority, i.payload,
               now() + push_many.expires_in, push_many.headers, i.id
        FROM unnest(ids, push_many.payloads) WITH ORDINALITY AS i(id, payload, n)
        CROSS JOIN unnest(subscribers) AS s(subscriber)
        ORDER BY i.n, s.subscriber;
        RETURN QUERY SELECT i.id FROM unnest(ids) WITH ORDINALITY AS i(id, n) ORDER BY i.n;
        IF cardinality(ids) > 0 AND push_many.delay = interval '0'
           AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = ANY (subscribers)) THEN
            PERFORM pushpop.wake(subscribers);
        END IF;
        RETURN;
    END IF;
    IF subscribers IS NOT NULL THEN
        -- Fan-out, as in push: the ids returned are those the copies of each payload share.
        RETURN QUERY
        WITH input AS MATERIALIZED (
            SELECT gen_random_uuid() AS id, p.payload, p.n
            FROM unnest(push_many.payloads) WITH ORDINALITY AS p(payload, n)
        ), inserted AS (
            INSERT INTO pushpop.messages
                (id, route, topic, state, state_time, priority, payload, expires_at, headers,
                 fanout_of)
            SELECT gen_random_uuid(),
                   CASE WHEN pushpop.distributed() THEN pushpop.route_of(s.subscriber) END,
                   s.subscriber,
                   CASE WHEN push_many.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
                   now() + push_many.delay, push_many.priority, i.payload,
                   now() + push_many.expires_in, push_many.headers, i.id
            FROM input AS i CROSS JOIN unnest(subscribers) AS s(subscriber)
            ORDER BY i.n, s.subscriber
        )
        SELECT i.id FROM input AS i ORDER BY i.n;
        IF FOUND AND push_many.delay = interval '0'
           AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = ANY (subscribers)) THEN
            PERFORM pushpop.wake(subscribers);
        END IF;
        RETURN;
    END IF;
    IF pushpop.distributed() THEN
        -- The ids first: Citus would run an INSERT that calls a volatile function through
        -- intermediate results sent to every node. So the insert names one route, one node.
        ids := ARRAY(SELECT pushpop.new_lease(topic_route)
                     FROM generate_series(1, cardinality(push_many.payloads)));
        INSERT INTO pushpop.messages
            (id, route, topic, state, state_time, priority, payload, expires_at, headers)
        SELECT i.id, topic_route, push_many.topic,
               CASE WHEN push_many.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
               now() + push_many.delay, push_many.priority, i.payload,
               now() + push_many.expires_in, push_many.headers
        FROM unnest(ids, push_many.payloads) WITH ORDINALITY AS i(id, payload, n)
        ORDER BY i.n;
        RETURN QUERY SELECT i.id FROM unnest(ids) WITH ORDINALITY AS i(id, n) ORDER BY i.n;
        IF cardinality(ids) > 0 AND push_many.delay = interval '0'
           AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = push_many.topic) THEN
            PERFORM pushpop.wake(ARRAY[push_many.topic]);
        END IF;
        RETURN;
    END IF;
    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT gen_random_uuid() AS id, p.payload, p.n
        FROM unnest(push_many.payloads) WITH ORDINALITY AS p(payload, n)
    ), inserted AS (
        INSERT INTO pushpop.messages
            (id, topic, state, state_time, priority, payload, expires_at, headers)
        SELECT i.id, push_many.topic,
               CASE WHEN push_many.delay > interval '0' THEN 'scheduled' ELSE 'ready' END,
               now() + push_many.delay, push_many.priority, i.payload,
               now() + push_many.expires_in, push_many.headers
        FROM input AS i ORDER BY i.n
    )
    SELECT i.id FROM input AS i ORDER BY i.n;
    IF FOUND AND push_many.delay = interval '0'
       AND EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = push_many.topic) THEN
        PERFORM pushpop.wake(ARRAY[push_many.topic]);
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.push_many(text, bytea[], interval, integer, interval, jsonb, text[]) IS
    'Enqueues one message per payload in a single statement and returns their ids in input order; '
    'expires_in and headers, as in push, apply to each. ordering_keys, if given, holds one key per '
    'payload (NULL for none), each ordered as push''s ordering_key; a batch with one key is '
    'delivered in input order. Any payload above pushpop.max_payload_bytes() raises '
    'program_limit_exceeded (54000) and enqueues none. A topic with subscribers fans out as in '
    'push: each returned id names the copies of its payload.';
