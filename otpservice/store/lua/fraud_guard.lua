-- fraud_guard.lua: codes sent to and verified by the destinations of one country (the
-- country itself and its number prefixes) over a sliding window, kept in a ring of twelve
-- slots per destination, and whether their ratio says SMS pumping. One hash per country: one
-- slot, one call for all. A destination never holds more than 37 fields.
-- KEYS[1] guard    hash: "<dest>|b|<slot>" the bucket number a slot holds, "<dest>|s|<slot>"
--                  sent and "<dest>|v|<slot>" verified in it, "<dest>|t" = "1" while tripped
-- ARGV[1] "add", "check" or "clear"
-- ARGV[2] window seconds    ARGV[3] floor (verified / sent)    ARGV[4] sent before it can trip
-- ARGV[5] codes sent, ARGV[6] codes verified (for "add"; else 0)
-- ARGV[7..] destinations ("+44", "+4470")
-- Returns, for "check": per destination {tripped 1|0, change 1 (tripped now) | -1 (cleared
--   now) | 0, sent, verified, seconds until its oldest counted bucket leaves the window};
--   for "clear": per destination 1 if it was tripped, else 0; else {}.
-- A changed window length renumbers the buckets: the counts start again.
local SLOTS = 12
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local window_s = tonumber(ARGV[2])
local size = math.max(1, math.floor(window_s / SLOTS))
local bucket = math.floor(now_s / size)
local op = ARGV[1]
local out = {}

-- Every slot's fields of a destination: bucket, sent, verified, slot by slot.
local function slot_fields(dest)
  local fields = {}
  for slot = 0, SLOTS - 1 do
    fields[#fields + 1] = dest .. '|b|' .. slot
    fields[#fields + 1] = dest .. '|s|' .. slot
    fields[#fields + 1] = dest .. '|v|' .. slot
  end
  return fields
end

for i = 7, #ARGV do
  local dest = ARGV[i]
  if op == 'clear' then
    out[#out + 1] = redis.call('HGET', KEYS[1], dest .. '|t') == '1' and 1 or 0
    local doomed = slot_fields(dest)
    doomed[#doomed + 1] = dest .. '|t'
    redis.call('HDEL', KEYS[1], unpack(doomed))
  elseif op == 'add' then
    local slot = bucket % SLOTS
    if tonumber(redis.call('HGET', KEYS[1], dest .. '|b|' .. slot) or '-1') ~= bucket then
      -- The slot held an older bucket: it starts again.
      redis.call('HSET', KEYS[1], dest .. '|b|' .. slot, bucket, dest .. '|s|' .. slot, 0,
                 dest .. '|v|' .. slot, 0)
    end
    if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[1], dest .. '|s|' .. slot, ARGV[5]) end
    if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[1], dest .. '|v|' .. slot, ARGV[6]) end
  else
    local values = redis.call('HMGET', KEYS[1], unpack(slot_fields(dest)))
    local sent, verified, oldest = 0, 0, nil
    for j = 1, #values, 3 do
      local held = tonumber(values[j] or '-1')
      if held > bucket - SLOTS then  -- still inside the window
        sent = sent + tonumber(values[j + 1] or '0')
        verified = verified + tonumber(values[j + 2] or '0')
        if not oldest or held < oldest then oldest = held end
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
    local wait = oldest and ((oldest + SLOTS) * size - now_s) or 1
    out[#out + 1] = {tripped and 1 or 0, change, sent, verified, math.max(wait, 1)}
  end
end
if op == 'add' then
  redis.call('EXPIRE', KEYS[1], window_s * 2)
end
return out
