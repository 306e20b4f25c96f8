-- pushpop 0002: the worker registry.
-- Workers register themselves and heartbeat, so anyone can see who consumes what.

BEGIN;

CALL pushpop.record_migration(2, 'workers');

CREATE TABLE pushpop.workers (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    topics       text[] NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pushpop.workers IS
    'Running workers and their last heartbeat. Private: use pushpop.workers() and the worker_* functions.';

CREATE FUNCTION pushpop.worker_heartbeat(
    id          uuid,
    host        text,
    pid         integer,
    topics      text[],
    concurrency integer
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pushpop.require(worker_heartbeat.id IS NOT NULL, 'id must not be NULL');
    PERFORM pushpop.require(worker_heartbeat.host IS NOT NULL, 'host must not be NULL');
    PERFORM pushpop.require(worker_heartbeat.pid IS NOT NULL, 'pid must not be NULL');
    PERFORM pushpop.require(cardinality(worker_heartbeat.topics) >= 1, 'topics must not be empty');
    PERFORM pushpop.require(worker_heartbeat.concurrency >= 1, 'concurrency must be at least 1');
    INSERT INTO pushpop.workers AS w (id, host, pid, topics, concurrency)
    VALUES (worker_heartbeat.id, worker_heartbeat.host, worker_heartbeat.pid,
            worker_heartbeat.topics, worker_heartbeat.concurrency)
    ON CONFLICT ON CONSTRAINT workers_pkey DO UPDATE SET heartbeat_at = now();
END $$;
COMMENT ON FUNCTION pushpop.worker_heartbeat(uuid, text, integer, text[], integer) IS
    'Registers a worker on its first call and records a heartbeat on every later one. '
    'A worker calls it every few seconds; one that stops calling drops out of pushpop.workers().';

CREATE FUNCTION pushpop.worker_stopped(id uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pushpop.workers AS w WHERE w.id = worker_stopped.id;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.worker_stopped(uuid) IS
    'Removes a worker from the registry when it shuts down cleanly. True if it was registered.';

CREATE FUNCTION pushpop.workers(stale_after interval DEFAULT '1 minute')
RETURNS TABLE (id uuid, host text, pid integer, topics text[], concurrency integer,
               started_at timestamptz, heartbeat_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT w.id, w.host, w.pid, w.topics, w.concurrency, w.started_at, w.heartbeat_at
    FROM pushpop.workers AS w
    WHERE w.heartbeat_at > now() - workers.stale_after
    ORDER BY w.started_at, w.id
$$;
COMMENT ON FUNCTION pushpop.workers(interval) IS
    'The live workers: those whose last heartbeat is more recent than stale_after.';

CREATE FUNCTION pushpop.prune_workers(stale_after interval DEFAULT '1 minute')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require(prune_workers.stale_after > interval '0', 'stale_after must be positive');
    DELETE FROM pushpop.workers AS w WHERE w.heartbeat_at <= now() - prune_workers.stale_after;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.prune_workers(interval) IS
    'Deletes registry entries of workers that stopped heartbeating more than stale_after ago '
    '(they crashed or were killed). Returns how many.';

COMMIT;
