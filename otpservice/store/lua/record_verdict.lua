-- record_verdict.lua: settle an attempt reserved by spend_attempt. A match approves the
-- challenge only if it is still pending, so exactly one attempt ever succeeds, and clears the
-- number's failure count. A mismatch was already counted; if the count has reached the limit,
-- it locks the number, each lockout longer than the last.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] guard      hash: f failures, u locked-until ms, l lockout level
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- ARGV[3] "1" when the code matched, "0" otherwise
-- ARGV[4] failures that lock the number       ARGV[5] first lock ms (doubles each time)
-- ARGV[6] longest lock ms                     ARGV[7] how long failures are remembered, ms
-- Returns {"approved", now ms}
--       | {"incorrect", attempts left, ms the number stays locked (0 if not locked)}
--       | {"missing"} | {"approved_before"} | {"cancelled"} | {"expired"}
local challenge_key, active_key, guard_key = KEYS[1], KEYS[2], KEYS[3]
local random_part, client, matched = ARGV[1], ARGV[2], ARGV[3] == '1'
local max_failures, lock_base_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local lock_max_ms, memory_ms = tonumber(ARGV[6]), tonumber(ARGV[7])

local now = now_ms()
local status = challenge_status(challenge_key, active_key, random_part, client, now)

if not matched then
  if status == 'missing' then
    return {status}
  end
  local left = tonumber(redis.call('HGET', challenge_key, 'a'))
  local guard = redis.call('HMGET', guard_key, 'u', 'f')
  local locked_until = tonumber(guard[1] or '0')
  if locked_until <= now and tonumber(guard[2] or '0') >= max_failures then
    local level = redis.call('HINCRBY', guard_key, 'l', 1)
    local lock_ms = math.min(lock_base_ms * 2 ^ (level - 1), lock_max_ms)
    locked_until = now + lock_ms
    redis.call('HSET', guard_key, 'u', locked_until, 'f', 0)
    redis.call('PEXPIRE', guard_key, lock_ms + memory_ms)
  end
  return {'incorrect', left, math.max(locked_until - now, 0)}
end

if status == 'approved' then
  return {'approved_before'}
end
if status ~= 'pending' then
  return {status}
end
redis.call('HSET', challenge_key, 'st', 'a')
redis.call('HDEL', challenge_key, 'h', 'pid', 'hp')
redis.call('HDEL', guard_key, 'f')
return {'approved', now}
