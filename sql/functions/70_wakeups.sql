-- pushpop functions, part 7: wake-ups.
--
-- A consumer about to sleep registers in pushpop.waiting (wait_for_push) and LISTENs on
-- channel pushpop. The first push, defer or requeue that makes a message of one of its topics
-- ready ends the registration and sends a NOTIFY whose payload is the topic. Busy consumers
-- are not registered, so pushes under load never pay for a NOTIFY.

-- Ends the registrations of the given topics and notifies once per topic that had one.
CREATE OR REPLACE FUNCTION pushpop.wake(topics text[])
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    notified integer;
BEGIN
    -- Rows another transaction is waking already are skipped: it notifies for them.
    WITH woken AS (
        DELETE FROM pushpop.waiting AS w
        WHERE w.ctid = ANY (ARRAY(
            SELECT x.ctid FROM pushpop.waiting AS x
            WHERE x.topic = ANY (wake.topics)
            FOR UPDATE SKIP LOCKED))
        RETURNING w.topic
    )
    SELECT count(pg_notify('pushpop', t.topic)) INTO notified
    FROM (SELECT DISTINCT o.topic FROM woken AS o) AS t;
    RETURN notified;
END $$;
COMMENT ON FUNCTION pushpop.wake(text[]) IS
    'Sends the NOTIFY that wakes consumers waiting (pushpop.wait_for_push) on any of topics and returns '
    'how many topics it notified. The functions that make messages ready call it when someone waits.';

CREATE OR REPLACE FUNCTION pushpop.wait_for_push(consumer uuid, topics text[])
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require(wait_for_push.consumer IS NOT NULL, 'consumer must not be NULL');
    PERFORM pushpop.require(cardinality(wait_for_push.topics) >= 1, 'topics must not be empty');
    PERFORM pushpop.require_topic(t) FROM unnest(wait_for_push.topics) AS t;
    IF pushpop.topic_grants_in_use() THEN
        PERFORM pushpop.require_grant('pop', t) FROM unnest(wait_for_push.topics) AS t;
    END IF;
    -- The consumer's earlier rows go, except those a producer is waking right now (it holds
    -- them until it commits, and they vanish then): waiting for it could take as long as the
    -- producer's transaction.
    DELETE FROM pushpop.waiting AS w
    WHERE w.ctid = ANY (ARRAY(
        SELECT x.ctid FROM pushpop.waiting AS x
        WHERE x.consumer = wait_for_push.consumer
        FOR UPDATE SKIP LOCKED));
    INSERT INTO pushpop.waiting AS w (topic, consumer)
    SELECT DISTINCT t, wait_for_push.consumer FROM unnest(wait_for_push.topics) AS t;
END $$;
COMMENT ON FUNCTION pushpop.wait_for_push(uuid, text[]) IS
    'Call before sleeping on LISTEN pushpop: the next message to become ready in one of topics then '
    'sends a NOTIFY (payload: the topic) and ends the registration. Wait about 100 ms (or until '
    'notified) after this call and pop once more: a push that was committing as you called did '
    'not notify. If that pop is empty, sleep, unless a notification came during the wait: it ended '
    'the registration, so call again first. consumer is any id of your own; calling again renews '
    'it. Registrations older than a minute are dropped by prune_workers() unless consumer is a '
    'live worker (pushpop.worker_heartbeat), so any other sleeper renews its registration each '
    'time it wakes.';
