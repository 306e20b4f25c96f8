-- pushpop functions, part 1: argument checks.
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
