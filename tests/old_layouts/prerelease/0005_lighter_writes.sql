-- pushpop 0005: lighter writes to the queue table.
--
-- Every INSERT or UPDATE of pushpop.messages prepared the table's four CHECK constraints
-- (state, topic length, max_attempts, a lease only while pending) before it ran: PostgreSQL
-- prepares a table's CHECK expressions once per statement, and pushpop's statements mostly
-- write one row, so that took about an eighth of a push's time. The rules stay, kept where the
-- rows are written: only pushpop's functions may write the table (0003), each validates its
-- arguments and names the bad one, and each sets state and lease together. The test suite
-- checks that the rules still hold after every kind of call.

BEGIN;

CALL pushpop.record_migration(5, 'lighter_writes');

ALTER TABLE pushpop.messages
    DROP CONSTRAINT messages_check,
    DROP CONSTRAINT messages_max_attempts_check,
    DROP CONSTRAINT messages_state_check,
    DROP CONSTRAINT messages_topic_check;

COMMENT ON TABLE pushpop.messages IS
    'Every message, whatever its state. Private: use the pushpop.* functions, which keep its rules: '
    'state is scheduled, ready, pending, completed or discarded; lease is set exactly while the '
    'message is pending; topic has 1 to 255 characters; max_attempts is at least 1.';

COMMIT;
