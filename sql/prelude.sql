-- pushpop: the first step of every install or upgrade, in its transaction.
--
-- Makes the schema and the two tables that record what is installed, refuses a schema or
-- record that another role made (whoever created them could act with the rights of the role
-- that migrates), and takes the lock that makes concurrent migrators take turns. Both
-- `pushpop migrate` and sql/install.sql run it first.

-- Names resolve in pg_catalog only: every pushpop name below is schema-qualified, so a
-- caller's search_path or temporary objects cannot change what the steps do.
SET LOCAL search_path = pg_catalog, pg_temp;
-- A lock held elsewhere (another migrator, a long transaction) fails the step instead of
-- hanging it.
SET LOCAL lock_timeout = '30s';
-- "already exists, skipping" is what an upgrade expects to hear.
SET LOCAL client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS pushpop;

CREATE TABLE IF NOT EXISTS pushpop.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The checksum of the function files last applied by `pushpop migrate`; it applies them
-- again whenever they differ. install.sql empties it, so a later `pushpop migrate` applies them.
CREATE TABLE IF NOT EXISTS pushpop.schema_functions (
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

DO $$
DECLARE
    foreign_owner text;
BEGIN
    SELECT o.what INTO foreign_owner FROM (
        SELECT 'schema pushpop belongs to ' || n.nspowner::regrole AS what
        FROM pg_catalog.pg_namespace AS n
        WHERE n.nspname = 'pushpop' AND n.nspowner <> current_user::regrole
        UNION ALL
        SELECT 'table ' || c.oid::regclass || ' belongs to ' || c.relowner::regrole
        FROM pg_catalog.pg_class AS c
        WHERE c.oid IN ('pushpop.schema_migrations'::regclass, 'pushpop.schema_functions'::regclass)
          AND c.relowner <> current_user::regrole
        UNION ALL
        SELECT 'table ' || t.tgrelid::regclass || ' has a trigger ' || t.tgname || ' pushpop did not make'
        FROM pg_catalog.pg_trigger AS t
        WHERE t.tgrelid IN ('pushpop.schema_migrations'::regclass, 'pushpop.schema_functions'::regclass)
          AND NOT t.tgisinternal
    ) AS o LIMIT 1;
    IF foreign_owner IS NOT NULL THEN
        RAISE EXCEPTION 'pushpop: % and not to %, who migrates: refusing to adopt it',
            foreign_owner, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Migrate as the role that owns schema pushpop. If another role made it '
                         'before pushpop was installed, inspect and drop it first.';
    END IF;
END $$;

-- Readers of the tables go on; a second migrator waits here until the first commits.
LOCK TABLE pushpop.schema_migrations IN EXCLUSIVE MODE;
