-- pushpop 0003: least privilege, and a limit on payload size.
--
-- Three NOLOGIN roles, server-wide, created here unless they exist already:
--   pushpop_producer  push, push_many, max_payload_bytes
--   pushpop_consumer  what a worker needs: pop, the acknowledgements, find, maintenance,
--                     stats and the worker registry
--   pushpop_admin     both, plus purge and set_max_payload_bytes
-- Every routine of the schema runs as its owner (SECURITY DEFINER) with a pinned search_path,
-- PUBLIC may call none of them, and only the owner can touch the tables.
--
-- Later migrations that create or replace a function must end with the same steps as this
-- one (the "lock down" DO block and the REVOKE after it), then GRANT the function to the
-- roles that need it: PostgreSQL lets PUBLIC execute every new function, and CREATE OR
-- REPLACE drops SECURITY DEFINER and SET unless they are repeated. tests/test_security.py
-- fails on any routine that misses this. (ALTER DEFAULT PRIVILEGES cannot do it for us: in
-- one schema it cannot revoke PUBLIC's EXECUTE, and database-wide it would change every
-- function the owner creates, pushpop's or not.)

BEGIN;

CALL pushpop.record_migration(3, 'security');

-- Roles are shared by every database of the server: another database may hold pushpop
-- already, or be migrating at this very moment. The role that migrates needs CREATEROLE only
-- while the roles do not exist; a superuser may create them beforehand instead.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['pushpop_producer', 'pushpop_consumer', 'pushpop_admin'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = role_name);
        BEGIN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION
            -- A concurrent migration of another database created it first: it exists now.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'pushpop: role % does not exist and % may not create it',
                    role_name, current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Migrate as a role with CREATEROLE, or have a superuser run '
                                 'CREATE ROLE pushpop_producer NOLOGIN; CREATE ROLE pushpop_consumer '
                                 'NOLOGIN; CREATE ROLE pushpop_admin NOLOGIN; first.';
        END;
    END LOOP;
END $$;

-- Settings of this database: always exactly one row.
CREATE TABLE pushpop.settings (
    one_row           boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    max_payload_bytes integer NOT NULL DEFAULT 1048576
                      CHECK (max_payload_bytes BETWEEN 1 AND 1073741824)
);
COMMENT ON TABLE pushpop.settings IS
    'This database''s pushpop settings, one row. Private: use pushpop.set_max_payload_bytes().';
INSERT INTO pushpop.settings DEFAULT VALUES;

CREATE FUNCTION pushpop.max_payload_bytes()
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT s.max_payload_bytes FROM pushpop.settings AS s
$$;
COMMENT ON FUNCTION pushpop.max_payload_bytes() IS
    'The largest payload, in bytes, that push and push_many accept in this database (default 1048576).';

CREATE FUNCTION pushpop.set_max_payload_bytes(max_bytes integer)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require(set_max_payload_bytes.max_bytes BETWEEN 1 AND 1073741824,
                            'max_bytes must be between 1 and 1073741824 (1 GiB)');
    UPDATE pushpop.settings AS s SET max_payload_bytes = set_max_payload_bytes.max_bytes;
    RETURN set_max_payload_bytes.max_bytes;
END $$;
COMMENT ON FUNCTION pushpop.set_max_payload_bytes(integer) IS
    'Sets the largest payload push and push_many accept in this database, in bytes (1 to 1 GiB), '
    'and returns it. Messages already queued are not affected.';

-- push and push_many: as in 0001, plus the payload limit, a bound on dedup_key (the unique
-- index cannot hold longer keys) and, for push_many, a check that payloads is a plain list.
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
    -- The helpers raise the error that names the bad argument. Calling them only when a check
    -- fails keeps their per-call cost (they pin search_path too) off the hot path.
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
    IF FOUND AND push_many.delay = interval '0' THEN
        PERFORM pg_notify('pushpop', push_many.topic);
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.push_many(text, bytea[], interval, integer) IS
    'Enqueues one message per payload in a single statement and returns their ids in input order. '
    'Any payload above pushpop.max_payload_bytes() raises program_limit_exceeded (54000) and enqueues none.';

-- Lock down: every routine of the schema runs as its owner, whoever calls it, and resolves
-- names in pg_catalog only (the bodies qualify everything of pushpop's), so a caller's
-- search_path or temporary objects cannot change what it does.
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
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pushpop FROM PUBLIC;

-- Calling a function by its qualified name needs USAGE on the schema; nothing else does.
GRANT USAGE ON SCHEMA pushpop TO pushpop_producer, pushpop_consumer, pushpop_admin;

GRANT EXECUTE ON FUNCTION
    pushpop.push(text, bytea, interval, integer, uuid, text, integer),
    pushpop.push_many(text, bytea[], interval, integer),
    pushpop.max_payload_bytes()
TO pushpop_producer, pushpop_admin;

GRANT EXECUTE ON FUNCTION
    pushpop.pop(text, interval, integer),
    pushpop.complete(uuid, uuid),
    pushpop.discard(uuid, uuid, text),
    pushpop.defer(uuid, uuid, interval, text),
    pushpop.extend(uuid, uuid, interval),
    pushpop.find(uuid),
    pushpop.requeue_expired(),
    pushpop.cleanup(interval, integer),
    pushpop.stats(),
    pushpop.worker_heartbeat(uuid, text, integer, text[], integer),
    pushpop.worker_stopped(uuid),
    pushpop.workers(interval),
    pushpop.prune_workers(interval)
TO pushpop_consumer, pushpop_admin;

GRANT EXECUTE ON FUNCTION
    pushpop.purge(text),
    pushpop.set_max_payload_bytes(integer)
TO pushpop_admin;

COMMIT;
