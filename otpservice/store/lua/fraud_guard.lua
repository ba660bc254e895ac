-- fraud_guard.lua: codes sent to and verified by the destinations of one country (the
-- country itself and its number prefixes), in buckets of a twelfth of the window, and whether
-- their ratio says SMS pumping. One hash per country: one slot, one call for all.
-- KEYS[1] guard    hash: "<dest>|s|<bucket>" sent, "<dest>|v|<bucket>" verified,
--                  "<dest>|t" = "1" while the destination is tripped
-- ARGV[1] "add", "check" or "clear"
-- ARGV[2] window seconds    ARGV[3] floor (verified / sent)    ARGV[4] sent before it can trip
-- ARGV[5] codes sent, ARGV[6] codes verified (for "add"; else 0)
-- ARGV[7..] destinations ("+44", "+4470")
-- Returns, for "check": per destination {tripped 1|0, change 1 (tripped now) | -1 (cleared
--   now) | 0, sent, verified, seconds until its oldest bucket leaves the window};
--   for "clear": per destination 1 if it was tripped, else 0; else {}.
local BUCKETS = 12
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local window_s = tonumber(ARGV[2])
local size = math.max(1, math.floor(window_s / BUCKETS))
local bucket = math.floor(now_s / size)
local op = ARGV[1]
local out = {}

for i = 7, #ARGV do
  local dest = ARGV[i]
  if op == 'clear' then
    out[#out + 1] = redis.call('HGET', KEYS[1], dest .. '|t') == '1' and 1 or 0
    local doomed = {dest .. '|t'}
    for b = bucket - BUCKETS, bucket do
      doomed[#doomed + 1] = dest .. '|s|' .. b
      doomed[#doomed + 1] = dest .. '|v|' .. b
    end
    redis.call('HDEL', KEYS[1], unpack(doomed))
  elseif op == 'add' then
    if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[1], dest .. '|s|' .. bucket, ARGV[5]) end
    if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[1], dest .. '|v|' .. bucket, ARGV[6]) end
    -- Buckets that just left the window (a destination quiet for longer keeps a few until
    -- the key expires, which it does once the whole country is quiet for two windows).
    local stale = {}
    for b = bucket - 2 * BUCKETS, bucket - BUCKETS do
      stale[#stale + 1] = dest .. '|s|' .. b
      stale[#stale + 1] = dest .. '|v|' .. b
    end
    redis.call('HDEL', KEYS[1], unpack(stale))
  else
    local fields = {}
    for b = bucket - BUCKETS + 1, bucket do
      fields[#fields + 1] = dest .. '|s|' .. b
      fields[#fields + 1] = dest .. '|v|' .. b
    end
    local counts = redis.call('HMGET', KEYS[1], unpack(fields))
    local sent, verified, oldest = 0, 0, nil
    for j = 1, #counts, 2 do
      local s, v = tonumber(counts[j] or '0'), tonumber(counts[j + 1] or '0')
      sent, verified = sent + s, verified + v
      if not oldest and (s > 0 or v > 0) then
        oldest = bucket - BUCKETS + 1 + (j - 1) / 2
      end
    end
    local tripped = sent >= tonumber(ARGV[4]) and verified < tonumber(ARGV[3]) * sent
    local was = redis.call('HGET', KEYS[1], dest .. '|t') == '1'
    local change = 0
    if tripped and not was then
      redis.call('HSET', KEYS[1], dest .. '|t', '1')
      change = 1
    elseif was and not tripped then
      redis.call('HDEL', KEYS[1], dest .. '|t')
      change = -1
    end
    local wait = oldest and ((oldest + BUCKETS) * size - now_s) or 1
    out[#out + 1] = {tripped and 1 or 0, change, sent, verified, math.max(wait, 1)}
  end
end
if op == 'add' then
  redis.call('EXPIRE', KEYS[1], window_s * 2)
end
return out
