-- Pops one message of :'topic', leased for :'lease_for', and prints it as one line:
-- id|lease|attempts|max_attempts|payload in base64 (one line), or nothing when none is ready.
SELECT id, lease, attempts, max_attempts, translate(encode(payload, 'base64'), E'\n', '')
FROM pushpop.pop(:'topic', lease_for => :'lease_for');
