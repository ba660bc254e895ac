-- issue_challenge.lua: check a number's lock and send limits; if all pass, store a new challenge
-- and make it the client's current one for the number (that client's previous code stops
-- working; another client's does not). One atomic step: a
-- refused request consumes nothing. In "check" mode it only answers whether a send would pass
-- now, so the service can refuse before it spends a hash on the code (it checks again when it
-- issues). Retrying the call for the same challenge id answers the same and counts nothing more.
-- KEYS[1] sends      zset of send times (ms), member = challenge random part
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] guard      hash: f failures, u locked-until ms, l lockout level
-- KEYS[4] challenge  hash of the new challenge
-- KEYS[5] optout     hash: the number's opt-out (see opt_out.lua); while it exists nothing is sent
-- KEYS[6] actives    hash: client -> random part of its current challenge for the number (one
--                    pending challenge per number and client; KEYS[2] for the release before)
-- ARGV[1] random part of the new challenge id
-- ARGV[2] keyed argon2id digest of the code (salt and hash, raw bytes)
-- ARGV[3] pepper id        ARGV[4] argon2 parameters ("memory_kib,time_cost,parallelism")
-- ARGV[5] client name      ARGV[6] masked phone      ARGV[7] purpose
-- ARGV[8] attempts allowed      ARGV[9] ttl ms      ARGV[10] tombstone ms (kept after expiry)
-- ARGV[11] minimum interval between sends, ms
-- ARGV[12] mode: "issue", or "check" (ARGV[1..10] unused, nothing written)
-- ARGV[13] where the number is, for analytics and the fraud guard: "region|calling code|prefix"
--          ("GB|+44|+4474"; models.Destination)
-- ARGV[14] who asked, for the fraud guard: its source (a keyed digest; "" when not counted)
-- ARGV[15..] triples of rolling windows: window ms, limit, rule name
-- Returns {"ok", now ms, expires ms, resend-after ms} ("check": {"ok"})
--       | {"rate_limited", rule name, retry-after ms} | {"locked", retry-after ms}
--       | {"opted_out"}
local sends_key, active_key, guard_key, challenge_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local optout_key = KEYS[5]
local random_part, code_hash, pepper_id, hash_params = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local client, masked_phone, purpose = ARGV[5], ARGV[6], ARGV[7]
local attempts = tonumber(ARGV[8])
local ttl_ms, tombstone_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
local min_interval_ms = tonumber(ARGV[11])
local check_only = ARGV[12] == 'check'
local where, fraud_source = ARGV[13], ARGV[14]
local FIRST_WINDOW = 15

local now = now_ms()

-- The longest wait any rule imposes before one more send, and that rule's name.
local function longest_wait()
  local rule, wait = nil, 0
  if min_interval_ms > 0 then
    local last = redis.call('ZREVRANGE', sends_key, 0, 0, 'WITHSCORES')
    if last[2] then
      local w = tonumber(last[2]) + min_interval_ms - now
      if w > wait then rule, wait = 'number_min_interval', w end
    end
  end
  for i = FIRST_WINDOW, #ARGV, 3 do
    local w = window_wait(sends_key, now, tonumber(ARGV[i]), tonumber(ARGV[i + 1]))
    if w > wait then rule, wait = ARGV[i + 2], w end
  end
  return rule, wait
end

-- A retried call (each request brings a new challenge id) answers the same, counting nothing.
if not check_only then
  local earlier = redis.call('HMGET', challenge_key, 'cr', 'ex')
  if earlier[1] then
    local _, resend_after = longest_wait()
    return {'ok', tonumber(earlier[1]), tonumber(earlier[2]), resend_after}
  end
end

if redis.call('EXISTS', optout_key) == 1 then
  return {'opted_out'}
end

local locked_until = tonumber(redis.call('HGET', guard_key, 'u') or '0')
if locked_until > now then
  return {'locked', locked_until - now}
end

local longest_window_ms = min_interval_ms
for i = FIRST_WINDOW, #ARGV, 3 do
  longest_window_ms = math.max(longest_window_ms, tonumber(ARGV[i]))
end
local rule, wait = longest_wait()
if rule then
  return {'rate_limited', rule, wait}
end
if check_only then
  return {'ok'}
end

local expires = now + ttl_ms
redis.call('ZREMRANGEBYSCORE', sends_key, '-inf', now - longest_window_ms)
redis.call('ZADD', sends_key, now, random_part)
redis.call('PEXPIRE', sends_key, longest_window_ms)
redis.call('HSET', challenge_key, 'st', 'p', 'h', code_hash, 'pid', pepper_id, 'hp', hash_params,
  'cl', client, 'ph', masked_phone, 'pu', purpose, 'a', attempts, 'cr', now, 'ex', expires,
  'g', where, 'fs', fraud_source)
redis.call('PEXPIRE', challenge_key, ttl_ms + tombstone_ms)
redis.call('SET', active_key, random_part, 'PX', ttl_ms + tombstone_ms)
redis.call('HSET', KEYS[6], client, random_part)
redis.call('PEXPIRE', KEYS[6], ttl_ms + tombstone_ms)

local _, resend_after = longest_wait()
return {'ok', now, expires, resend_after}
