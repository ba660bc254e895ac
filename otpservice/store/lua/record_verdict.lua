-- record_verdict.lua: settle an attempt reserved by spend_attempt. A match approves the
-- challenge only if it is still pending, so exactly one attempt ever succeeds, and clears the
-- number's settled failures. A mismatch becomes a settled failure, which locks the number once
-- they reach the limit. Retrying the call with the same reservation id answers the same.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua; an: approving reservation)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] guard      hash: f settled failures, u locked-until ms, l lockout level
-- KEYS[4] inflight   zset of the number's reservations awaiting a verdict: id -> reserved ms
-- KEYS[5] actives    hash: client -> random part of its current challenge for the number
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- ARGV[3] reservation id                      ARGV[4] "1" when the code matched, else "0"
-- ARGV[5] failures that lock the number       ARGV[6] first lock ms (doubles each time)
-- ARGV[7] longest lock ms                     ARGV[8] how long failures are remembered, ms
-- Returns {"approved", approved ms, where (see issue_challenge.lua), created ms, fraud source}
--       | {"incorrect", attempts left, ms the number stays locked (0 if not locked)}
--       | {"missing"} | {"approved_before"} | {"cancelled"} | {"expired"}
local challenge_key, active_key, guard_key, inflight_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local actives_key = KEYS[5]
local random_part, client, reservation = ARGV[1], ARGV[2], ARGV[3]
local matched = ARGV[4] == '1'
local max_failures, lock_base_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local lock_max_ms, memory_ms = tonumber(ARGV[7]), tonumber(ARGV[8])

local now = now_ms()
local status = challenge_status(challenge_key, active_key, actives_key, random_part, client, now)
-- 0 when a retry already settled it, or when it went stale and was counted as a failure.
local settling = redis.call('ZREM', inflight_key, reservation)

if not matched then
  local locked_until = tonumber(redis.call('HGET', guard_key, 'u') or '0')
  if settling == 1 then
    locked_until = count_failures(guard_key, 1, now, max_failures, lock_base_ms, lock_max_ms,
      memory_ms)
  end
  if status == 'missing' then
    return {status}
  end
  local left = tonumber(redis.call('HGET', challenge_key, 'a'))
  return {'incorrect', left, math.max(locked_until - now, 0)}
end

if status == 'expired' and settling == 1 then
  -- The code was submitted (and reserved) before the challenge expired: it counts.
  status = 'pending'
end
if status == 'approved' then
  local approval = redis.call('HMGET', challenge_key, 'an', 'at', 'g', 'cr', 'fs')
  if approval[1] == reservation then
    return {'approved', approval[2], approval[3] or '', approval[4], approval[5] or ''}
  end
  return {'approved_before'}
end
if status ~= 'pending' then
  return {status}
end
redis.call('HSET', challenge_key, 'st', 'a', 'an', reservation, 'at', now)
redis.call('HDEL', challenge_key, 'h', 'pid', 'hp')
redis.call('HDEL', guard_key, 'f')
local about = redis.call('HMGET', challenge_key, 'g', 'cr', 'fs')
return {'approved', now, about[1] or '', about[2], about[3] or ''}
