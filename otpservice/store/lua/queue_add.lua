-- queue_add.lua (any queue): add an entry to one shard of a queue. A script rather than a
-- plain XADD so that, with redis.min_replicas_acked, it is followed by WAIT on its connection
-- (an accepted challenge's SMS must survive a failover).
-- KEYS[1] stream   the shard's stream
-- ARGV[1] the entry (msgpack)
-- Returns the new entry's stream id.
return redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
