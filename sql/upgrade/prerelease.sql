-- pushpop: brings a database made by the pre-release migrations (0001_core ... 0008, which
-- recorded themselves as versions 1 to 8) to the layout of migrations/0001_baseline.sql.
-- Run after prelude.sql, before the numbered migrations, only when version 1 is 'core'.
-- The tables, indexes and roles are already as the baseline makes them; what differs is
-- below. The functions files then replace every function.

DO $$
DECLARE
    missing integer[];
BEGIN
    SELECT array_agg(v ORDER BY v) INTO missing
    FROM generate_series(1, 8) AS v
    WHERE NOT EXISTS (SELECT FROM pushpop.schema_migrations AS s WHERE s.version = v);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'pushpop: this database has only some of the pre-release migrations (missing %)',
            missing
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Apply the pre-release files 0001 to 0008 first, then upgrade.';
    END IF;
END $$;

-- Messages as pop and find return them carry the lease deadline in a column of its own, and
-- complete_many answers for each input; those functions are made again with the new shapes.
DROP FUNCTION pushpop.pop(text, interval, integer);
DROP FUNCTION pushpop.find(uuid);
DROP FUNCTION pushpop.complete_many(uuid[], uuid[]);
ALTER TYPE pushpop.message ADD ATTRIBUTE lease_until timestamptz;

-- Migrations no longer record themselves through a procedure.
DROP PROCEDURE pushpop.record_migration(integer, text);

-- The eight pre-release steps are one baseline now; it keeps the date pushpop was installed.
WITH old AS (
    DELETE FROM pushpop.schema_migrations AS s WHERE s.version BETWEEN 1 AND 8 RETURNING s.*
)
INSERT INTO pushpop.schema_migrations (version, name, applied_at)
SELECT 1, 'baseline', min(old.applied_at) FROM old;
