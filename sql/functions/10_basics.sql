-- pushpop functions, part 1: argument checks and settings.
--
-- Every function checks its arguments before it writes anything; a bad one raises SQLSTATE
-- 22023 (invalid_parameter_value) with a message that names it. The hot paths test all their
-- arguments in one expression and call these helpers only when that fails, to name the culprit.
--
-- Each file under sql/functions/ holds the current text of its functions and is applied
-- whole, again, whenever any of them changes (by `pushpop migrate` or sql/install.sql).
-- Every function runs as its owner (SECURITY DEFINER) with search_path pinned to pg_catalog,
-- so callers' search_path or temporary objects cannot change what it does; names of
-- pushpop's own objects are always schema-qualified. 90_security.sql says who may call what.

CREATE OR REPLACE FUNCTION pushpop.require(ok boolean, problem text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'pushpop: %', problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require(boolean, text) IS
    'Raises invalid_parameter_value (22023) with the given problem unless ok is true. Used by every function to check its arguments.';

CREATE OR REPLACE FUNCTION pushpop.require_topic(topic text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF topic IS NULL OR length(topic) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'pushpop: topic must be 1 to 255 characters, got %',
            coalesce(length(topic) || ' characters', 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require_topic(text) IS
    'Raises invalid_parameter_value (22023) unless topic is 1 to 255 characters.';

CREATE OR REPLACE FUNCTION pushpop.require_ordering_key(ordering_key text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF length(ordering_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'pushpop: ordering_key must be 1 to 255 characters (or NULL for none), got % characters',
            length(ordering_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require_ordering_key(text) IS
    'Raises invalid_parameter_value (22023) unless ordering_key is NULL (no key) or 1 to 255 '
    'characters.';

-- A database's settings are the constant bodies of IMMUTABLE functions (max_payload_bytes,
-- max_header_bytes, topics_paused, topic_grants_in_use), which PostgreSQL folds into the
-- cached plans of the functions that read them: a setting costs a push nothing. Redefining a
-- function invalidates every cached plan that used it, in every session, so a new value holds
-- from each session's next transaction on.
CREATE OR REPLACE PROCEDURE pushpop.define_setting(name text, result_type text, value text)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
BEGIN
    -- One change at a time, and none during a migration: concurrent redefinitions of a
    -- function fail. Only pushpop's owner can take this lock.
    BEGIN
        LOCK TABLE pushpop.schema_migrations IN EXCLUSIVE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'pushpop: a migration or another change of settings is running; try again'
            USING ERRCODE = 'lock_not_available';
    END;
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION pushpop.%I() RETURNS %s LANGUAGE sql IMMUTABLE PARALLEL SAFE '
        'SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
        define_setting.name, define_setting.result_type, 'SELECT ' || define_setting.value);
END $$;
COMMENT ON PROCEDURE pushpop.define_setting(text, text, text) IS
    'Used by the functions that change a setting of this database: redefines pushpop.<name>() to '
    'return value, a constant of result_type.';

-- topics_paused() is true while any topic is paused (55_controls.sql); it keeps its value here.
DO $$
DECLARE
    paused boolean := false;
BEGIN
    IF to_regprocedure('pushpop.topics_paused()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.topics_paused()' INTO paused;
    END IF;
    CALL pushpop.define_setting('topics_paused', 'boolean', paused::text);
END $$;
COMMENT ON FUNCTION pushpop.topics_paused() IS
    'True while any topic of this database is paused (pushpop.pause): only then does pop look up '
    'whether its topic is.';

-- A distributed installation (95_distribute.sql) ---------------------------------------------

-- distributed() is true once pushpop.distribute() has sharded the queue over a Citus cluster;
-- it keeps its value here. On a single server it folds to false in every plan that reads it,
-- so the route conditions below cost nothing there.
DO $$
DECLARE
    sharded boolean := false;
BEGIN
    IF to_regprocedure('pushpop.distributed()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.distributed()' INTO sharded;
    END IF;
    CALL pushpop.define_setting('distributed', 'boolean', sharded::text);
END $$;
COMMENT ON FUNCTION pushpop.distributed() IS
    'True once pushpop.distribute() has sharded the queue over a Citus cluster: only then do push '
    'and pop compute a route, and do the acknowledgements read it from the lease.';

-- The shard key of a topic: the first 32 bits of its SHA-256. A digest, not hashtext(), because
-- the value is stored in every row and must never change with the PostgreSQL version or the
-- machine; SHA-256, not MD5, because MD5 is refused on FIPS systems.
CREATE OR REPLACE FUNCTION pushpop.route_of(topic text)
RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ('x' || encode(substring(sha256(convert_to(route_of.topic, 'UTF8')) FROM 1 FOR 4),
                          'hex'))::bit(32)::integer
$$;
COMMENT ON FUNCTION pushpop.route_of(text) IS
    'The shard key of a topic on a distributed installation: the same integer for every message '
    'of the topic, on every node and PostgreSQL version.';

-- A lease token (or message id) that carries its message's route in its first 4 bytes; the
-- other 12 are random.
CREATE OR REPLACE FUNCTION pushpop.new_lease(route integer)
RETURNS uuid LANGUAGE sql VOLATILE STRICT
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT overlay(gen_random_uuid()::text PLACING lpad(to_hex(new_lease.route), 8, '0')
                   FROM 1 FOR 8)::uuid
$$;
COMMENT ON FUNCTION pushpop.new_lease(integer) IS
    'A fresh token whose first 4 bytes are route, so that an acknowledgement, which names only '
    '(id, lease), is routed to the shard of its message; the other 12 bytes are random.';

CREATE OR REPLACE FUNCTION pushpop.lease_route(lease uuid)
RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ('x' || left(lease_route.lease::text, 8))::bit(32)::integer
$$;
COMMENT ON FUNCTION pushpop.lease_route(uuid) IS
    'The route that a token made by pushpop.new_lease carries: the shard key of its message.';

-- Topic grants (90_security.sql) -------------------------------------------------------------

-- topic_grants_in_use() is true once any topic grant exists; it keeps its value here.
DO $$
DECLARE
    in_use boolean := false;
BEGIN
    IF to_regprocedure('pushpop.topic_grants_in_use()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.topic_grants_in_use()' INTO in_use;
    END IF;
    CALL pushpop.define_setting('topic_grants_in_use', 'boolean', in_use::text);
END $$;
COMMENT ON FUNCTION pushpop.topic_grants_in_use() IS
    'True once any topic grant exists in this database (pushpop.grant_topics): from then on every '
    'role but pushpop_admin and the owner may use only the topics granted to it.';

-- PARALLEL SAFE, as the settings are: a query that calls a function not marked so never gets
-- parallel workers (stats() counting a long history in one process took twice as long).
CREATE OR REPLACE FUNCTION pushpop.may(privilege text, topic text)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT pushpop.topic_grants_in_use()
        OR pg_has_role(session_user, 'pushpop_admin', 'USAGE')
        OR EXISTS (SELECT FROM pg_namespace AS n
                   WHERE n.nspname = 'pushpop' AND n.nspowner = session_user::regrole)
        OR EXISTS (SELECT FROM pushpop.topic_grants AS g JOIN pg_roles AS r ON r.rolname = g.grantee
                   WHERE g.privilege = may.privilege
                     AND (g.pattern = may.topic
                          OR (right(g.pattern, 1) = '*' AND starts_with(may.topic, left(g.pattern, -1))))
                     AND pg_has_role(session_user, r.oid, 'USAGE'))
$$;
COMMENT ON FUNCTION pushpop.may(text, text) IS
    'Whether the role logged in (session_user) may push to or pop from the topic: always while no '
    'topic grant exists, else when pushpop.grant_topics granted it that privilege on a matching '
    'pattern (to it or a role it belongs to), or it is pushpop_admin or the owner.';

CREATE OR REPLACE FUNCTION pushpop.require_grant(privilege text, topic text)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pushpop.may(require_grant.privilege, require_grant.topic) THEN
        RAISE EXCEPTION 'pushpop: role % may not % topic %', session_user,
            CASE require_grant.privilege WHEN 'push' THEN 'push to' ELSE 'pop from' END,
            quote_literal(require_grant.topic)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'An administrator grants it with pushpop.grant_topics().';
    END IF;
END $$;
COMMENT ON FUNCTION pushpop.require_grant(text, text) IS
    'Raises insufficient_privilege (42501) unless pushpop.may(privilege, topic).';
