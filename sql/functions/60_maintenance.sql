-- pushpop functions, part 6: maintenance.
--
-- A worker's maintenance leader (one per database) calls requeue_expired every few seconds
-- and cleanup every minute; any other client may call them too.

-- Reads every pending message (never more than those in flight) through the pending index.
CREATE OR REPLACE FUNCTION pushpop.requeue_expired()
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    moved  integer;
    topics text[];
BEGIN
    WITH expired AS MATERIALIZED (
        SELECT p.id FROM pushpop.messages AS p
        WHERE p.state = 'pending' AND p.lease_until < now()
        FOR UPDATE SKIP LOCKED
    ), moved_rows AS (
        UPDATE pushpop.messages AS m
        SET state = CASE WHEN m.attempts >= m.max_attempts THEN 'discarded' ELSE 'ready' END,
            state_time = now(), lease = NULL,
            error = format('lease expired on attempt %s of %s', m.attempts, m.max_attempts)
                    || CASE WHEN m.attempts >= m.max_attempts THEN ': discarded' ELSE '' END
        FROM expired WHERE m.id = expired.id
        RETURNING m.topic, m.state
    )
    SELECT count(*), array_agg(DISTINCT r.topic) FILTER (WHERE r.state = 'ready')
    INTO moved, topics FROM moved_rows AS r;
    IF topics IS NOT NULL THEN
        PERFORM pushpop.wake(topics);
    END IF;
    RETURN moved;
END $$;
COMMENT ON FUNCTION pushpop.requeue_expired() IS
    'Returns every pending message whose lease deadline has passed to the queue, or discards it once '
    'it has used max_attempts (error says why). Returns how many messages it moved.';

CREATE OR REPLACE FUNCTION pushpop.cleanup(grace interval DEFAULT '1 day', max_rows integer DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM pushpop.require(cleanup.grace >= interval '0', 'grace must be zero or positive');
    PERFORM pushpop.require(cleanup.max_rows IS NULL OR cleanup.max_rows >= 1,
                            'max_rows must be at least 1 (or NULL for all)');
    WITH old AS MATERIALIZED (
        SELECT f.id FROM pushpop.messages AS f
        WHERE f.state IN ('completed', 'discarded') AND f.state_time < now() - cleanup.grace
        ORDER BY f.state_time
        LIMIT cleanup.max_rows
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM pushpop.messages AS m USING old WHERE m.id = old.id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
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
    DELETE FROM pushpop.messages AS m WHERE m.topic = purge.topic AND m.state <> 'pending';
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
COMMENT ON FUNCTION pushpop.purge(text) IS
    'Deletes every message of the topic that is not pending (in-flight deliveries finish normally). '
    'Returns how many.';
