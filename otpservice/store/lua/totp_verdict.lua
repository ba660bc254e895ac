-- totp_verdict.lua: settle a check reserved by totp_reserve. A matching step approves only if
-- it is later than the last step used, and becomes the last step (compare-and-set), so one code
-- gives one approval however many requests carry it; a step at or before it is a replay. A
-- wrong code or a replay is a settled failure, which locks the subject once they reach the
-- limit; an approval clears the settled failures. Retrying with the same reservation answers
-- the same.
-- KEYS[1] active    hash: the subject's active factor (fields in _totp.lua)
-- KEYS[2] guard     hash: the subject's failures and lock
-- KEYS[3] inflight  zset: codes being checked, reservation -> ms
-- ARGV[1] client name   ARGV[2] reservation id   ARGV[3] factor random part (as reserved)
-- ARGV[4] the highest step whose code matched, "" for none, or "void": the code could not be
--         checked at all (the factor's key was retired), so the reservation goes, uncounted
-- ARGV[5] failures that lock the subject   ARGV[6] first lock ms (doubles each time)
-- ARGV[7] longest lock ms                  ARGV[8] how long failures are remembered, ms
-- Returns {"approved", approved ms} | {"void"}
--       | {"incorrect" | "replayed", failures left, locked ms (0: not locked),
--          ms this failure locked it for (0: it did not)} | {"missing"}
local active_key, guard_key, inflight_key = KEYS[1], KEYS[2], KEYS[3]
local client, reservation, random_part, step = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_failures, lock_base_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local lock_max_ms, memory_ms = tonumber(ARGV[7]), tonumber(ARGV[8])

local now = now_ms()
-- 0 when a retry already settled it, or when it went stale and was counted as a failure.
local settling = redis.call('ZREM', inflight_key, reservation)
if step == 'void' then
  return {'void'}
end
local factor = redis.call('HMGET', active_key, 'id', 'cl', 'ls', 'lr', 'lu')
local same = factor[1] == random_part and factor[2] == client
if same and factor[4] == reservation then
  return {'approved', factor[5]}
end
if same and step ~= '' and tonumber(step) > tonumber(factor[3] or '-1') then
  redis.call('HSET', active_key, 'ls', step, 'lu', now, 'lr', reservation)
  redis.call('HDEL', guard_key, 'f')
  return {'approved', now}
end
local locked_until, locked_now = settle_failure(guard_key, settling, now, max_failures,
  lock_base_ms, lock_max_ms, memory_ms)
keep_guard(guard_key, now)
if not same then
  return {'missing'}
end
local outcome = 'incorrect'
if step ~= '' then outcome = 'replayed' end
return {outcome, guesses_left(guard_key, now, max_failures), math.max(locked_until - now, 0),
  locked_now}
