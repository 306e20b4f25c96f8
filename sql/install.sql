-- Installs pushpop into the current database, or upgrades it, in one transaction:
--
--     psql -v ON_ERROR_STOP=1 -f sql/install.sql
--
-- It does what `pushpop migrate` does: the prelude, then each numbered migration the database
-- has not seen, then every function file. Run it as the role that owns schema pushpop (on a
-- first install: a role with CREATE on the database, and CREATEROLE until the pushpop roles
-- exist).

\set ON_ERROR_STOP on
BEGIN;

\ir prelude.sql

SELECT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 1 AND name = 'core') AS pending \gset
\if :pending
\ir upgrade/prerelease.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 1) AS pending \gset
\if :pending
\ir migrations/0001_baseline.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 2) AS pending \gset
\if :pending
\ir migrations/0002_wakeups_never_block.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 3) AS pending \gset
\if :pending
\ir migrations/0003_access_control.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 4) AS pending \gset
\if :pending
\ir migrations/0004_expiry_pause_headers.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 5) AS pending \gset
\if :pending
\ir migrations/0005_schedules.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 6) AS pending \gset
\if :pending
\ir migrations/0006_fanout.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 7) AS pending \gset
\if :pending
\ir migrations/0007_ordering_keys.sql
\endif

SELECT NOT EXISTS (SELECT FROM pushpop.schema_migrations WHERE version = 8) AS pending \gset
\if :pending
\ir migrations/0008_distributable.sql
\endif

\ir functions/10_basics.sql
\ir functions/15_subscriptions.sql
\ir functions/20_push.sql
\ir functions/30_pop.sql
\ir functions/40_acknowledge.sql
\ir functions/50_inspect.sql
\ir functions/55_controls.sql
\ir functions/56_operations.sql
\ir functions/60_maintenance.sql
\ir functions/65_schedules.sql
\ir functions/70_wakeups.sql
\ir functions/80_workers.sql
\ir functions/90_security.sql
\ir functions/95_distribute.sql
-- `pushpop migrate` applies the function files again next time: it cannot tell they are current.
DELETE FROM pushpop.schema_functions;

COMMIT;
