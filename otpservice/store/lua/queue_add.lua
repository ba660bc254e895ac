-- queue_add.lua (any queue): add an entry to one shard of a queue, at most once per dedupe id.
-- A script rather than a plain XADD so that, with redis.min_replicas_acked, it is followed by
-- WAIT on its connection (an accepted challenge's SMS must survive a failover).
-- KEYS[1] stream   the shard's stream
-- KEYS[2] once     string, in the shard's slot: set while the dedupe id's entry may be in the
--                  shard (only with a dedupe id)
-- ARGV[1] the entry (msgpack)    ARGV[2] how long to remember the dedupe id, in ms
-- Returns the new entry's stream id, or "" when the dedupe id's entry was added before.
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return ''
end
return redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
