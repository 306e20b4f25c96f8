-- pushpop 0001: the tables, their indexes, the message type and the roles.
--
-- Numbered files hold what has state: tables, columns, indexes, types, roles. They run once,
-- in order, and record themselves. The functions live in sql/functions/, one file per part
-- of the queue, re-applied whenever they change.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (1, 'baseline');

-- Messages ------------------------------------------------------------------------------

-- One row per message, whatever its state. The state column holds one more value than
-- callers see: "scheduled" is a ready message that is not due yet. Keeping it apart lets
-- the ready index hold only poppable messages, so pop never walks past future ones.
--
-- The table has no CHECK constraints: PostgreSQL prepares a table's CHECK expressions once
-- per statement, and pushpop's statements mostly write one row, so they cost about an eighth
-- of a push. The rules are kept where rows are written: only pushpop's functions may write
-- the table, each checks its arguments, and each sets state and lease together.
CREATE TABLE pushpop.messages (
    id           uuid PRIMARY KEY,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    state_time   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    priority     integer NOT NULL DEFAULT 0,
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25,
    lease        uuid,
    state        text NOT NULL,
    topic        text NOT NULL,
    dedup_key    text,
    error        text,
    payload      bytea NOT NULL,
    -- No index covers it, so extending a lease is a HOT update: the row changes in place,
    -- with no new index entries.
    lease_until  timestamptz
) WITH (
    -- Room on each page for the new versions its updates write, and vacuum soon after, so
    -- dead rows are reused before the table grows.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
COMMENT ON TABLE pushpop.messages IS
    'Every message, whatever its state. Private: use the pushpop.* functions, which keep its rules: '
    'state is scheduled, ready, pending, completed or discarded; lease and lease_until are set while '
    'the message is pending, and lease only then; topic has 1 to 255 characters; max_attempts is at '
    'least 1. state_time is when the message was pushed, retried or finished, when it is due if '
    'scheduled, and when it was popped if pending.';
COMMENT ON COLUMN pushpop.messages.lease_until IS
    'When the latest lease runs out; requeue_expired looks at it while the message is pending.';

-- pop: highest priority, then oldest, then push order; only poppable rows are indexed.
CREATE INDEX messages_ready ON pushpop.messages (topic, priority DESC, state_time, seq)
    WHERE state = 'ready';
-- pop promotes due scheduled messages of its topic.
CREATE INDEX messages_scheduled ON pushpop.messages (topic, state_time)
    WHERE state = 'scheduled';
-- requeue_expired reads the pending messages. Keyed by pop time, a pop appends its entry at
-- the index's end.
CREATE INDEX messages_pending ON pushpop.messages (state_time)
    WHERE state = 'pending';
-- cleanup and stats read finished messages by age, state and topic without visiting the table.
CREATE INDEX messages_finished ON pushpop.messages (state_time) INCLUDE (topic, state)
    WHERE state IN ('completed', 'discarded');
-- push: one live message per (topic, dedup_key).
CREATE UNIQUE INDEX messages_dedup ON pushpop.messages (topic, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('scheduled', 'ready', 'pending');

-- What pop, find and the other readers return.
CREATE TYPE pushpop.message AS (
    id           uuid,
    topic        text,
    state        text,
    state_time   timestamptz,
    payload      bytea,
    priority     integer,
    attempts     integer,
    max_attempts integer,
    lease        uuid,
    created_at   timestamptz,
    error        text,
    dedup_key    text,
    lease_until  timestamptz
);

-- Wake-ups -------------------------------------------------------------------------------

-- Consumers asleep until a push to one of their topics (pushpop.wait_for_push). Unlogged:
-- after a crash it starts empty, and every consumer registers again before its next sleep.
CREATE UNLOGGED TABLE pushpop.waiting (
    topic    text NOT NULL,
    consumer uuid NOT NULL,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, consumer)
) WITH (fillfactor = 50);
COMMENT ON TABLE pushpop.waiting IS
    'Consumers waiting for a NOTIFY on channel pushpop, by topic. Private: use pushpop.wait_for_push().';

-- Worker registry ------------------------------------------------------------------------

CREATE TABLE pushpop.workers (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    topics       text[] NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- heartbeats update rows in place
COMMENT ON TABLE pushpop.workers IS
    'Running workers and their last heartbeat. Private: use pushpop.workers() and the worker_* functions.';

-- Roles ----------------------------------------------------------------------------------

-- Three NOLOGIN roles, granted to the roles applications log in as (sql/functions/90_security.sql
-- says which functions each may call):
--   pushpop_producer  push
--   pushpop_consumer  what a worker needs: pop, the acknowledgements, maintenance, the registry
--   pushpop_admin     both, plus purge and the payload limit
-- Roles belong to the server, not the database: another database may hold pushpop already,
-- or be migrating at this moment. The role that migrates needs CREATEROLE only while they do
-- not exist; a superuser may create them beforehand instead.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['pushpop_producer', 'pushpop_consumer', 'pushpop_admin'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = role_name);
        BEGIN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION
            -- A concurrent migration of another database created it first: it exists now.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'pushpop: role % does not exist and % may not create it',
                    role_name, current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Migrate as a role with CREATEROLE, or have a superuser run '
                                 'CREATE ROLE pushpop_producer NOLOGIN; CREATE ROLE pushpop_consumer '
                                 'NOLOGIN; CREATE ROLE pushpop_admin NOLOGIN; first.';
        END;
    END LOOP;
END $$;

-- Calling a function by its qualified name needs USAGE on the schema; the tables stay private.
GRANT USAGE ON SCHEMA pushpop TO pushpop_producer, pushpop_consumer, pushpop_admin;
