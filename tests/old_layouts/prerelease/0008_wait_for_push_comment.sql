-- pushpop 0008: wait_for_push's comment tells consumers to ask again after a wake-up that
-- came while they settled.
--
-- A notification ends the request that caused it. A consumer woken during the short wait
-- after asking, whose pop then finds nothing (another consumer took the message), holds no
-- request any more: if it went to sleep, later pushes would not wake it until it polled.
-- The function is unchanged; its comment, the documentation callers in any language read,
-- now says so.

BEGIN;

CALL pushpop.record_migration(8, 'wait_for_push_comment');

COMMENT ON FUNCTION pushpop.wait_for_push(uuid, text[]) IS
    'Call before sleeping on LISTEN pushpop: the next message to become ready in one of topics then '
    'sends a NOTIFY (payload: the topic) and ends the registration. Wait about 100 ms (or until '
    'notified) after this call and pop once more: a push that was committing as you called did '
    'not notify. If that pop is empty, sleep, unless a notification came during the wait: it ended '
    'the registration, so call again first. consumer is any id of your own; calling again renews '
    'it. Registrations older than a minute are dropped by prune_workers() unless consumer is a '
    'live worker (pushpop.worker_heartbeat), so any other sleeper renews its registration each '
    'time it wakes.';

COMMIT;
