-- opt_out.lua: record or remove a number's opt-out, and keep the change in its history.
-- Opt-outs, their history and the keywords that asked for them are durable: no expiry.
-- KEYS[1] optout   hash: e the number, sealed (the release before: in clear), at since ms,
--                  src source (keyword, admin, provider_error, import), snd our sender it
--                  came through, d detail
-- KEYS[2] history  list, newest first, at most 100: "ms|out or in|source|sender"
-- KEYS[3] keywords set: keyed digests of the provider message ids of the STOP and START
--                  replies that reached this script (a replayed one changes nothing)
-- ARGV[1] "add", "remove", or "reseal" (the record's number, sealed anew, if it exists)
-- ARGV[2] the number, sealed ("" for "remove")    ARGV[3] source    ARGV[4] sender    ARGV[5] detail
-- ARGV[6] since ms (an imported opt-out keeps its time); "" for now
-- ARGV[7] the keyword's message digest; "" when no keyword asked
-- Returns {changed, replayed}: changed 1 when something changed, else 0 (already opted out,
-- not opted out, or a replayed keyword); replayed 1 when ARGV[7] was seen before.
if ARGV[1] == 'reseal' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
  redis.call('HSET', KEYS[1], 'e', ARGV[2])
  return {1, 0}
end
local keyword = ARGV[7]
if keyword ~= '' then
  if redis.call('SISMEMBER', KEYS[3], keyword) == 1 then
    return {0, 1}
  end
  redis.call('SADD', KEYS[3], keyword)
end
local adding = ARGV[1] == 'add'
if (redis.call('EXISTS', KEYS[1]) == 1) == adding then
  return {0, 0}
end
local now = tonumber(ARGV[6])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if adding then
  redis.call('HSET', KEYS[1], 'e', ARGV[2], 'at', now, 'src', ARGV[3], 'snd', ARGV[4], 'd', ARGV[5])
else
  redis.call('DEL', KEYS[1])
end
redis.call('LPUSH', KEYS[2], table.concat({now, adding and 'out' or 'in', ARGV[3], ARGV[4]}, '|'))
redis.call('LTRIM', KEYS[2], 0, 99)
return {1, 0}
