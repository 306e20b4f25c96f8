-- pushpop functions, part 4: acknowledgements.
--
-- Each is fenced by the lease token pop issued: it changes the message only while it is
-- pending under that very lease, and otherwise returns false and changes nothing (the lease
-- ran out and the message may be with another consumer). A lease is set only while a message
-- is pending, so matching (id, lease) is the whole test.

CREATE OR REPLACE FUNCTION pushpop.complete(id uuid, lease uuid)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'completed', state_time = now(), lease = NULL
    WHERE m.id = complete.id AND m.lease = complete.lease;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.complete(uuid, uuid) IS
    'Marks a pending message completed. Fenced: false, and nothing changes, unless the message is '
    'pending under this lease.';

CREATE OR REPLACE FUNCTION pushpop.complete_many(ids uuid[], leases uuid[])
RETURNS boolean[] LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done boolean[];
BEGIN
    IF NOT coalesce(cardinality(complete_many.ids) = cardinality(complete_many.leases), false) THEN
        PERFORM pushpop.require(complete_many.ids IS NOT NULL, 'ids must not be NULL');
        PERFORM pushpop.require(complete_many.leases IS NOT NULL, 'leases must not be NULL');
        PERFORM pushpop.require(false, format('ids and leases must be as long as each other, got %s and %s',
                                              cardinality(complete_many.ids), cardinality(complete_many.leases)));
    END IF;
    WITH completed AS (
        UPDATE pushpop.messages AS m
        SET state = 'completed', state_time = now(), lease = NULL
        FROM unnest(complete_many.ids, complete_many.leases) WITH ORDINALITY AS d(id, lease, n)
        WHERE m.id = d.id AND m.lease = d.lease
        RETURNING d.n
    )
    SELECT coalesce(array_agg(c.n IS NOT NULL ORDER BY i.n), '{}')
    INTO done
    FROM generate_series(1, cardinality(complete_many.ids)) AS i(n)
    LEFT JOIN completed AS c ON c.n = i.n;
    RETURN done;
END $$;
COMMENT ON FUNCTION pushpop.complete_many(uuid[], uuid[]) IS
    'Completes many pending messages in one statement: ids[i] under leases[i], each fenced like '
    'complete. Returns one boolean per input, in input order: true where that delivery was completed.';

CREATE OR REPLACE FUNCTION pushpop.discard(id uuid, lease uuid, reason text DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pushpop.messages AS m
    SET state = 'discarded', state_time = now(), lease = NULL,
        error = coalesce(discard.reason, m.error)
    WHERE m.id = discard.id AND m.lease = discard.lease;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.discard(uuid, uuid, text) IS
    'Marks a pending message discarded (it will not be delivered again), keeping reason in error. '
    'Fenced: false unless the message is pending under this lease.';

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
    WHERE m.id = extend.id AND m.lease = extend.lease;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.extend(uuid, uuid, interval) IS
    'Moves the lease deadline of a pending message to now() + lease_for. Fenced: false unless the '
    'message is pending under this lease.';
