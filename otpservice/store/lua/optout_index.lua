-- optout_index.lua: the index of opted-out numbers, for paging and export, in its own slot.
-- Members are keyed digests of the numbers (no number in clear), each with its number sealed
-- beside it; a member of the release before is the number itself, with nothing beside it.
-- KEYS[1] index    zset, score 0 (pages go by member): the members
-- KEYS[2] numbers  hash: member -> its sealed number ("<key id>.<base64url>", crypto/sealing.py)
-- ARGV[1] "add": ARGV[2] member, ARGV[3] its sealed number ("" for a member that is the number)
--         "remove": ARGV[2..] members (a digest, and the number as the release before wrote it)
-- Returns how many members were added or removed.
if ARGV[1] == 'add' then
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end
  return redis.call('ZADD', KEYS[1], 0, ARGV[2])
end
local members = {}
for i = 2, #ARGV do members[#members + 1] = ARGV[i] end
redis.call('HDEL', KEYS[2], unpack(members))
return redis.call('ZREM', KEYS[1], unpack(members))
