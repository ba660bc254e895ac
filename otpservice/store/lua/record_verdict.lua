-- record_verdict.lua: settle an attempt reserved by spend_attempt. A match approves the
-- challenge only if it is still pending, so exactly one attempt ever succeeds; it also clears
-- the number's failures and lock. A mismatch changes nothing more (already counted).
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] guard      hash: f failures, u locked-until ms, l lockout level
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- ARGV[3] "1" when the code matched, "0" otherwise
-- Returns {"approved", now ms}
--       | {"incorrect", attempts left, ms the number stays locked (0 if not locked)}
--       | {"missing"} | {"approved_before"} | {"cancelled"} | {"expired"}
local challenge_key, active_key, guard_key = KEYS[1], KEYS[2], KEYS[3]
local random_part, client, matched = ARGV[1], ARGV[2], ARGV[3] == '1'

local now = now_ms()
local status = challenge_status(challenge_key, active_key, random_part, client, now)

if not matched then
  local left = tonumber(redis.call('HGET', challenge_key, 'a') or '0')
  local locked_until = tonumber(redis.call('HGET', guard_key, 'u') or '0')
  return {'incorrect', left, math.max(locked_until - now, 0)}
end

if status == 'approved' then
  return {'approved_before'}
end
if status ~= 'pending' then
  return {status}
end
redis.call('HSET', challenge_key, 'st', 'a')
redis.call('HDEL', challenge_key, 'h', 'pid')
redis.call('HDEL', guard_key, 'f', 'u')
return {'approved', now}
