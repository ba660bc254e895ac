-- spend_attempt.lua: reserve one verification attempt before the code is checked, against both
-- the challenge's budget and the number's failure counter (counted as a failure until
-- record_verdict says otherwise), so concurrent guesses can never exceed either.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] guard      hash: f failures, u locked-until ms, l lockout level
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- ARGV[3] failures that lock the number       ARGV[4] how long failures are remembered, ms
-- Returns {"ok", argon2 hash, pepper id, params}
--       | {"locked", retry-after ms} | {"too_many_attempts"}
--       | {"missing"} | {"approved"} | {"cancelled"} | {"expired"}
local challenge_key, active_key, guard_key = KEYS[1], KEYS[2], KEYS[3]
local random_part, client = ARGV[1], ARGV[2]
local max_failures, memory_ms = tonumber(ARGV[3]), tonumber(ARGV[4])

local now = now_ms()
local status = challenge_status(challenge_key, active_key, random_part, client, now)
if status ~= 'pending' then
  return {status}
end

local guard = redis.call('HMGET', guard_key, 'u', 'f')
local locked_until = tonumber(guard[1] or '0')
if locked_until > now then
  return {'locked', locked_until - now}
end
if tonumber(guard[2] or '0') >= max_failures then
  -- Enough guesses are being checked to lock the number if they fail: wait for their verdicts.
  return {'locked', 1000}
end

local left = tonumber(redis.call('HGET', challenge_key, 'a'))
if left <= 0 then
  return {'too_many_attempts'}
end
redis.call('HSET', challenge_key, 'a', left - 1)
redis.call('HINCRBY', guard_key, 'f', 1)
redis.call('PEXPIRE', guard_key, memory_ms)

local fields = redis.call('HMGET', challenge_key, 'h', 'pid', 'hp')
return {'ok', fields[1], fields[2], fields[3]}
