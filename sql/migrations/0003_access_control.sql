-- pushpop 0003: one database, several applications that cannot touch each other's messages.
--
-- * Topic grants: once any are made (pushpop.grant_topics), each role may push to, pop from
--   and look at only the topics granted to it (or to a role it belongs to); pushpop_admin
--   and the schema's owner see everything.
-- * Fleet maintenance (requeue_expired, cleanup, prune_workers) needs pushpop_maintainer.
--   pushpop_consumer belongs to it, so workers keep running maintenance; an operator who
--   wants applications without it revokes that membership and grants pushpop_maintainer to
--   the workers' own roles.
-- * The maintenance leader is chosen through a row only pushpop's functions write, not an
--   advisory lock that any role that can connect could take and keep.
-- * A worker's registry entry remembers the role that made it: only that role heartbeats it
--   or removes it.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (3, 'access_control');

CREATE TABLE pushpop.topic_grants (
    grantee   name NOT NULL,
    pattern   text NOT NULL,
    privilege text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grantee, pattern, privilege)
);
COMMENT ON TABLE pushpop.topic_grants IS
    'Which roles may push to or pop from which topics; pattern is a topic, or a prefix ending in *. '
    'Private: use pushpop.grant_topics(), pushpop.revoke_topics() and pushpop.topic_grants().';

-- At most one row: the worker that runs maintenance, until its lease on the role runs out.
CREATE TABLE pushpop.maintenance_leader (
    one_row boolean PRIMARY KEY DEFAULT true,
    worker  uuid NOT NULL,
    until   timestamptz NOT NULL
);
COMMENT ON TABLE pushpop.maintenance_leader IS
    'The worker that runs maintenance for all, while its lease lasts. Private: use '
    'pushpop.lead_maintenance().';

-- NULL for workers registered before: their next heartbeat claims the entry.
ALTER TABLE pushpop.workers ADD COLUMN registered_by name;

-- The role is new: pushpop_consumer belongs to it, so workers keep running maintenance. A
-- role that exists already (another database of the server made it, or an operator did) keeps
-- the members it has: an operator's decision is never undone.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'pushpop_maintainer') THEN
        BEGIN
            CREATE ROLE pushpop_maintainer NOLOGIN;
            GRANT pushpop_maintainer TO pushpop_consumer;
        EXCEPTION
            -- A concurrent migration of another database created it first: it exists now.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'pushpop: role pushpop_maintainer does not exist and % may not create it',
                    current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Migrate as a role with CREATEROLE, or have a superuser run '
                                 'CREATE ROLE pushpop_maintainer NOLOGIN; '
                                 'GRANT pushpop_maintainer TO pushpop_consumer; first.';
        END;
    END IF;
END $$;
GRANT USAGE ON SCHEMA pushpop TO pushpop_maintainer;
