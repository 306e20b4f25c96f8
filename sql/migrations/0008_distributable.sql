-- pushpop 0008: a queue that can be sharded by topic over a Citus cluster.
--
-- Nothing changes on a single server but one nullable column, added in place (no rewrite, no
-- index): pushpop.distribute() (sql/functions/95_distribute.sql) does the rest on a Citus
-- coordinator, once, when an operator asks for it.
--
-- * messages.route is the key Citus shards messages by: pushpop.route_of(topic), the same for
--   every message of a topic, so each topic lives on one shard and its pops are single-shard.
--   On a single server it stays NULL: push sets it only while pushpop.distributed() is true.
-- * A lease that pop hands out on a distributed installation begins with its message's route
--   (pushpop.new_lease), so an acknowledgement, which names only (id, lease), finds the shard
--   from the lease alone (pushpop.lease_route).

INSERT INTO pushpop.schema_migrations (version, name) VALUES (8, 'distributable');

ALTER TABLE pushpop.messages ADD COLUMN route integer;
COMMENT ON COLUMN pushpop.messages.route IS
    'On a distributed installation (pushpop.distribute): the key its rows are sharded by, '
    'pushpop.route_of(topic), the same for every message of a topic. NULL on a single server.';
