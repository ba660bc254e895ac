-- fraud_counts.lua: codes sent to and verified by the destinations of one country (the
-- country itself and its number prefixes), in one shard of the country's counts: over a
-- sliding window, in a ring of twelve slots per destination; over the last seven whole days,
-- in a ring of eight day slots (the baseline); and, for a prefix, the codes each source (an
-- API client and end-user network, as a keyed digest) sent and verified, in one sorted set per
-- window slot. Each process adds to its own shard, and a code may be sent through one process
-- and verified through another, so the loop sums sent and verified per source over every
-- shard before it subtracts (store/fraud.py). A destination holds at most 72 fields in a
-- shard's hash, and a source set at most SOURCES_KEPT sources (those that sent the fewest
-- codes go first, their verified counts with them).
-- KEYS[1]      counts hash: "<dest>|b|<slot>" the bucket a window slot holds, "<dest>|s|<slot>"
--              sent and "<dest>|v|<slot>" verified in it; "<dest>|d|<day slot>" the day a
--              day slot holds, "<dest>|ds|..." and "<dest>|dv|..." its sent and verified;
--              "<dest>|sb|<slot>" the bucket the source set of a window slot holds
-- KEYS[2..13]  (for "add", "sources" and "clear") the source sets of the prefix's twelve window
--              slots, zsets: member "s:<source>" scored by its codes sent in the slot, and
--              "v:<source>" by its codes verified in it
-- ARGV[1] "add", "read", "sources" or "clear"
-- ARGV[2] window seconds
-- ARGV[3] now, Unix seconds (the caller's clock: the fleet's clocks agree well within a slot)
-- "add":     ARGV[4] codes sent, ARGV[5] codes verified, ARGV[6] n, ARGV[7..6+n] destinations
--            (the prefix last), then triples (source, sent, verified) for the prefix
-- "read":    ARGV[4..] destinations
-- "sources", "clear": ARGV[4] the prefix
-- Returns, for "read": per destination {sent, verified, the second its oldest counted bucket
--   leaves the window (0: none counted), baseline sent, baseline verified, the baseline's days
--   as a bit mask (bit k: the day k + 1 days ago holds counts)}; for "sources": {member,
--   count, member, count, ...} summed over the window ("s:<source>" sent, "v:<source>"
--   verified); else {}.
-- A changed window length renumbers the buckets: the window's counts start again.
local SLOTS = 12
local DAY_SLOTS = 8
local BASELINE_DAYS = 7
local SOURCES_KEPT = 256
local DAY = 86400
local op = ARGV[1]
local window_s = tonumber(ARGV[2])
local now_s = tonumber(ARGV[3])
local size = math.max(1, math.floor(window_s / SLOTS))
local bucket = math.floor(now_s / size)
local day = math.floor(now_s / DAY)
local counts = KEYS[1]
local out = {}

local function field(dest, kind, slot)
  return dest .. '|' .. kind .. '|' .. slot
end

-- The source set of window slot ``slot`` (0-based), when it holds bucket ``wanted``.
local function source_set(dest, slot, wanted)
  local held = tonumber(redis.call('HGET', counts, field(dest, 'sb', slot)) or '-1')
  if held == wanted then return KEYS[2 + slot] end
  return nil
end

-- Add one to a slot counter, restarting the slot when it held an older bucket.
local function bump(dest, stamp_kind, sent_kind, verified_kind, slot, current, sent, verified)
  if tonumber(redis.call('HGET', counts, field(dest, stamp_kind, slot)) or '-1') ~= current then
    redis.call('HSET', counts, field(dest, stamp_kind, slot), current,
               field(dest, sent_kind, slot), 0, field(dest, verified_kind, slot), 0)
  end
  if sent ~= 0 then redis.call('HINCRBY', counts, field(dest, sent_kind, slot), sent) end
  if verified ~= 0 then redis.call('HINCRBY', counts, field(dest, verified_kind, slot), verified) end
end

if op == 'add' then
  local sent, verified, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  for i = 7, 6 + n do
    bump(ARGV[i], 'b', 's', 'v', bucket % SLOTS, bucket, sent, verified)
    bump(ARGV[i], 'd', 'ds', 'dv', day % DAY_SLOTS, day, sent, verified)
  end
  redis.call('EXPIRE', counts, DAY * DAY_SLOTS)
  local prefix = ARGV[6 + n]
  local slot = bucket % SLOTS
  local current = KEYS[2 + slot]
  if 7 + n <= #ARGV then
    if not source_set(prefix, slot, bucket) then
      redis.call('DEL', current)
      redis.call('HSET', counts, field(prefix, 'sb', slot), bucket)
    end
  end
  for i = 7 + n, #ARGV, 3 do
    local source, source_sent, source_verified = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if source_sent > 0 then redis.call('ZINCRBY', current, source_sent, 's:' .. source) end
    if source_verified > 0 then redis.call('ZINCRBY', current, source_verified, 'v:' .. source) end
  end
  if 7 + n <= #ARGV then
    if redis.call('ZCARD', current) > 2 * SOURCES_KEPT then
      -- Too many sources in this slot: drop those that sent the fewest codes, each with its
      -- verified count (dropping that alone would make its sends look unverified).
      local sent_by = {}
      local members = redis.call('ZRANGE', current, 0, -1, 'WITHSCORES')
      for j = 1, #members, 2 do
        if string.sub(members[j], 1, 2) == 's:' then
          sent_by[#sent_by + 1] = {string.sub(members[j], 3), tonumber(members[j + 1])}
        end
      end
      table.sort(sent_by, function(a, b) return a[2] < b[2] end)
      for j = 1, #sent_by - SOURCES_KEPT do
        redis.call('ZREM', current, 's:' .. sent_by[j][1], 'v:' .. sent_by[j][1])
      end
    end
    redis.call('EXPIRE', current, window_s * 2)
  end
elseif op == 'read' then
  for i = 4, #ARGV do
    local dest = ARGV[i]
    local fields = {}
    for slot = 0, SLOTS - 1 do
      fields[#fields + 1] = field(dest, 'b', slot)
      fields[#fields + 1] = field(dest, 's', slot)
      fields[#fields + 1] = field(dest, 'v', slot)
    end
    for slot = 0, DAY_SLOTS - 1 do
      fields[#fields + 1] = field(dest, 'd', slot)
      fields[#fields + 1] = field(dest, 'ds', slot)
      fields[#fields + 1] = field(dest, 'dv', slot)
    end
    local values = redis.call('HMGET', counts, unpack(fields))
    local sent, verified, oldest = 0, 0, nil
    for j = 1, SLOTS * 3, 3 do
      local held = tonumber(values[j] or '-1')
      if held > bucket - SLOTS then  -- still inside the window
        sent = sent + tonumber(values[j + 1] or '0')
        verified = verified + tonumber(values[j + 2] or '0')
        if not oldest or held < oldest then oldest = held end
      end
    end
    local base_sent, base_verified, base_days = 0, 0, 0
    for j = SLOTS * 3 + 1, #values, 3 do
      local held = tonumber(values[j] or '-1')
      if held < day and held >= day - BASELINE_DAYS then  -- a whole day of the last seven
        base_sent = base_sent + tonumber(values[j + 1] or '0')
        base_verified = base_verified + tonumber(values[j + 2] or '0')
        base_days = base_days + 2 ^ (day - held - 1)
      end
    end
    out[#out + 1] = {sent, verified, oldest and ((oldest + SLOTS) * size) or 0,
                     base_sent, base_verified, base_days}
  end
elseif op == 'sources' then
  local totals, order = {}, {}
  for back = 0, SLOTS - 1 do
    local wanted = bucket - back
    local set = source_set(ARGV[4], wanted % SLOTS, wanted)
    if set then
      local members = redis.call('ZRANGE', set, 0, -1, 'WITHSCORES')
      for j = 1, #members, 2 do
        local member = members[j]
        if not totals[member] then order[#order + 1] = member; totals[member] = 0 end
        totals[member] = totals[member] + tonumber(members[j + 1])
      end
    end
  end
  for _, member in ipairs(order) do
    out[#out + 1] = member
    out[#out + 1] = totals[member]
  end
else  -- clear: the window's counts and sources; the baseline is history, kept
  local dest = ARGV[4]
  local fields = {}
  for slot = 0, SLOTS - 1 do
    fields[#fields + 1] = field(dest, 'b', slot)
    fields[#fields + 1] = field(dest, 's', slot)
    fields[#fields + 1] = field(dest, 'v', slot)
    fields[#fields + 1] = field(dest, 'sb', slot)
  end
  redis.call('HDEL', counts, unpack(fields))
  if #KEYS > 1 then redis.call('DEL', unpack(KEYS, 2)) end
end
return out
