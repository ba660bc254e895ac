-- totp_activate_reserve.lua: spend one activation attempt of a pending factor before its code
-- is checked; when the subject has an active factor, also reserve a check of the current code
-- that must come with it (as totp_reserve does), so a swap obeys the same budget.
-- KEYS[1] pending   hash: the subject's pending factor (fields in _totp.lua)
-- KEYS[2] active    hash: the subject's active factor
-- KEYS[3] guard     hash: the subject's failures and lock
-- KEYS[4] inflight  zset: codes being checked, reservation -> ms
-- ARGV[1] client name   ARGV[2] factor random part   ARGV[3] reservation id
-- ARGV[4] digits of the code typed   ARGV[5] digits of the current code typed (0: none)
-- ARGV[6] failures that lock the subject   ARGV[7] first lock ms (doubles each time)
-- ARGV[8] longest lock ms                  ARGV[9] how long failures are remembered, ms
-- ARGV[10] reservation lifetime ms
-- Returns {"ok", now ms, sealed secret, digits, period, algorithm,
--          active factor's random part ("" none), its sealed secret, digits, period,
--          algorithm, last step used}
--       | {"missing"} | {"active"} (it is active already) | {"expired"} | {"exists"}
--       | {"format", digits} | {"locked", retry-after ms, 1 when this call locked it}
local pending_key, active_key, guard_key, inflight_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local client, random_part, reservation = ARGV[1], ARGV[2], ARGV[3]
local typed_digits, current_digits = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_failures, lock_base_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local lock_max_ms, memory_ms, lifetime_ms = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])

local now = now_ms()
local pending = redis.call('HMGET', pending_key, 'id', 'cl', 'ex', 'a', 'sk', 'dg', 'pd', 'al')
local active = redis.call('HMGET', active_key, 'id', 'cl', 'sk', 'dg', 'pd', 'al', 'ls')
local has_active = active[1] and active[2] == client
if pending[1] ~= random_part or pending[2] ~= client then
  if has_active and active[1] == random_part then return {'active'} end
  return {'missing'}
end
if now >= tonumber(pending[3]) or tonumber(pending[4]) <= 0 then
  return {'expired'}
end
if typed_digits ~= tonumber(pending[6]) then
  return {'format', pending[6]}
end
if has_active then
  if current_digits == 0 then return {'exists'} end
  if current_digits ~= tonumber(active[4]) then return {'format', active[4]} end
  local wait, relocked = guess_wait(guard_key, inflight_key, now, max_failures,
    lock_base_ms, lock_max_ms, memory_ms, lifetime_ms)
  if wait > 0 then return {'locked', wait, relocked} end
  reserve_guess(inflight_key, reservation, now, lifetime_ms, memory_ms)
else
  active = {'', '', '', '', '', '', ''}
end
redis.call('HINCRBY', pending_key, 'a', -1)
return {'ok', now, pending[5], pending[6], pending[7], pending[8],
  active[1], active[3], active[4], active[5], active[6], active[7] or '-1'}
