-- take_quota.lua: count one challenge against a rule's rolling windows, unless one is full.
-- KEYS[1] quota    zset: one member per counted request, scored by its time (ms)
-- ARGV[1] request id (the member; give_back removes it)
-- ARGV[2] "enforce" or "monitor" (monitor: count even when a window is full)
-- ARGV[3..] pairs: window length ms, limit
-- Returns {1, 0} counted; {0, retry ms, window ms} refused, nothing counted;
--         {2, retry ms, window ms} counted in monitor mode, though a window was full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local longest = 0
for i = 3, #ARGV, 2 do
  longest = math.max(longest, tonumber(ARGV[i]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local full_retry, full_window = 0, 0
for i = 3, #ARGV, 2 do
  local window, limit = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local count = redis.call('ZCOUNT', KEYS[1], now - window + 1, '+inf')
  if count >= limit then
    -- Room comes back when enough of the oldest requests in the window age out of it.
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], now - window + 1, '+inf',
                              'WITHSCORES', 'LIMIT', count - limit, 1)
    local retry = tonumber(oldest[2]) + window - now
    if retry > full_retry then
      full_retry, full_window = retry, window
    end
  end
end
if full_retry > 0 and ARGV[2] ~= 'monitor' then
  return {0, full_retry, full_window}
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], longest)
if full_retry > 0 then
  return {2, full_retry, full_window}
end
return {1, 0}
