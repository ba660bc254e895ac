-- fraud_counts.lua: codes sent to and verified by the destinations of one country (the
-- country itself and its number prefixes) over a sliding window, in one shard of the
-- country's counts, kept in a ring of twelve slots per destination. Each process adds to its
-- own shard; the fraud guard's loop sums the shards (store/fraud.py). A destination never
-- holds more than 36 fields in a shard.
-- KEYS[1] counts   hash: "<dest>|b|<slot>" the bucket number a slot holds, "<dest>|s|<slot>"
--                  sent and "<dest>|v|<slot>" verified in it
-- ARGV[1] "add", "read" or "clear"
-- ARGV[2] window seconds
-- ARGV[3] codes sent, ARGV[4] codes verified (for "add"; else 0)
-- ARGV[5..] destinations ("+44", "+4470")
-- Returns, for "read": per destination {sent, verified, the bucket-end second when its oldest
--   counted bucket leaves the window (0: none counted)}; else {}.
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

for i = 5, #ARGV do
  local dest = ARGV[i]
  if op == 'clear' then
    redis.call('HDEL', KEYS[1], unpack(slot_fields(dest)))
  elseif op == 'add' then
    local slot = bucket % SLOTS
    if tonumber(redis.call('HGET', KEYS[1], dest .. '|b|' .. slot) or '-1') ~= bucket then
      -- The slot held an older bucket: it starts again.
      redis.call('HSET', KEYS[1], dest .. '|b|' .. slot, bucket, dest .. '|s|' .. slot, 0,
                 dest .. '|v|' .. slot, 0)
    end
    if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], dest .. '|s|' .. slot, ARGV[3]) end
    if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[1], dest .. '|v|' .. slot, ARGV[4]) end
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
    out[#out + 1] = {sent, verified, oldest and ((oldest + SLOTS) * size) or 0}
  end
end
if op == 'add' then
  redis.call('EXPIRE', KEYS[1], window_s * 2)
end
return out
