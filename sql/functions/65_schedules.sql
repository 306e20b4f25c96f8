-- pushpop functions, part 6b: periodic messages.
--
-- A schedule pushes one message per tick to its topic: on a standard 5-field cron expression
-- evaluated in a time zone, or every fixed interval. Cron is evaluated here, in SQL, so every
-- language and any scheduler get it: run_schedules() is one call. The parser below is
-- pushpop's own; tests/test_cron.py holds it against the cronsim library.
--
-- run_schedules() pushes each due tick in the statement that moves the schedule's next_run_at
-- past now: a caller that overlaps with another (two maintenance leaders during a handover)
-- finds the row locked or no longer due, so a tick is pushed exactly once. After downtime a
-- schedule pushes one message for its missed ticks, then carries on from the next one.

-- Cron -------------------------------------------------------------------------------------

-- One field of a cron expression as a bit mask (bit n set: value n matches). Terms are
-- separated by commas; each is *, a value, a range a-b, or either with a step /n (a/n runs
-- from a to the field's end). names are the field's names (JAN..., SUN...), numbered from
-- name_base.
CREATE OR REPLACE FUNCTION pushpop.cron_field(
    spec      text,
    field     text,
    low       integer,
    high      integer,
    names     text[]  DEFAULT NULL,
    name_base integer DEFAULT 0
) RETURNS bigint LANGUAGE plpgsql IMMUTABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bits      bigint := 0;
    term      text;
    range_    text;
    step      integer;
    ends      text[];
    first     integer;
    last      integer;
    value_    text;
    parsed    integer[];
    v         integer;
BEGIN
    FOREACH term IN ARRAY string_to_array(cron_field.spec, ',') LOOP
        step := 1;
        range_ := term;
        IF strpos(term, '/') > 0 THEN
            range_ := split_part(term, '/', 1);
            value_ := substr(term, strpos(term, '/') + 1);
            IF value_ !~ '^[0-9]{1,9}$' OR value_::integer = 0 THEN
                RAISE EXCEPTION 'pushpop: cron has a bad % field %: step % must be a positive number',
                    cron_field.field, quote_literal(cron_field.spec), quote_literal(value_)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            step := value_::integer;
        END IF;
        IF range_ = '*' THEN
            ends := ARRAY[cron_field.low::text, cron_field.high::text];
        ELSIF strpos(range_, '-') > 0 THEN
            ends := ARRAY[split_part(range_, '-', 1), substr(range_, strpos(range_, '-') + 1)];
        ELSE
            ends := ARRAY[range_];
        END IF;
        parsed := '{}';
        FOREACH value_ IN ARRAY ends LOOP
            IF cron_field.names IS NOT NULL AND array_position(cron_field.names, value_) IS NOT NULL THEN
                v := array_position(cron_field.names, value_) - 1 + cron_field.name_base;
            ELSIF value_ ~ '^[0-9]{1,9}$' AND value_::integer BETWEEN cron_field.low AND cron_field.high THEN
                v := value_::integer;
            ELSE
                RAISE EXCEPTION 'pushpop: cron has a bad % field %: % is not a % from % to %',
                    cron_field.field, quote_literal(cron_field.spec), quote_literal(value_),
                    cron_field.field, cron_field.low, cron_field.high
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            parsed := parsed || v;
        END LOOP;
        first := parsed[1];
        IF cardinality(parsed) = 2 THEN
            last := parsed[2];
        ELSIF strpos(term, '/') > 0 THEN
            last := cron_field.high;  -- a/n: from a to the end
        ELSE
            last := first;
        END IF;
        IF last < first THEN
            RAISE EXCEPTION 'pushpop: cron has a bad % field %: range % ends before it starts',
                cron_field.field, quote_literal(cron_field.spec), quote_literal(range_)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR v IN first .. last BY step LOOP
            bits := bits | (1::bigint << v);
        END LOOP;
    END LOOP;
    RETURN bits;
END $$;
COMMENT ON FUNCTION pushpop.cron_field(text, text, integer, integer, text[], integer) IS
    'Used by cron_parse: one field of a cron expression as a bit mask of the values it matches; '
    'raises invalid_parameter_value (22023) naming cron when the field is malformed.';

-- The five fields as masks, then two flags: whether day of month and day of week must both match
-- (either field starts with *, as in Debian's cron; else either may match), and whether the
-- expression runs at set times of day (neither minute nor hour starts with *), which is
-- evaluated on the wall clock.
CREATE OR REPLACE FUNCTION pushpop.cron_parse(cron text)
RETURNS bigint[] LANGUAGE plpgsql IMMUTABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fields   text[] := regexp_split_to_array(btrim(upper(cron_parse.cron), E' \t\n'), E'[ \t\n]+');
    dows     bigint;
    doms     bigint;
    months   bigint;
    day_and  boolean;
    shortest integer;
    longest  integer;
BEGIN
    PERFORM pushpop.require(cron_parse.cron IS NOT NULL, 'cron must not be NULL');
    PERFORM pushpop.require(cardinality(fields) = 5,
                            format('cron must have 5 fields (minute hour day-of-month month '
                                   'day-of-week), got %s: %s',
                                   CASE WHEN btrim(cron_parse.cron) = '' THEN 0 ELSE cardinality(fields) END,
                                   quote_literal(cron_parse.cron)));
    doms := pushpop.cron_field(fields[3], 'day-of-month', 1, 31);
    months := pushpop.cron_field(fields[4], 'month', 1, 12,
                                 '{JAN,FEB,MAR,APR,MAY,JUN,JUL,AUG,SEP,OCT,NOV,DEC}', 1);
    dows := pushpop.cron_field(fields[5], 'day-of-week', 0, 7, '{SUN,MON,TUE,WED,THU,FRI,SAT}', 0);
    dows := (dows | (dows >> 7)) & 127;  -- 7 is Sunday too
    day_and := starts_with(fields[3], '*') OR starts_with(fields[5], '*');
    IF day_and THEN
        -- A day that no chosen month has ("0 0 30 2 *") would never come.
        SELECT min(d) INTO shortest FROM generate_series(1, 31) AS d WHERE (doms >> d) & 1 = 1;
        SELECT max((ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[m]) INTO longest
        FROM generate_series(1, 12) AS m WHERE (months >> m) & 1 = 1;
        PERFORM pushpop.require(shortest <= longest,
                                format('cron %s names a day of the month that its months do not have',
                                       quote_literal(cron_parse.cron)));
    END IF;
    RETURN ARRAY[pushpop.cron_field(fields[1], 'minute', 0, 59),
                 pushpop.cron_field(fields[2], 'hour', 0, 23),
                 doms, months, dows, day_and::integer,
                 (NOT starts_with(fields[1], '*') AND NOT starts_with(fields[2], '*'))::integer];
END $$;
COMMENT ON FUNCTION pushpop.cron_parse(text) IS
    'Parses a 5-field cron expression (minute hour day-of-month month day-of-week; *, values, '
    'ranges a-b, steps /n, lists, JAN-DEC and SUN-SAT, 7 for Sunday) into bit masks; raises '
    'invalid_parameter_value (22023) naming cron, with the reason, when it is malformed.';

CREATE OR REPLACE FUNCTION pushpop.cron_day_matches(f bigint[], d date)
RETURNS boolean LANGUAGE sql IMMUTABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (f[4] >> extract(month FROM d)::integer) & 1 = 1
       AND CASE WHEN f[6] = 1
                THEN (f[3] >> extract(day FROM d)::integer) & 1 = 1
                     AND (f[5] >> extract(dow FROM d)::integer) & 1 = 1
                ELSE (f[3] >> extract(day FROM d)::integer) & 1 = 1
                     OR (f[5] >> extract(dow FROM d)::integer) & 1 = 1 END
$$;
COMMENT ON FUNCTION pushpop.cron_day_matches(bigint[], date) IS
    'Used by cron_next: whether a date matches the month and day fields of a parsed expression.';

-- The next match, in two ways as cron itself does (and cronsim, its reference here):
-- * at set times of day, on the wall clock: a time that a spring-forward skips runs at the first
--   minute after the gap, and a time that a fall-back repeats runs once, at its first occurrence;
-- * otherwise ("*/15 * * * *", "0 * * * *") in real time: the first instant whose local time
--   matches, so an hour repeated by a fall-back runs twice and a skipped one not at all.
CREATE OR REPLACE FUNCTION pushpop.cron_next(cron text, after timestamptz, timezone text DEFAULT 'UTC')
RETURNS timestamptz LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f      bigint[] := pushpop.cron_parse(cron_next.cron);
    tz     text := cron_next.timezone;
    local_ timestamp;
    giveup timestamp;
    t      timestamptz;
    d      date;
    minute integer;
    wanted integer;
    sec    integer;
BEGIN
    PERFORM pushpop.require(cron_next.after IS NOT NULL, 'after must not be NULL');
    PERFORM pushpop.require(tz IS NOT NULL, 'timezone must not be NULL');
    giveup := (cron_next.after AT TIME ZONE tz) + interval '50 years';
    IF f[7] = 1 THEN
        -- Wall clock: the next matching local minute, then its first real instant.
        local_ := date_trunc('minute', (date_trunc('second', cron_next.after) AT TIME ZONE tz)
                                       + interval '1 second' + interval '59 seconds');
        LOOP
            IF local_ > giveup THEN
                RETURN NULL;
            END IF;
            d := local_::date;
            IF (f[4] >> extract(month FROM d)::integer) & 1 = 0 THEN
                local_ := date_trunc('month', local_) + interval '1 month';
                CONTINUE;
            END IF;
            IF NOT pushpop.cron_day_matches(f, d) THEN
                local_ := (d + 1)::timestamp;
                CONTINUE;
            END IF;
            IF (f[2] >> extract(hour FROM local_)::integer) & 1 = 0 THEN
                local_ := date_trunc('hour', local_) + interval '1 hour';
                CONTINUE;
            END IF;
            minute := extract(minute FROM local_)::integer;
            wanted := (SELECT min(m) FROM generate_series(minute, 59) AS m WHERE (f[1] >> m) & 1 = 1);
            IF wanted IS NULL THEN
                local_ := date_trunc('hour', local_) + interval '1 hour';
                CONTINUE;
            END IF;
            local_ := local_ + (wanted - minute) * interval '1 minute';
            -- A time the clocks skip runs at the first minute after the gap.
            WHILE ((local_ AT TIME ZONE tz) AT TIME ZONE tz) <> local_ LOOP
                local_ := local_ + interval '1 minute';
            END LOOP;
            -- PostgreSQL reads a repeated local time as its second occurrence; cron runs the first.
            t := local_ AT TIME ZONE tz;
            IF ((t - interval '1 hour') AT TIME ZONE tz) = local_ THEN
                t := t - interval '1 hour';
            ELSIF ((t - interval '30 minutes') AT TIME ZONE tz) = local_ THEN
                t := t - interval '30 minutes';
            END IF;
            IF t > cron_next.after THEN
                RETURN t;
            END IF;
            -- Called from inside a repeated hour, after its first occurrence: the second one.
            IF (local_ AT TIME ZONE tz) > cron_next.after THEN
                RETURN local_ AT TIME ZONE tz;
            END IF;
            local_ := local_ + interval '1 minute';
        END LOOP;
    END IF;
    -- Real time: walk forward from instant to instant, reading the local time at each.
    t := date_trunc('second', cron_next.after) + interval '1 second';
    LOOP
        local_ := t AT TIME ZONE tz;
        IF local_ > giveup THEN
            RETURN NULL;
        END IF;
        d := local_::date;
        IF NOT pushpop.cron_day_matches(f, d) THEN
            LOOP
                d := d + 1;
                EXIT WHEN pushpop.cron_day_matches(f, d) OR d > giveup;
            END LOOP;
            -- The day's first instant (PostgreSQL reads a skipped midnight as the gap's end).
            t := d::timestamp AT TIME ZONE tz;
            IF ((t - interval '1 hour') AT TIME ZONE tz) = d::timestamp THEN
                t := t - interval '1 hour';
            END IF;
            CONTINUE;
        END IF;
        minute := extract(minute FROM local_)::integer;
        sec := floor(extract(second FROM local_))::integer;
        IF (f[2] >> extract(hour FROM local_)::integer) & 1 = 0 THEN
            t := t + (60 - minute) * interval '1 minute' - sec * interval '1 second';
            CONTINUE;
        END IF;
        wanted := (SELECT min(m) FROM generate_series(minute, 59) AS m WHERE (f[1] >> m) & 1 = 1);
        IF wanted IS NULL THEN
            t := t + (60 - minute) * interval '1 minute' - sec * interval '1 second';
            CONTINUE;
        END IF;
        IF wanted > minute THEN
            t := t + (wanted - minute) * interval '1 minute' - sec * interval '1 second';
            CONTINUE;
        END IF;
        IF sec <> 0 THEN
            t := t + (60 - sec) * interval '1 second';
            CONTINUE;
        END IF;
        RETURN t;
    END LOOP;
END $$;
COMMENT ON FUNCTION pushpop.cron_next(text, timestamptz, text) IS
    'The first time after `after` that the 5-field cron expression matches in the time zone. '
    'Expressions at set times of day (neither minute nor hour starts with *) follow the wall clock: '
    'a time skipped by a spring-forward runs at the first minute after the gap, one repeated by a '
    'fall-back runs once. Others follow real time: a repeated hour runs twice, a skipped one never. '
    'NULL if it never matches within 50 years.';

-- Schedules --------------------------------------------------------------------------------

-- every: the first tick anchor_at + k * every (k >= 1) after `after`. An interval of days or
-- months counts on the time zone's calendar (every '1 day' keeps the local time of day);
-- a shorter one in real time.
CREATE OR REPLACE FUNCTION pushpop.every_next(
    anchor_at timestamptz,
    every     interval,
    timezone  text,
    after     timestamptz
) RETURNS timestamptz LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    on_calendar boolean := extract(day FROM every_next.every) <> 0
                           OR extract(month FROM every_next.every) <> 0
                           OR extract(year FROM every_next.every) <> 0;
    k bigint := greatest(1, floor(extract(epoch FROM every_next.after - every_next.anchor_at)
                                  / extract(epoch FROM every_next.every))::bigint);
BEGIN
    LOOP
        EXIT WHEN pushpop.every_tick(every_next.anchor_at, every_next.every, every_next.timezone,
                                     on_calendar, k) > every_next.after;
        k := k + 1;
    END LOOP;
    WHILE k > 1 AND pushpop.every_tick(every_next.anchor_at, every_next.every, every_next.timezone,
                                       on_calendar, k - 1) > every_next.after LOOP
        k := k - 1;
    END LOOP;
    RETURN pushpop.every_tick(every_next.anchor_at, every_next.every, every_next.timezone,
                              on_calendar, k);
END $$;
COMMENT ON FUNCTION pushpop.every_next(timestamptz, interval, text, timestamptz) IS
    'Used by schedules: the first tick anchor_at + k * every (k >= 1) later than after; days and '
    'months count on the time zone''s calendar, shorter intervals in real time. Ticks never drift.';

CREATE OR REPLACE FUNCTION pushpop.every_tick(
    anchor_at   timestamptz,
    every       interval,
    timezone    text,
    on_calendar boolean,
    k           bigint
) RETURNS timestamptz LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN on_calendar
                THEN ((anchor_at AT TIME ZONE timezone) + every * k) AT TIME ZONE timezone
                ELSE anchor_at + every * k END
$$;
COMMENT ON FUNCTION pushpop.every_tick(timestamptz, interval, text, boolean, bigint) IS
    'Used by every_next: tick k of a schedule that runs every interval from anchor_at.';

CREATE OR REPLACE FUNCTION pushpop.schedule(
    name     text,
    topic    text,
    payload  bytea,
    cron     text     DEFAULT NULL,
    every    interval DEFAULT NULL,
    timezone text     DEFAULT 'UTC',
    priority integer  DEFAULT 0
) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_run timestamptz;
BEGIN
    PERFORM pushpop.require(length(schedule.name) BETWEEN 1 AND 255,
                            format('name must be 1 to 255 characters, got %s',
                                   coalesce(length(schedule.name) || ' characters', 'NULL')));
    PERFORM pushpop.require_topic(schedule.topic);
    PERFORM pushpop.require(schedule.payload IS NOT NULL, 'payload must not be NULL');
    PERFORM pushpop.require(schedule.priority IS NOT NULL, 'priority must not be NULL');
    PERFORM pushpop.require((schedule.cron IS NULL) <> (schedule.every IS NULL),
                            'give exactly one of cron and every');
    PERFORM pushpop.require(schedule.every IS NULL OR schedule.every > interval '0',
                            format('every must be positive, got %s', schedule.every));
    PERFORM pushpop.require(schedule.timezone IS NOT NULL, 'timezone must not be NULL');
    PERFORM pushpop.require(EXISTS (SELECT FROM pg_timezone_names AS z WHERE z.name = schedule.timezone),
                            format('timezone %s is not a time zone PostgreSQL knows '
                                   '(pg_timezone_names lists them)', quote_literal(schedule.timezone)));
    IF octet_length(schedule.payload) > pushpop.max_payload_bytes() THEN
        RAISE EXCEPTION 'pushpop: payload is % bytes, more than the limit of % bytes',
            octet_length(schedule.payload), pushpop.max_payload_bytes()
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'pushpop.set_max_payload_bytes() changes the limit of this database.';
    END IF;
    IF schedule.cron IS NOT NULL THEN
        first_run := pushpop.cron_next(schedule.cron, now(), schedule.timezone);  -- checks cron
        PERFORM pushpop.require(first_run IS NOT NULL,
                                format('cron %s never matches', quote_literal(schedule.cron)));
    ELSE
        first_run := pushpop.every_next(now(), schedule.every, schedule.timezone, now());
    END IF;
    INSERT INTO pushpop.schedules AS s
        (name, topic, payload, cron, every, timezone, priority, anchor_at, next_run_at)
    VALUES (schedule.name, schedule.topic, schedule.payload, schedule.cron, schedule.every,
            schedule.timezone, schedule.priority, now(), first_run)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
    SET topic = excluded.topic, payload = excluded.payload, cron = excluded.cron,
        every = excluded.every, timezone = excluded.timezone, priority = excluded.priority,
        anchor_at = excluded.anchor_at, next_run_at = excluded.next_run_at;
END $$;
COMMENT ON FUNCTION pushpop.schedule(text, text, bytea, text, interval, text, integer) IS
    'Creates or replaces the schedule name: one message (payload, priority) pushed to topic per tick, '
    'exactly one per tick across every caller of run_schedules. Give exactly one of cron, a 5-field '
    'expression evaluated in timezone (a name of pg_timezone_names), and every, a positive interval: '
    'ticks at anchor + k * every from the call on, without drift. A bad expression, interval or time '
    'zone raises invalid_parameter_value (22023) naming it.';

CREATE OR REPLACE FUNCTION pushpop.unschedule(name text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require(unschedule.name IS NOT NULL, 'name must not be NULL');
    DELETE FROM pushpop.schedules AS s WHERE s.name = unschedule.name;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION pushpop.unschedule(text) IS
    'Deletes the schedule name; no more ticks are pushed. False if there is none.';

CREATE OR REPLACE FUNCTION pushpop.schedules()
RETURNS TABLE (name text, topic text, cron text, every interval, timezone text,
               next_run_at timestamptz, last_run_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.name, s.topic, s.cron, s.every, s.timezone, s.next_run_at, s.last_run_at
    FROM pushpop.schedules AS s
    ORDER BY s.name
$$;
COMMENT ON FUNCTION pushpop.schedules() IS
    'Every schedule: its name, topic, cron or every, time zone, next tick, and the tick it last '
    'pushed a message for (NULL before the first).';

CREATE OR REPLACE FUNCTION pushpop.run_schedules()
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pushed integer;
    topics text[];
    ticks  record;
BEGIN
    -- The ticks first: the UPDATE moves each due schedule's next_run_at past now(). A concurrent
    -- caller skips the rows this one holds, and re-reads a row updated since its snapshot as no
    -- longer due. Then their messages, in the same transaction (two statements, because Citus
    -- cannot insert into the distributed queue from an UPDATE of the coordinator's schedules).
    WITH due AS MATERIALIZED (
        SELECT s.name FROM pushpop.schedules AS s
        WHERE s.next_run_at <= now()
        FOR UPDATE SKIP LOCKED
    ), ticked AS (
        UPDATE pushpop.schedules AS s
        SET last_run_at = s.next_run_at,
            next_run_at = CASE WHEN s.cron IS NOT NULL
                               THEN pushpop.cron_next(s.cron, now(), s.timezone)
                               ELSE pushpop.every_next(s.anchor_at, s.every, s.timezone, now()) END
        FROM due
        WHERE s.name = due.name AND s.next_run_at <= now()
        RETURNING s.name, s.topic, s.payload, s.priority, s.last_run_at AS tick
    )
    SELECT array_agg(t.name) AS names, array_agg(t.topic) AS topics,
           array_agg(t.payload) AS payloads, array_agg(t.priority) AS priorities,
           array_agg(t.tick) AS at_
    INTO ticks FROM ticked AS t;
    IF ticks.names IS NULL THEN
        RETURN 0;
    END IF;
    -- On a distributed installation each message carries its topic's route, in its id too.
    INSERT INTO pushpop.messages AS m
        (id, route, topic, state, state_time, priority, payload, headers)
    SELECT CASE WHEN pushpop.distributed() THEN pushpop.new_lease(pushpop.route_of(t.topic))
                ELSE gen_random_uuid() END,
           CASE WHEN pushpop.distributed() THEN pushpop.route_of(t.topic) END,
           t.topic, 'ready', now(), t.priority, t.payload,
           jsonb_build_object('pushpop-schedule', t.name, 'pushpop-tick',
                              to_char(t.tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    FROM unnest(ticks.names, ticks.topics, ticks.payloads, ticks.priorities, ticks.at_)
         AS t(name, topic, payload, priority, tick);
    GET DIAGNOSTICS pushed = ROW_COUNT;
    topics := ARRAY(SELECT DISTINCT t FROM unnest(ticks.topics) AS t);
    IF EXISTS (SELECT FROM pushpop.waiting AS w WHERE w.topic = ANY (topics)) THEN
        PERFORM pushpop.wake(topics);
    END IF;
    RETURN pushed;
END $$;
COMMENT ON FUNCTION pushpop.run_schedules() IS
    'Pushes one message for each schedule whose next tick has come, and moves it to the next tick '
    'after now: after downtime, one message for all the ticks missed, never a burst. Callers may '
    'overlap (any scheduler, several workers): each tick is pushed exactly once. The message''s '
    'headers name the schedule (pushpop-schedule) and its tick (pushpop-tick). Call it every second '
    'or so as a role with pushpop_maintainer; workers'' maintenance leader does. Returns how many '
    'messages it pushed.';
