-- erase.lua: delete personal data, in one slot per call. A script so that, with
-- redis.min_replicas_acked, the deletion is followed by WAIT on its connection: an erasure a
-- failover loses would bring the data back.
-- KEYS     "del": the keys to delete (one slot); else KEYS[1] the stream or sorted set
-- ARGV[1]  "del", "xdel" (stream entries by id) or "zrem" (sorted-set members)
-- ARGV[2..] the entry ids or members (for "xdel" and "zrem")
-- Returns how many keys, entries or members went.
local op = ARGV[1]
if op == 'del' then
  return redis.call('DEL', unpack(KEYS))
end
local doomed = {}
for i = 2, #ARGV do doomed[#doomed + 1] = ARGV[i] end
if #doomed == 0 then return 0 end
if op == 'xdel' then
  return redis.call('XDEL', KEYS[1], unpack(doomed))
end
return redis.call('ZREM', KEYS[1], unpack(doomed))
