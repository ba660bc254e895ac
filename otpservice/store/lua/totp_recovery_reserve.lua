-- totp_recovery_reserve.lua: reserve one check of a recovery code. A recovery code may be used
-- while the subject is locked for wrong TOTP codes; its own budget is recovery_max_failures
-- wrong recovery codes per 24 hours (settled plus in flight, so concurrent guesses cannot
-- overshoot it), and each one in flight also counts toward the subject's lockout.
-- KEYS[1] active     hash: the subject's active factor (fields in _totp.lua)
-- KEYS[2] guard      hash: the subject's failures, lock and recovery failures
-- KEYS[3] inflight   zset: codes being checked (TOTP and recovery), reservation -> ms
-- KEYS[4] rinflight  zset: the recovery codes among them
-- ARGV[1] client name   ARGV[2] reservation id   ARGV[3] the slot typed (0 to 9)
-- ARGV[4] recovery failures allowed per 24 hours   ARGV[5] their window ms
-- ARGV[6] failures that lock the subject   ARGV[7] first lock ms (doubles each time)
-- ARGV[8] longest lock ms                  ARGV[9] how long failures are remembered, ms
-- ARGV[10] reservation lifetime ms
-- Returns {"ok", now ms, factor random part, the slot's hash ("" when used or unknown),
--          recovery key id, argon2 parameters} | {"missing"} | {"blocked", retry-after ms}
local active_key, guard_key, inflight_key, rinflight_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local client, reservation, slot = ARGV[1], ARGV[2], ARGV[3]
local max_recovery, window_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_failures, lock_base_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local lock_max_ms, memory_ms, lifetime_ms = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])

local now = now_ms()
local factor = redis.call('HMGET', active_key, 'id', 'cl', 'r' .. slot, 'rk', 'rp')
if not factor[1] or factor[2] ~= client then
  return {'missing'}
end
local stale = redis.call('ZREMRANGEBYSCORE', inflight_key, '-inf', now - lifetime_ms)
if stale > 0 then
  count_failures(guard_key, stale, now, max_failures, lock_base_ms, lock_max_ms, memory_ms)
end
local stale_recovery = redis.call('ZREMRANGEBYSCORE', rinflight_key, '-inf', now - lifetime_ms)
if stale_recovery > 0 then
  count_recovery_failures(guard_key, stale_recovery, now, window_ms)
end
keep_guard(guard_key, now)
local failures, ends = recovery_failures(guard_key, now)
if failures >= max_recovery then
  return {'blocked', ends - now}
end
if failures + redis.call('ZCARD', rinflight_key) >= max_recovery then
  return {'blocked', 1000}
end
reserve_guess(inflight_key, reservation, now, lifetime_ms, memory_ms)
reserve_guess(rinflight_key, reservation, now, lifetime_ms, memory_ms)
return {'ok', now, factor[1], factor[3] or '', factor[4] or '', factor[5] or ''}
