-- pushpop functions, part 1b: fan-out to subscriptions.
--
-- A subscription sends a copy of every push to a topic, or to every topic a pattern matches,
-- into a subscriber topic (push and push_many in 20_push.sql make the copies). Patterns follow
-- NATS subjects: words are separated by dots, `*` stands for exactly one word and `>`, only as
-- the last word, for one or more. A topic with subscriptions keeps no copy of its own: to
-- consume it directly as well, subscribe it to itself. Copies never fan out again.
--
-- Two settings keep the cost of a push where it was: subscriptions_in_use() is false while no
-- subscription exists (a push then looks nothing up), and subscription_patterns_in_use() while
-- none names a pattern (a push then probes the primary key for its topic only).

DO $$
DECLARE
    in_use boolean := false;
    patterns boolean := false;
BEGIN
    IF to_regprocedure('pushpop.subscriptions_in_use()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.subscriptions_in_use()' INTO in_use;
    END IF;
    IF to_regprocedure('pushpop.subscription_patterns_in_use()') IS NOT NULL THEN
        EXECUTE 'SELECT pushpop.subscription_patterns_in_use()' INTO patterns;
    END IF;
    CALL pushpop.define_setting('subscriptions_in_use', 'boolean', in_use::text);
    CALL pushpop.define_setting('subscription_patterns_in_use', 'boolean', patterns::text);
END $$;
COMMENT ON FUNCTION pushpop.subscriptions_in_use() IS
    'True while any subscription exists in this database (pushpop.subscribe): only then does a push '
    'look up the subscribers of its topic.';
COMMENT ON FUNCTION pushpop.subscription_patterns_in_use() IS
    'True while any subscription names a pattern (a word * or >): only then does a push look up the '
    'patterns its topic matches.';

CREATE OR REPLACE FUNCTION pushpop.require_pattern(pattern text, argument text, wildcards boolean)
RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    words text[] := string_to_array(require_pattern.pattern, '.');
BEGIN
    IF require_pattern.pattern IS NULL OR length(require_pattern.pattern) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'pushpop: % must be 1 to 255 characters, got %', require_pattern.argument,
            coalesce(length(require_pattern.pattern) || ' characters', 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT require_pattern.wildcards THEN
        PERFORM pushpop.require(NOT (words && ARRAY['*', '>']),
                                format('%s must be a topic, not a pattern: %s', require_pattern.argument,
                                       quote_literal(require_pattern.pattern)));
        RETURN;
    END IF;
    PERFORM pushpop.require(NOT ('' = ANY (words)),
                            format('%s %s has an empty word', require_pattern.argument,
                                   quote_literal(require_pattern.pattern)));
    PERFORM pushpop.require(NOT EXISTS (SELECT FROM unnest(words) AS w
                                        WHERE w NOT IN ('*', '>') AND w ~ '[*>]'),
                            format('%s %s has a wildcard inside a word: * and > must be whole words',
                                   require_pattern.argument, quote_literal(require_pattern.pattern)));
    PERFORM pushpop.require(coalesce(array_position(words, '>') = cardinality(words), true),
                            format('%s %s has > before its last word', require_pattern.argument,
                                   quote_literal(require_pattern.pattern)));
END $$;
COMMENT ON FUNCTION pushpop.require_pattern(text, text, boolean) IS
    'Raises invalid_parameter_value (22023), naming argument, unless pattern is 1 to 255 characters '
    'and: with wildcards, has no empty word, * and > only as whole words and > only last; without, '
    'has no word * or >.';

CREATE OR REPLACE FUNCTION pushpop.subscribe(topic text, subscriber_topic text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    words    text[];
    wildcard integer;
    prefix   text;
    matcher  text;
BEGIN
    PERFORM pushpop.require_pattern(subscribe.topic, 'topic', true);
    PERFORM pushpop.require_pattern(subscribe.subscriber_topic, 'subscriber_topic', false);
    words := string_to_array(subscribe.topic, '.');
    wildcard := (SELECT min(w.n) FROM unnest(words) WITH ORDINALITY AS w(word, n)
                 WHERE w.word IN ('*', '>'));
    IF wildcard IS NOT NULL THEN
        prefix := CASE WHEN wildcard = 1 THEN ''
                       ELSE array_to_string(words[1:wildcard - 1], '.') || '.' END;
        matcher := '^' || (SELECT string_agg(CASE w.word
                                                  WHEN '*' THEN '[^.]+'
                                                  WHEN '>' THEN '[^.]+(\.[^.]+)*'
                                                  ELSE regexp_replace(w.word, '([^[:alnum:]_])', '\\\1', 'g')
                                              END, '\.' ORDER BY w.n)
                           FROM unnest(words) WITH ORDINALITY AS w(word, n)) || '$';
    END IF;
    INSERT INTO pushpop.subscriptions (pattern, subscriber, prefix, matcher)
    VALUES (subscribe.topic, subscribe.subscriber_topic, prefix, matcher)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT pushpop.subscriptions_in_use() THEN
        CALL pushpop.define_setting('subscriptions_in_use', 'boolean', 'true');
    END IF;
    IF wildcard IS NOT NULL AND NOT pushpop.subscription_patterns_in_use() THEN
        CALL pushpop.define_setting('subscription_patterns_in_use', 'boolean', 'true');
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.subscribe(text, text) IS
    'From the next transaction on, every push to topic (a topic, or a pattern: * one word, > one or '
    'more last words) puts a copy into subscriber_topic, a plain topic, and none into topic itself. '
    'Messages pushed before are not copied. True if the subscription is new.';

CREATE OR REPLACE FUNCTION pushpop.unsubscribe(topic text, subscriber_topic text)
RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pushpop.require_pattern(unsubscribe.topic, 'topic', true);
    PERFORM pushpop.require_pattern(unsubscribe.subscriber_topic, 'subscriber_topic', false);
    DELETE FROM pushpop.subscriptions AS s
    WHERE s.pattern = unsubscribe.topic AND s.subscriber = unsubscribe.subscriber_topic;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pushpop.subscriptions) THEN
        CALL pushpop.define_setting('subscriptions_in_use', 'boolean', 'false');
    END IF;
    IF pushpop.subscription_patterns_in_use()
       AND NOT EXISTS (SELECT FROM pushpop.subscriptions AS s WHERE s.prefix IS NOT NULL) THEN
        CALL pushpop.define_setting('subscription_patterns_in_use', 'boolean', 'false');
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION pushpop.unsubscribe(text, text) IS
    'Removes the subscription of subscriber_topic to topic (a topic or pattern, as subscribed); '
    'copies already made stay. True if there was one.';

CREATE OR REPLACE FUNCTION pushpop.subscriptions(topic text DEFAULT NULL)
RETURNS TABLE (pattern text, subscriber text, created_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.pattern, s.subscriber, s.created_at
    FROM pushpop.subscriptions AS s
    WHERE subscriptions.topic IS NULL OR s.pattern = subscriptions.topic
    ORDER BY s.pattern, s.subscriber
$$;
COMMENT ON FUNCTION pushpop.subscriptions(text) IS
    'Every subscription, or those whose own text (topic or pattern) equals topic: the pattern, the '
    'subscriber topic and when it was made.';

-- The subscriber topics of a push to topic, each once, in order; NULL when there are none.
-- PL/pgSQL, not SQL: it keeps its plan across calls, with the settings folded into it.
CREATE OR REPLACE FUNCTION pushpop.subscribers_of(topic text)
RETURNS text[] LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pushpop.subscription_patterns_in_use() THEN
        RETURN (SELECT array_agg(s.subscriber ORDER BY s.subscriber)
                FROM pushpop.subscriptions AS s
                WHERE s.pattern = subscribers_of.topic AND s.prefix IS NULL);
    END IF;
    RETURN (SELECT array_agg(DISTINCT f.subscriber ORDER BY f.subscriber)
            FROM (SELECT s.subscriber FROM pushpop.subscriptions AS s
                  WHERE s.pattern = subscribers_of.topic AND s.prefix IS NULL
                  UNION ALL
                  SELECT s.subscriber FROM pushpop.subscriptions AS s
                  WHERE s.prefix = ANY (ARRAY(
                            SELECT left(subscribers_of.topic, p)
                            FROM generate_series(0, length(subscribers_of.topic) - 1) AS p
                            WHERE p = 0 OR substr(subscribers_of.topic, p, 1) = '.'))
                    AND subscribers_of.topic ~ s.matcher) AS f);
END $$;
COMMENT ON FUNCTION pushpop.subscribers_of(text) IS
    'The subscriber topics that get a copy of a push to topic, each once, sorted; NULL for none.';
