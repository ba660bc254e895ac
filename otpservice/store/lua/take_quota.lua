-- take_quota.lua: count one challenge against a rule's rolling windows, unless one is full.
-- KEYS[1] quota    zset: one member per counted request, scored by its time (ms)
-- ARGV[1] request id (the member; give_back removes it)
-- ARGV[2] "enforce" or "monitor" (monitor: count even when a window is full)
-- ARGV[3..] pairs: window length ms, limit
-- Returns {1, 0} counted; {0, retry ms} refused, nothing counted;
--         {2, retry ms} counted in monitor mode, though a window was full.
local now = now_ms()
local longest = 0
for i = 3, #ARGV, 2 do
  longest = math.max(longest, tonumber(ARGV[i]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local retry = 0
for i = 3, #ARGV, 2 do
  retry = math.max(retry, window_wait(KEYS[1], now, tonumber(ARGV[i]), tonumber(ARGV[i + 1])))
end
if retry > 0 and ARGV[2] ~= 'monitor' then
  return {0, retry}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], longest)
if retry > 0 then
  return {2, retry}
end
return {1, 0}
