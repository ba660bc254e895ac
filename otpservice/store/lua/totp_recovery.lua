-- totp_recovery.lua: settle a recovery code reserved by totp_recovery_reserve. A match uses
-- the slot's code up (deleted: two concurrent uses give one approval) and clears both failure
-- budgets and the lock; a mismatch counts toward both. Retrying with the same reservation
-- answers the same.
-- KEYS[1] active     hash: the subject's active factor (fields in _totp.lua)
-- KEYS[2] guard      hash: the subject's failures, lock and recovery failures
-- KEYS[3] inflight   zset: codes being checked (TOTP and recovery), reservation -> ms
-- KEYS[4] rinflight  zset: the recovery codes among them
-- ARGV[1] client name   ARGV[2] reservation id   ARGV[3] factor random part (as reserved)
-- ARGV[4] slot   ARGV[5] "1" when the code matched the slot's hash, else "0"
-- ARGV[6] recovery failures allowed per 24 hours   ARGV[7] their window ms
-- ARGV[8] failures that lock the subject   ARGV[9] first lock ms (doubles each time)
-- ARGV[10] longest lock ms                 ARGV[11] how long failures are remembered, ms
-- ARGV[12] the hash the code was checked against (a regenerated set makes it stale)
-- Returns {"approved", approved ms, recovery codes left}
--       | {"incorrect", recovery failures left, ms recovery stays blocked (0: not blocked),
--          ms the subject is locked for TOTP codes by this failure (0: not locked by it)}
--       | {"missing"}
local active_key, guard_key, inflight_key, rinflight_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local client, reservation, random_part, slot = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local matched = ARGV[5] == '1'
local max_recovery, window_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local max_failures, lock_base_ms = tonumber(ARGV[8]), tonumber(ARGV[9])
local lock_max_ms, memory_ms = tonumber(ARGV[10]), tonumber(ARGV[11])

local now = now_ms()
local settling = redis.call('ZREM', inflight_key, reservation)
local settling_recovery = redis.call('ZREM', rinflight_key, reservation)
local factor = redis.call('HMGET', active_key, 'id', 'cl', 'rr', 'lu')
local same = factor[1] == random_part and factor[2] == client
if same and factor[3] == reservation then
  return {'approved', factor[4], recovery_codes_left(active_key)}
end
if same and matched and redis.call('HGET', active_key, 'r' .. slot) == ARGV[12] then
  redis.call('HDEL', active_key, 'r' .. slot)
  redis.call('HSET', active_key, 'lu', now, 'rr', reservation)
  redis.call('HDEL', guard_key, 'f', 'u', 'rf', 're')
  return {'approved', now, recovery_codes_left(active_key)}
end
local _, locked_now = settle_failure(guard_key, settling, now, max_failures, lock_base_ms,
  lock_max_ms, memory_ms)
local failures, ends = recovery_failures(guard_key, now)
if settling_recovery == 1 then
  failures, ends = count_recovery_failures(guard_key, 1, now, window_ms)
end
keep_guard(guard_key, now)
if not same then
  return {'missing'}
end
local blocked = 0
if failures >= max_recovery then blocked = ends - now end
return {'incorrect', math.max(max_recovery - failures, 0), blocked, locked_now}
