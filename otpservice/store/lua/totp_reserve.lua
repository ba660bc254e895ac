-- totp_reserve.lua: reserve one check of a code against the subject's active factor. The
-- reservation counts against the subject's failure limit while it is in flight (settled
-- failures plus reservations may not exceed it), so concurrent guesses cannot overshoot it; one
-- whose verdict never comes counts as a failure after the reservation lifetime.
-- KEYS[1] active    hash: the subject's active factor (fields in _totp.lua)
-- KEYS[2] guard     hash: the subject's failures and lock
-- KEYS[3] inflight  zset: codes being checked, reservation -> ms
-- ARGV[1] client name   ARGV[2] reservation id   ARGV[3] digits of the code typed
-- ARGV[4] failures that lock the subject   ARGV[5] first lock ms (doubles each time)
-- ARGV[6] longest lock ms                  ARGV[7] how long failures are remembered, ms
-- ARGV[8] reservation lifetime ms
-- Returns {"ok", now ms, factor random part, sealed secret, digits, period, algorithm,
--          last step used} | {"locked", retry-after ms, 1 when this call locked it} | {"missing"} | {"format", digits}
local active_key, guard_key, inflight_key = KEYS[1], KEYS[2], KEYS[3]
local client, reservation, typed_digits = ARGV[1], ARGV[2], tonumber(ARGV[3])
local max_failures, lock_base_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local lock_max_ms, memory_ms, lifetime_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

local now = now_ms()
local factor = redis.call('HMGET', active_key, 'id', 'cl', 'sk', 'dg', 'pd', 'al', 'ls')
if not factor[1] or factor[2] ~= client then
  return {'missing'}
end
if typed_digits ~= tonumber(factor[4]) then
  return {'format', factor[4]}
end
local wait, relocked = guess_wait(guard_key, inflight_key, now, max_failures,
  lock_base_ms, lock_max_ms, memory_ms, lifetime_ms)
if wait > 0 then
  return {'locked', wait, relocked}
end
reserve_guess(inflight_key, reservation, now, lifetime_ms, memory_ms)
return {'ok', now, factor[1], factor[3], factor[4], factor[5], factor[6], factor[7] or '-1'}
