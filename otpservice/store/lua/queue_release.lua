-- queue_release.lua: move messages whose retry is due from the delayed set back to the stream.
-- KEYS[1] stream   the queue's stream     KEYS[2] delayed  zset of entries by due ms
-- ARGV[1] at most this many
-- Returns the number of messages moved.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, entry in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'e', entry)
  redis.call('ZREM', KEYS[2], entry)
end
return #due
