-- pushpop functions, part 8: the worker registry.
--
-- Workers register themselves and heartbeat, so anyone can see who consumes what, and
-- registrations of workers that died are pruned.

CREATE OR REPLACE FUNCTION pushpop.worker_heartbeat(
    id          uuid,
    host        text,
    pid         integer,
    topics      text[],
    concurrency integer
) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require(worker_heartbeat.id IS NOT NULL, 'id must not be NULL');
    PERFORM pushpop.require(worker_heartbeat.host IS NOT NULL, 'host must not be NULL');
    PERFORM pushpop.require(worker_heartbeat.pid IS NOT NULL, 'pid must not be NULL');
    PERFORM pushpop.require(cardinality(worker_heartbeat.topics) >= 1, 'topics must not be empty');
    PERFORM pushpop.require_topic(t) FROM unnest(worker_heartbeat.topics) AS t;
    PERFORM pushpop.require(worker_heartbeat.concurrency >= 1, 'concurrency must be at least 1');
    IF pushpop.topic_grants_in_use() THEN
        PERFORM pushpop.require_grant('pop', t) FROM unnest(worker_heartbeat.topics) AS t;
    END IF;
    INSERT INTO pushpop.workers AS w (id, host, pid, topics, concurrency, registered_by)
    VALUES (worker_heartbeat.id, worker_heartbeat.host, worker_heartbeat.pid,
            worker_heartbeat.topics, worker_heartbeat.concurrency, session_user)
    ON CONFLICT ON CONSTRAINT workers_pkey
    DO UPDATE SET heartbeat_at = now(), registered_by = session_user
    WHERE w.registered_by IS NULL OR w.registered_by = session_user;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pushpop: worker % is registered by another role', worker_heartbeat.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.worker_heartbeat(uuid, text, integer, text[], integer) IS
    'Registers a worker on its first call and records a heartbeat on every later one; only the role '
    'that registered an id may heartbeat it. topics follow the rules of pop (1 to 255 characters '
    'each, granted to the caller). A worker calls it every few seconds; one that stops calling drops '
    'out of pushpop.workers().';

CREATE OR REPLACE FUNCTION pushpop.worker_stopped(id uuid)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Rows a producer is waking right now vanish when it commits; waiting for them could take
    -- as long as the producer's transaction.
    DELETE FROM pushpop.waiting AS w
    WHERE w.ctid = ANY (ARRAY(
        SELECT x.ctid FROM pushpop.waiting AS x
        WHERE x.consumer = worker_stopped.id
        FOR UPDATE SKIP LOCKED));
    DELETE FROM pushpop.workers AS w
    WHERE w.id = worker_stopped.id AND w.registered_by = session_user;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.worker_stopped(uuid) IS
    'Removes a worker from the registry (and from the consumers waiting for a push) when it shuts '
    'down cleanly. True if it was registered, by the calling role.';

CREATE OR REPLACE FUNCTION pushpop.workers(stale_after interval DEFAULT '1 minute')
RETURNS TABLE (id uuid, host text, pid integer, topics text[], concurrency integer,
               started_at timestamptz, heartbeat_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT w.id, w.host, w.pid, w.topics, w.concurrency, w.started_at, w.heartbeat_at
    FROM pushpop.workers AS w
    WHERE w.heartbeat_at > now() - workers.stale_after
    ORDER BY w.started_at, w.id
$$;
COMMENT ON FUNCTION pushpop.workers(interval) IS
    'The live workers: those whose last heartbeat is more recent than stale_after.';

CREATE OR REPLACE FUNCTION pushpop.prune_workers(stale_after interval DEFAULT '1 minute')
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require(prune_workers.stale_after > interval '0', 'stale_after must be positive');
    -- A live worker's registration stays however long it sleeps between polls.
    DELETE FROM pushpop.waiting AS w
    WHERE w.ctid = ANY (ARRAY(
        SELECT x.ctid FROM pushpop.waiting AS x
        WHERE x.since <= now() - prune_workers.stale_after
          AND NOT EXISTS (SELECT FROM pushpop.workers AS k
                          WHERE k.id = x.consumer
                            AND k.heartbeat_at > now() - prune_workers.stale_after)
        FOR UPDATE SKIP LOCKED));
    DELETE FROM pushpop.workers AS w WHERE w.heartbeat_at <= now() - prune_workers.stale_after;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.prune_workers(interval) IS
    'Deletes registry entries of workers that stopped heartbeating more than stale_after ago (they '
    'crashed or were killed), and waiting registrations (pushpop.wait_for_push) as old unless they '
    'belong to a live worker. Returns how many workers it removed.';
