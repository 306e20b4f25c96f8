-- pushpop 0005: periodic messages.
--
-- A schedule pushes one message to its topic per tick: on a cron expression evaluated in a time
-- zone, or every fixed interval. pushpop.run_schedules() (which the maintenance leader calls)
-- pushes the due ticks; it moves next_run_at forward in the same statement, so a tick is pushed
-- once however many callers overlap.

INSERT INTO pushpop.schema_migrations (version, name) VALUES (5, 'schedules');

CREATE TABLE pushpop.schedules (
    name        text PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    cron        text,
    every       interval,
    timezone    text NOT NULL,
    priority    integer NOT NULL,
    -- every: the ticks are anchor_at + k * every, k = 1, 2, ...: a cadence without drift.
    anchor_at   timestamptz NOT NULL,
    next_run_at timestamptz NOT NULL,
    last_run_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- each tick updates its row in place
COMMENT ON TABLE pushpop.schedules IS
    'Periodic messages: exactly one of cron and every is set. Private: use pushpop.schedule(), '
    'pushpop.unschedule(), pushpop.schedules() and pushpop.run_schedules().';

-- run_schedules finds the due schedules without reading the others.
CREATE INDEX schedules_due ON pushpop.schedules (next_run_at);
