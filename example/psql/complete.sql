-- Completes message :'id' under lease :'lease': prints t, or f when the lease is no longer ours.
SELECT pushpop.complete(:'id', :'lease');
