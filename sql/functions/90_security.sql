-- pushpop functions, part 9: who may call what.
--
-- PostgreSQL lets PUBLIC execute every new function. pushpop.lock_down() takes that away from
-- one of pushpop's routines, checks that it runs as its owner with a pinned search_path, and
-- grants it to exactly the pushpop roles that need it. It touches only the routines named
-- below, and no role but pushpop's, so what an operator adds or grants keeps its privileges.

CREATE OR REPLACE PROCEDURE pushpop.lock_down(routine regprocedure, VARIADIC roles text[] DEFAULT '{}')
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    role_name text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                   WHERE p.oid = lock_down.routine AND p.prosecdef
                     AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)) THEN
        RAISE EXCEPTION 'pushpop: % must be SECURITY DEFINER with SET search_path = pg_catalog, pg_temp',
            lock_down.routine;
    END IF;
    -- The grants below are the whole truth for pushpop's roles; other roles keep theirs.
    EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC, pushpop_producer, pushpop_consumer, '
                   'pushpop_maintainer, pushpop_admin', lock_down.routine);
    FOREACH role_name IN ARRAY lock_down.roles LOOP
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', lock_down.routine, role_name);
    END LOOP;
END $$;
COMMENT ON PROCEDURE pushpop.lock_down(regprocedure, text[]) IS
    'Used by pushpop''s own install: revokes PUBLIC''s and the pushpop roles'' right to call one of '
    'pushpop''s routines, checks that it runs as its owner with a pinned search_path, and grants it '
    'to roles.';

-- Topic grants ------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pushpop.grant_topics(
    role       regrole,
    patterns   text[],
    privileges text[] DEFAULT '{push,pop}'
) RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    added integer;
BEGIN
    PERFORM pushpop.require(grant_topics.role IS NOT NULL, 'role must not be NULL');
    PERFORM pushpop.require(cardinality(grant_topics.patterns) >= 1, 'patterns must not be empty');
    PERFORM pushpop.require(cardinality(grant_topics.privileges) >= 1, 'privileges must not be empty');
    PERFORM pushpop.require(p IS NOT NULL AND length(p) BETWEEN 1 AND 255
                            AND strpos(left(p, -1), '*') = 0,
                            format('pattern %s must be a topic, or a prefix ending in * (1 to 255 characters)',
                                   coalesce(quote_literal(p), 'NULL')))
    FROM unnest(grant_topics.patterns) AS p;
    PERFORM pushpop.require(v IN ('push', 'pop'),
                            format('privilege %s must be push or pop', coalesce(quote_literal(v), 'NULL')))
    FROM unnest(grant_topics.privileges) AS v;
    INSERT INTO pushpop.topic_grants (grantee, pattern, privilege)
    SELECT grant_topics.role::text, p, v
    FROM unnest(grant_topics.patterns) AS p, unnest(grant_topics.privileges) AS v
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF NOT pushpop.topic_grants_in_use() THEN
        CALL pushpop.define_setting('topic_grants_in_use', 'boolean', 'true');
    END IF;
    RETURN added;
END $$;
COMMENT ON FUNCTION pushpop.grant_topics(regrole, text[], text[]) IS
    'Lets role (and the roles that belong to it) push to and/or pop from the topics matching '
    'patterns: a topic, or a prefix ending in * ("billing.*"; "*" is every topic). pop covers '
    'popping, find, stats and wake-ups. From the first grant on, every role but pushpop_admin and '
    'the owner may use only its granted topics. Returns how many grants it added.';

CREATE OR REPLACE FUNCTION pushpop.revoke_topics(
    role       regrole,
    patterns   text[] DEFAULT NULL,
    privileges text[] DEFAULT NULL
) RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed integer;
BEGIN
    PERFORM pushpop.require(revoke_topics.role IS NOT NULL, 'role must not be NULL');
    DELETE FROM pushpop.topic_grants AS g
    WHERE g.grantee = revoke_topics.role::text
      AND (revoke_topics.patterns IS NULL OR g.pattern = ANY (revoke_topics.patterns))
      AND (revoke_topics.privileges IS NULL OR g.privilege = ANY (revoke_topics.privileges));
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;
COMMENT ON FUNCTION pushpop.revoke_topics(regrole, text[], text[]) IS
    'Removes role''s topic grants on patterns (NULL: all) for privileges (NULL: both); returns how '
    'many. Topic grants stay in force for every role, even once none is left, until '
    'pushpop.stop_topic_grants().';

CREATE OR REPLACE FUNCTION pushpop.stop_topic_grants()
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed integer;
BEGIN
    DELETE FROM pushpop.topic_grants;
    GET DIAGNOSTICS removed = ROW_COUNT;
    CALL pushpop.define_setting('topic_grants_in_use', 'boolean', 'false');
    RETURN removed;
END $$;
COMMENT ON FUNCTION pushpop.stop_topic_grants() IS
    'Removes every topic grant and lets every pushpop role use every topic again, as before the '
    'first grant. Returns how many grants it removed.';

CREATE OR REPLACE FUNCTION pushpop.topic_grants()
RETURNS TABLE (role text, pattern text, privilege text, granted_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.grantee::text, g.pattern, g.privilege, g.granted_at
    FROM pushpop.topic_grants AS g
    ORDER BY g.grantee, g.pattern, g.privilege
$$;
COMMENT ON FUNCTION pushpop.topic_grants() IS
    'Every topic grant: which role may push to or pop from which topics.';

-- Who may call what -----------------------------------------------------------------------

CALL pushpop.lock_down('pushpop.lock_down(regprocedure, text[])');
CALL pushpop.lock_down('pushpop.require(boolean, text)');
CALL pushpop.lock_down('pushpop.require_topic(text)');
CALL pushpop.lock_down('pushpop.require_ordering_key(text)');
CALL pushpop.lock_down('pushpop.enqueue(text, bytea, interval, integer, uuid, text, integer, interval, jsonb, text, uuid)');
CALL pushpop.lock_down('pushpop.unblock(text[], text[])');
CALL pushpop.lock_down('pushpop.unblock_next(text, text)');
CALL pushpop.lock_down('pushpop.pop_at(integer, text, interval, integer, timestamptz)');
CALL pushpop.lock_down('pushpop.wake(text[])');
CALL pushpop.lock_down('pushpop.define_setting(text, text, text)');
CALL pushpop.lock_down('pushpop.topic_grants_in_use()');
CALL pushpop.lock_down('pushpop.may(text, text)');
CALL pushpop.lock_down('pushpop.require_grant(text, text)');
CALL pushpop.lock_down('pushpop.topics_paused()');
CALL pushpop.lock_down('pushpop.require_headers(jsonb)');
CALL pushpop.lock_down('pushpop.cron_field(text, text, integer, integer, text[], integer)');
CALL pushpop.lock_down('pushpop.cron_parse(text)');
CALL pushpop.lock_down('pushpop.cron_day_matches(bigint[], date)');
CALL pushpop.lock_down('pushpop.cron_next(text, timestamptz, text)');
CALL pushpop.lock_down('pushpop.every_next(timestamptz, interval, text, timestamptz)');
CALL pushpop.lock_down('pushpop.every_tick(timestamptz, interval, text, boolean, bigint)');
CALL pushpop.lock_down('pushpop.subscriptions_in_use()');
CALL pushpop.lock_down('pushpop.subscription_patterns_in_use()');
CALL pushpop.lock_down('pushpop.require_pattern(text, text, boolean)');
CALL pushpop.lock_down('pushpop.subscribers_of(text)');
CALL pushpop.lock_down('pushpop.distributed()');
CALL pushpop.lock_down('pushpop.route_of(text)');
CALL pushpop.lock_down('pushpop.new_lease(integer)');
CALL pushpop.lock_down('pushpop.lease_route(uuid)');
-- pushpop.distribute(integer) is locked down in 95_distribute.sql, which creates it after this file.

-- Every client may ask which schema it talks to.
CALL pushpop.lock_down('pushpop.schema_version()',
                       'pushpop_producer', 'pushpop_consumer', 'pushpop_maintainer', 'pushpop_admin');

-- Producers push.
CALL pushpop.lock_down('pushpop.push(text, bytea, interval, integer, uuid, text, integer, interval, jsonb, text)',
                       'pushpop_producer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.push_many(text, bytea[], interval, integer, interval, jsonb, text[])',
                       'pushpop_producer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.max_payload_bytes()', 'pushpop_producer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.max_header_bytes()', 'pushpop_producer', 'pushpop_admin');

-- Consumers do what a worker does: pop, acknowledge, look, register.
CALL pushpop.lock_down('pushpop.pop(text, interval, integer)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.complete(uuid, uuid)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.complete_many(uuid[], uuid[])', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.discard(uuid, uuid, text)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.defer(uuid, uuid, interval, text)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.extend(uuid, uuid, interval)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.find(uuid)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.stats()', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.throughput(interval, text)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.maintenance_leader()', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.wait_for_push(uuid, text[])', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.worker_heartbeat(uuid, text, integer, text[], integer)',
                       'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.worker_stopped(uuid)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.workers(interval)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.browse(text, text, uuid, integer)', 'pushpop_consumer', 'pushpop_admin');

-- Maintainers keep the queue healthy for everyone (pushpop_consumer belongs to
-- pushpop_maintainer unless an operator revoked it).
CALL pushpop.lock_down('pushpop.requeue_expired()', 'pushpop_maintainer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.cleanup(interval, integer)', 'pushpop_maintainer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.prune_workers(interval)', 'pushpop_maintainer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.lead_maintenance(uuid, interval)', 'pushpop_maintainer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.resign_maintenance(uuid)', 'pushpop_maintainer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.run_schedules()', 'pushpop_maintainer', 'pushpop_admin');

-- Administrators also empty, pause and resume topics, change the limits and grant topics.
CALL pushpop.lock_down('pushpop.purge(text)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.set_max_payload_bytes(integer)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.set_max_header_bytes(integer)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.pause(text)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.resume(text)', 'pushpop_admin');
-- ... and redrive, cancel and schedule messages.
CALL pushpop.lock_down('pushpop.retry(uuid)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.retry_discarded(text, integer)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.cancel(uuid)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.schedule(text, text, bytea, text, interval, text, integer)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.unschedule(text)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.schedules()', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.grant_topics(regrole, text[], text[])', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.revoke_topics(regrole, text[], text[])', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.stop_topic_grants()', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.topic_grants()', 'pushpop_admin');
-- ... and route topics to subscribers.
CALL pushpop.lock_down('pushpop.subscribe(text, text)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.unsubscribe(text, text)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.subscriptions(text)', 'pushpop_admin');
