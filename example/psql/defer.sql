-- Defers message :'id' under lease :'lease' for :'delay', keeping :'reason': prints t, or f
-- when the lease is no longer ours. Its last attempt discards it instead: nothing is retried
-- forever.
SELECT CASE WHEN :attempts >= :max_attempts
            THEN pushpop.discard(:'id', :'lease', :'reason' || ' (gave up)')
            ELSE pushpop.defer(:'id', :'lease', :'delay', :'reason') END;
