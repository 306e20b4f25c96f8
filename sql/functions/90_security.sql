-- pushpop functions, part 9: who may call what.
--
-- PostgreSQL lets PUBLIC execute every new function. pushpop.lock_down() takes that away from
-- one of pushpop's routines, checks that it runs as its owner with a pinned search_path, and
-- grants it to the pushpop roles that need it. It touches only the routines named below, so
-- objects an operator adds to the schema keep the privileges they were given.

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
    EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', lock_down.routine);
    FOREACH role_name IN ARRAY lock_down.roles LOOP
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', lock_down.routine, role_name);
    END LOOP;
END $$;
COMMENT ON PROCEDURE pushpop.lock_down(regprocedure, text[]) IS
    'Used by pushpop''s own install: revokes PUBLIC''s right to call one of pushpop''s routines, '
    'checks that it runs as its owner with a pinned search_path, and grants it to roles.';

CALL pushpop.lock_down('pushpop.lock_down(regprocedure, text[])');
CALL pushpop.lock_down('pushpop.require(boolean, text)');
CALL pushpop.lock_down('pushpop.require_topic(text)');
CALL pushpop.lock_down('pushpop.wake(text[])');

-- Producers push.
CALL pushpop.lock_down('pushpop.push(text, bytea, interval, integer, uuid, text, integer)',
                       'pushpop_producer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.push_many(text, bytea[], interval, integer)',
                       'pushpop_producer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.max_payload_bytes()', 'pushpop_producer', 'pushpop_admin');

-- Consumers do what a worker does: pop, acknowledge, look, maintain, register.
CALL pushpop.lock_down('pushpop.pop(text, interval, integer)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.complete(uuid, uuid)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.complete_many(uuid[], uuid[])', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.discard(uuid, uuid, text)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.defer(uuid, uuid, interval, text)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.extend(uuid, uuid, interval)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.find(uuid)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.stats()', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.requeue_expired()', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.cleanup(interval, integer)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.wait_for_push(uuid, text[])', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.worker_heartbeat(uuid, text, integer, text[], integer)',
                       'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.worker_stopped(uuid)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.workers(interval)', 'pushpop_consumer', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.prune_workers(interval)', 'pushpop_consumer', 'pushpop_admin');

-- Administrators also empty topics and change the payload limit.
CALL pushpop.lock_down('pushpop.purge(text)', 'pushpop_admin');
CALL pushpop.lock_down('pushpop.set_max_payload_bytes(integer)', 'pushpop_admin');
