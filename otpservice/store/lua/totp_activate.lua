-- totp_activate.lua: settle an activation reserved by totp_activate_reserve. With the right
-- code the pending factor becomes the active one, atomically replacing the factor the current
-- code proved, with its step used (it cannot log in) and its recovery-code hashes. A wrong or
-- replayed current code is a settled failure of the subject, as in totp_verdict.
-- KEYS[1] pending   hash: the subject's pending factor (fields in _totp.lua)
-- KEYS[2] active    hash: the subject's active factor
-- KEYS[3] guard     hash: the subject's failures and lock
-- KEYS[4] inflight  zset: codes being checked, reservation -> ms
-- ARGV[1] client name   ARGV[2] factor random part   ARGV[3] reservation id
-- ARGV[4] the pending factor's matching step, or "" for none
-- ARGV[5] random part of the active factor it replaces ("" for none)
-- ARGV[6] the active factor's matching step, or "" for none
-- ARGV[7] failures that lock the subject   ARGV[8] first lock ms (doubles each time)
-- ARGV[9] longest lock ms                  ARGV[10] how long failures are remembered, ms
-- ARGV[11] recovery key id   ARGV[12] argon2 parameters   ARGV[13..22] recovery-code hashes
-- Returns {"activated", activated ms} | {"incorrect", activation attempts left}
--       | {"current_incorrect" | "current_replayed", failures left, locked ms, ms this failure
--          locked it for} | {"missing"} | {"exists"} (the active factor changed meanwhile)
local pending_key, active_key, guard_key, inflight_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local client, random_part, reservation = ARGV[1], ARGV[2], ARGV[3]
local pending_step, replaces, current_step = ARGV[4], ARGV[5], ARGV[6]
local max_failures, lock_base_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local lock_max_ms, memory_ms = tonumber(ARGV[9]), tonumber(ARGV[10])

local now = now_ms()
local active = redis.call('HMGET', active_key, 'id', 'cl', 'ls')
local active_now = ''
if active[1] and active[2] == client then active_now = active[1] end
if replaces ~= '' then
  local settling = redis.call('ZREM', inflight_key, reservation)
  if active_now ~= replaces then return {'exists'} end
  if current_step == '' or tonumber(current_step) <= tonumber(active[3] or '-1') then
    local locked_until, locked_now = settle_failure(guard_key, settling, now, max_failures,
      lock_base_ms, lock_max_ms, memory_ms)
    keep_guard(guard_key, now)
    local outcome = 'current_incorrect'
    if current_step ~= '' then outcome = 'current_replayed' end
    return {outcome, guesses_left(guard_key, now, max_failures), math.max(locked_until - now, 0),
      locked_now}
  end
  -- The current code was right: its step is used, whatever the new code turns out to be.
  redis.call('HSET', active_key, 'ls', current_step)
  redis.call('HDEL', guard_key, 'f')
elseif active_now ~= '' then
  return {'exists'}
end
local pending = redis.call('HMGET', pending_key, 'id', 'cl', 'a')
if pending[1] ~= random_part or pending[2] ~= client then
  return {'missing'}
end
if pending_step == '' then
  return {'incorrect', tonumber(pending[3])}
end
-- Checked (and reserved) before it expired: the code counts, as a challenge's does.
redis.call('DEL', active_key)
redis.call('RENAME', pending_key, active_key)
redis.call('PERSIST', active_key)
redis.call('HDEL', active_key, 'ex', 'a')
redis.call('HSET', active_key, 'st', 'a', 'ls', pending_step, 'at', now, 'rk', ARGV[11],
  'rp', ARGV[12])
for slot = 0, RECOVERY_SLOTS - 1 do
  redis.call('HSET', active_key, 'r' .. slot, ARGV[13 + slot])
end
return {'activated', now}
