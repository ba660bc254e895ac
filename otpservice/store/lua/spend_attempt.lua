-- spend_attempt.lua: reserve one verification attempt before the code is checked. The reservation
-- counts against the challenge's budget at once, and against the number's failure limit while it
-- is in flight (settled failures plus reservations may not exceed it), so concurrent guesses can
-- exceed neither. A reservation whose verdict never comes (a crash, a lost reply) counts as a
-- failure once it is older than the reservation lifetime. Retrying the call with the same
-- reservation id answers the same and counts nothing more.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] guard      hash: f settled failures, u locked-until ms, l lockout level
-- KEYS[4] inflight   zset of the number's reservations awaiting a verdict: id -> reserved ms
-- KEYS[5] actives    hash: client -> random part of its current challenge for the number
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- ARGV[3] reservation id (unique per request)
-- ARGV[4] failures that lock the number       ARGV[5] first lock ms (doubles each time)
-- ARGV[6] longest lock ms                     ARGV[7] how long failures are remembered, ms
-- ARGV[8] reservation lifetime ms
-- Returns {"ok", argon2 salt and digest, pepper id, argon2 params}
--       | {"locked", retry-after ms} | {"too_many_attempts"}
--       | {"missing"} | {"approved"} | {"cancelled"} | {"expired"}
local challenge_key, active_key, guard_key, inflight_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local actives_key = KEYS[5]
local random_part, client, reservation = ARGV[1], ARGV[2], ARGV[3]
local max_failures, lock_base_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local lock_max_ms, memory_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local lifetime_ms = tonumber(ARGV[8])

local now = now_ms()
local status = challenge_status(challenge_key, active_key, actives_key, random_part, client, now)
if status ~= 'pending' then
  return {status}
end

local function reserved()
  local fields = redis.call('HMGET', challenge_key, 'h', 'pid', 'hp')
  return {'ok', fields[1], fields[2], fields[3]}
end
if redis.call('ZSCORE', inflight_key, reservation) then
  return reserved()
end

local wait = reservation_wait(guard_key, inflight_key, now, max_failures, lock_base_ms,
  lock_max_ms, memory_ms, lifetime_ms)
if wait > 0 then
  return {'locked', wait}
end

local left = tonumber(redis.call('HGET', challenge_key, 'a'))
if left <= 0 then
  return {'too_many_attempts'}
end
redis.call('HSET', challenge_key, 'a', left - 1)
redis.call('ZADD', inflight_key, now, reservation)
redis.call('PEXPIRE', inflight_key, lifetime_ms + memory_ms)
return reserved()
