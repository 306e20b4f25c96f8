-- pushpop functions, part 6: maintenance.
--
-- A worker's maintenance leader (one per database, chosen by lead_maintenance) calls
-- requeue_expired every few seconds and cleanup every minute. They need pushpop_maintainer.

-- The leader holds a lease on the role, renewed on each call; if it stops renewing (it died,
-- or lost its connection), another worker takes over once the lease has run out. Two leaders
-- for a moment do no harm: every maintenance call skips rows another one holds, and
-- run_schedules pushes a tick once however many leaders call it. The lease is short (a second)
-- so that a surviving worker runs the schedules within 2 s of a leader's death; the other
-- workers ask for the lead as often, and only read the row while someone else holds it.
CREATE OR REPLACE FUNCTION pushpop.lead_maintenance(worker uuid, lease_for interval DEFAULT '1 second')
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require(lead_maintenance.worker IS NOT NULL, 'worker must not be NULL');
    PERFORM pushpop.require(lead_maintenance.lease_for > interval '0', 'lease_for must be positive');
    IF EXISTS (SELECT FROM pushpop.maintenance_leader AS l
               WHERE l.worker <> lead_maintenance.worker AND l.until >= now()) THEN
        RETURN false;  -- another leads: no row lock taken, so asking often costs the leader nothing
    END IF;
    INSERT INTO pushpop.maintenance_leader AS l (worker, until)
    VALUES (lead_maintenance.worker, now() + lead_maintenance.lease_for)
    ON CONFLICT (one_row) DO UPDATE SET worker = excluded.worker, until = excluded.until
    WHERE l.worker = excluded.worker OR l.until < now();
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.lead_maintenance(uuid, interval) IS
    'Makes worker the maintenance leader for lease_for, or renews its lead; false while another '
    'worker leads. The leader calls it at least once per lease and runs requeue_expired, cleanup '
    'and prune_workers while it gets true.';

CREATE OR REPLACE FUNCTION pushpop.resign_maintenance(worker uuid)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM pushpop.maintenance_leader AS l WHERE l.worker = resign_maintenance.worker;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.resign_maintenance(uuid) IS
    'Ends worker''s lead at once (a worker stopping cleanly), so another takes over without waiting '
    'for the lease to run out. True if it led.';

-- Reads every pending message (never more than those in flight) through the pending index,
-- and the waiting messages past their expiry through the expiring index.
CREATE OR REPLACE FUNCTION pushpop.requeue_expired()
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    moved       integer := 0;
    expired     integer := 0;
    here        integer;
    found_      text[];
    topics      text[];
    done_topics text[];
    done_keys   text[];
    -- Citus refuses a function other than IMMUTABLE inside CASE in an UPDATE: now() and
    -- format() become a variable and ||.
    at_         timestamptz := now();
    one_route   integer;
BEGIN
    -- A single server makes one pass over every route (NULL: the conditions on it fold away).
    -- A distributed installation locks rows only in statements on one shard, so it makes one
    -- pass per route that has work, found without locks over every shard.
    FOREACH one_route IN ARRAY
        CASE WHEN pushpop.distributed()
             THEN ARRAY(SELECT p.route FROM pushpop.messages AS p
                        WHERE p.state = 'pending' AND p.lease_until < now()
                        UNION
                        SELECT w.route FROM pushpop.messages AS w
                        WHERE w.expires_at <= now() AND w.state IN ('scheduled', 'ready'))
             ELSE ARRAY[NULL::integer] END
    LOOP
        WITH lapsed AS MATERIALIZED (
            SELECT p.id FROM pushpop.messages AS p
            WHERE p.state = 'pending' AND p.lease_until < now()
              AND (NOT pushpop.distributed() OR p.route = one_route)
            FOR UPDATE SKIP LOCKED
        ), moved_rows AS (
            UPDATE pushpop.messages AS m
            SET state = CASE WHEN m.attempts >= m.max_attempts OR m.expires_at <= at_
                             THEN 'discarded' ELSE 'ready' END,
                state_time = at_, lease = NULL,
                error = CASE WHEN m.expires_at <= at_ THEN 'expired'
                             ELSE 'lease expired on attempt ' || m.attempts::text || ' of '
                                  || m.max_attempts::text
                                  || CASE WHEN m.attempts >= m.max_attempts THEN ': discarded' ELSE '' END
                        END
            FROM lapsed WHERE m.id = lapsed.id AND (NOT pushpop.distributed() OR m.route = one_route)
            RETURNING m.topic, m.state, m.ordering_key
        )
        SELECT count(*), array_agg(DISTINCT r.topic) FILTER (WHERE r.state = 'ready'),
               done_topics || array_agg(r.topic) FILTER (WHERE r.state = 'discarded' AND r.ordering_key IS NOT NULL),
               done_keys || array_agg(r.ordering_key) FILTER (WHERE r.state = 'discarded' AND r.ordering_key IS NOT NULL)
        INTO here, found_, done_topics, done_keys FROM moved_rows AS r;
        moved := moved + here;
        topics := topics || found_;
        -- Waiting messages past their expiry: pop passes them by already; this records why.
        WITH dead AS MATERIALIZED (
            SELECT w.id FROM pushpop.messages AS w
            WHERE w.expires_at <= now() AND w.state IN ('scheduled', 'ready')
              AND (NOT pushpop.distributed() OR w.route = one_route)
            FOR UPDATE SKIP LOCKED
        ), expired_rows AS (
            UPDATE pushpop.messages AS m SET state = 'discarded', state_time = now(), error = 'expired'
            FROM dead WHERE m.id = dead.id AND (NOT pushpop.distributed() OR m.route = one_route)
            RETURNING m.topic, m.ordering_key
        )
        SELECT count(*),
               done_topics || array_agg(e.topic) FILTER (WHERE e.ordering_key IS NOT NULL),
               done_keys || array_agg(e.ordering_key) FILTER (WHERE e.ordering_key IS NOT NULL)
        INTO here, done_topics, done_keys FROM expired_rows AS e;
        expired := expired + here;
    END LOOP;
    -- The next message of each key whose live message ended here takes its place.
    IF done_keys IS NOT NULL THEN
        PERFORM pushpop.unblock(done_topics, done_keys);
    END IF;
    IF topics IS NOT NULL THEN
        PERFORM pushpop.wake(topics);
    END IF;
    RETURN moved + expired;
END $$;
COMMENT ON FUNCTION pushpop.requeue_expired() IS
    'Returns every pending message whose lease deadline has passed to the queue, or discards it once '
    'it has used max_attempts (error says why); and discards every message past its expiry, waiting '
    'or lapsed (error ''expired''); the next message of the ordering_key of each one discarded '
    'becomes ready. Returns how many messages it moved.';

CREATE OR REPLACE FUNCTION pushpop.cleanup(grace interval DEFAULT '1 day', max_rows integer DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deleted   integer := 0;
    here      integer;
    one_route integer;
BEGIN
    PERFORM pushpop.require(cleanup.grace >= interval '0', 'grace must be zero or positive');
    PERFORM pushpop.require(cleanup.max_rows IS NULL OR cleanup.max_rows >= 1,
                            'max_rows must be at least 1 (or NULL for all)');
    -- One pass on a single server (NULL: the conditions on the route fold away). On a
    -- distributed installation one per route, in the order of their oldest finished message:
    -- the oldest rows anywhere go first, and one topic's backlog never hides another's.
    FOREACH one_route IN ARRAY
        CASE WHEN pushpop.distributed()
             THEN ARRAY(SELECT f.route FROM pushpop.messages AS f
                        WHERE f.state IN ('completed', 'discarded')
                          AND f.state_time < now() - cleanup.grace
                        GROUP BY f.route ORDER BY min(f.state_time))
             ELSE ARRAY[NULL::integer] END
    LOOP
        EXIT WHEN deleted >= cleanup.max_rows;
        WITH old AS MATERIALIZED (
            SELECT f.id FROM pushpop.messages AS f
            WHERE f.state IN ('completed', 'discarded') AND f.state_time < now() - cleanup.grace
              AND (NOT pushpop.distributed() OR f.route = one_route)
            ORDER BY f.state_time
            LIMIT cleanup.max_rows - deleted
            FOR UPDATE SKIP LOCKED
        )
        DELETE FROM pushpop.messages AS m USING old
        WHERE m.id = old.id AND (NOT pushpop.distributed() OR m.route = one_route);
        GET DIAGNOSTICS here = ROW_COUNT;
        deleted := deleted + here;
    END LOOP;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.cleanup(interval, integer) IS
    'Deletes completed and discarded messages that finished more than grace ago, oldest first, at '
    'most max_rows (NULL: all). Call it repeatedly with a max_rows such as 10000, each call its own '
    'transaction, to keep locks short. Returns how many it deleted.';

CREATE OR REPLACE FUNCTION pushpop.purge(topic text)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require_topic(purge.topic);
    DELETE FROM pushpop.messages AS m
    WHERE m.topic = purge.topic AND m.state <> 'pending'
      AND (NOT pushpop.distributed() OR m.route = pushpop.route_of(purge.topic));
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.purge(text) IS
    'Deletes every message of the topic that is not pending (in-flight deliveries finish normally). '
    'Returns how many.';
