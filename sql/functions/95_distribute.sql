-- pushpop functions, part 10: one queue sharded over the nodes of a Citus cluster.
--
-- SELECT pushpop.distribute(shard_count => 32) on a Citus coordinator turns an installed pushpop
-- into a distributed one: messages are sharded by route (route_of(topic), 10_basics.sql), so
-- each topic lives on one shard and every statement of the hot path is routed to the one node
-- that holds it. The other tables stay on the coordinator, where every pushpop function runs
-- (docs/scaling.md says why, table by table). This file comes after 90_security.sql, so it
-- locks its function down itself.

CREATE OR REPLACE FUNCTION pushpop.distribute(shard_count integer DEFAULT 32)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    on_coordinator boolean;
    sharded        boolean;
    unique_index   record;
    routine        regprocedure;
BEGIN
    PERFORM pushpop.require(distribute.shard_count BETWEEN 1 AND 64000,
                            'shard_count must be between 1 and 64000');
    IF NOT EXISTS (SELECT FROM pg_extension AS e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'pushpop: distribute() needs the Citus extension, which database % does not have',
            current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'On a Citus coordinator a superuser runs CREATE EXTENSION citus and adds '
                         'the worker nodes (citus_add_node) first; a single server needs nothing.';
    END IF;
    -- Citus's functions and catalogs are named in dynamic SQL: they exist only where it does.
    EXECUTE 'SELECT citus_is_coordinator()' INTO on_coordinator;
    IF NOT on_coordinator THEN
        RAISE EXCEPTION 'pushpop: distribute() runs on the Citus coordinator, not on a worker node'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Citus changes functions on every node over one connection per node; the copy of the
    -- messages below must use those same connections, not parallel ones.
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- One change at a time, and none during a migration; pushes and pops wait until it commits.
    LOCK TABLE pushpop.schema_migrations IN EXCLUSIVE MODE;
    LOCK TABLE pushpop.messages IN ACCESS EXCLUSIVE MODE;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_dist_partition AS p '
            'WHERE p.logicalrelid = ''pushpop.messages''::regclass)' INTO sharded;
    IF sharded THEN
        IF NOT pushpop.distributed() THEN  -- sharded by hand: the functions must know
            CALL pushpop.define_setting('distributed', 'boolean', 'true');
        END IF;
        RETURN false;
    END IF;

    -- Every row gets its topic's route. A message pending now keeps a lease without one: its
    -- acknowledgement finds nothing and it is delivered again once the lease runs out.
    UPDATE pushpop.messages AS m SET route = pushpop.route_of(m.topic)
    WHERE m.route IS DISTINCT FROM pushpop.route_of(m.topic);
    ALTER TABLE pushpop.messages ALTER COLUMN route SET NOT NULL;

    -- Citus enforces a unique index only when it includes the shard key: route goes first in
    -- each (a topic has one route, so each still means what it meant). An id is then unique
    -- per topic, not across topics.
    ALTER TABLE pushpop.messages DROP CONSTRAINT messages_pkey,
        ADD CONSTRAINT messages_pkey PRIMARY KEY (route, id);
    FOR unique_index IN
        SELECT i.indexrelid::regclass AS name, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index AS i
        WHERE i.indrelid = 'pushpop.messages'::regclass AND i.indisunique AND NOT i.indisprimary
          AND NOT EXISTS (SELECT FROM pg_attribute AS a
                          WHERE a.attrelid = i.indrelid AND a.attname = 'route'
                            AND a.attnum = ANY (i.indkey))
    LOOP
        EXECUTE format('DROP INDEX %s', unique_index.name);
        EXECUTE regexp_replace(unique_index.definition, ' USING (\w+) \(', ' USING \1 (route, ');
    END LOOP;

    EXECUTE format('SELECT create_distributed_table(%L, %L, shard_count => %s, colocate_with => %L)',
                   'pushpop.messages', 'route', distribute.shard_count, 'none');
    -- The copy of the rows the coordinator kept: Citus reads the shards from now on.
    EXECUTE format('SELECT truncate_local_data_after_distributing_table(%L)', 'pushpop.messages');
    -- Every other table stays on the coordinator, where every pushpop function runs: the
    -- registry, the wake-ups, the leader, the settings and grants are read and written there.

    -- The workers get every pushpop routine, and from now on each change to one (a migration,
    -- a setting): the statements sent to them call some (distributed(), lease_route()).
    -- Routines created while Citus was installed are on the workers already.
    FOR routine IN EXECUTE
        'SELECT p.oid::regprocedure FROM pg_proc AS p '
        'WHERE p.pronamespace = ''pushpop''::regnamespace '
        '  AND NOT EXISTS (SELECT FROM pg_dist_object AS o '
        '                  WHERE o.classid = ''pg_proc''::regclass AND o.objid = p.oid)'
    LOOP
        EXECUTE format('SELECT create_distributed_function(%L)', routine::text);
    END LOOP;
    -- pop_at goes with the messages of its route: Citus sends each call of it, made in a FROM
    -- clause, to the node that holds the route's shard, where its statements run locally
    -- (30_pop.sql). Distributing a distributed function again with these arguments updates it;
    -- the block at the end of this file does the same for an installation distributed before.
    EXECUTE format('SELECT create_distributed_function(%L, %L, colocate_with := %L, '
                   'force_delegation := true)',
                   'pushpop.pop_at(integer,text,interval,integer,timestamptz)', 'route',
                   'pushpop.messages');

    CALL pushpop.define_setting('distributed', 'boolean', 'true');
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.distribute(integer) IS
    'On a Citus coordinator: shards the queue over the cluster''s nodes by topic, in shard_count '
    'shards, and keeps the other tables on the coordinator. Takes the '
    'queue''s lock while it copies the messages. True when it distributed the queue now, false when '
    'it was distributed already. Raises object_not_in_prerequisite_state (55000) without Citus.';

-- Only the owner of schema pushpop may distribute it: no pushpop role gets it.
CALL pushpop.lock_down('pushpop.distribute(integer)');

-- An installation distributed before pop_at existed gets it delegated as distribute() does it
-- now: a migration runs this file again. Distributing it again changes nothing.
DO $$
BEGIN
    IF pushpop.distributed() AND EXISTS (SELECT FROM pg_extension AS e WHERE e.extname = 'citus')
    THEN
        EXECUTE format('SELECT create_distributed_function(%L, %L, colocate_with := %L, '
                       'force_delegation := true)',
                       'pushpop.pop_at(integer,text,interval,integer,timestamptz)', 'route',
                       'pushpop.messages');
    END IF;
END $$;
