-- opt_out.lua: record or remove a number's opt-out. Opt-outs are durable: no expiry.
-- KEYS[1] optout   hash: e E.164 number, at since ms, src source (keyword, admin,
--                  provider_error, import), snd our sender it came through, d detail
-- ARGV[1] "add" or "remove"
-- ARGV[2] E.164 number    ARGV[3] source    ARGV[4] sender    ARGV[5] detail
-- ARGV[6] since ms (an imported opt-out keeps its time); "" for now
-- Returns 1 when something changed, else 0 (already opted out, or not opted out).
if ARGV[1] == 'remove' then
  return redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = tonumber(ARGV[6])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSET', KEYS[1], 'e', ARGV[2], 'at', now, 'src', ARGV[3], 'snd', ARGV[4], 'd', ARGV[5])
return 1
