-- pushpop functions, part 5b: what an operator does to a topic.

-- While a topic is paused, pop gives nothing from it; pushes, leases, acknowledgements and
-- requeues go on. topics_paused() (10_basics.sql) is true while any topic is paused, so pop
-- looks a topic up only then.
CREATE OR REPLACE FUNCTION pushpop.pause(topic text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require_topic(pause.topic);
    INSERT INTO pushpop.paused_topics (topic) VALUES (pause.topic) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT pushpop.topics_paused() THEN
        CALL pushpop.define_setting('topics_paused', 'boolean', 'true');
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.pause(text) IS
    'Pauses the topic: pop returns nothing from it until pushpop.resume(); pushes are still taken '
    'and deliveries under way go on. True if it was not paused already.';

CREATE OR REPLACE FUNCTION pushpop.resume(topic text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require_topic(resume.topic);
    DELETE FROM pushpop.paused_topics AS p WHERE p.topic = resume.topic;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pushpop.paused_topics) THEN
        CALL pushpop.define_setting('topics_paused', 'boolean', 'false');
    END IF;
    -- Sleeping consumers of the topic look for work at once.
    PERFORM pushpop.wake(ARRAY[resume.topic]);
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.resume(text) IS
    'Resumes a paused topic: its messages are popped again, and consumers waiting for it are woken. '
    'True if it was paused.';
