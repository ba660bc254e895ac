-- _totp.lua: shared by the authenticator-app (TOTP) scripts, after _prelude.lua (whose
-- count_failures and now_ms they use); scripts.py puts both in front of each of them.
-- Factor hash fields (active and pending): id random part of the factor id, cl client,
-- st status (p pending, a active), sk sealed secret, lb sealed label, dg digits, pd period s,
-- al algorithm, cr created ms, ex expires ms and a activation attempts left (pending only),
-- at activated ms, ls last step used, lu last used ms, lr / rr the reservation of the last
-- approval by code / by recovery code, rk recovery key id, rp argon2 parameters,
-- r0 .. r9 recovery-code hashes by slot (a used one is deleted), sb the subject, sealed.
-- Guard fields: f settled failures, u locked-until ms, l lockout level (as a number's guard),
-- rf recovery failures and re the ms their 24 hours end.

local RECOVERY_SLOTS = 10

-- The guard outlives the recovery failures it holds (count_failures sets a shorter expiry
-- when lockout.memory_seconds is under a day).
local function keep_guard(guard_key, now)
  local ends = tonumber(redis.call('HGET', guard_key, 're') or '0')
  if ends > now and redis.call('PTTL', guard_key) < ends - now then
    redis.call('PEXPIRE', guard_key, ends - now)
  end
end

-- How long the subject must wait before one more code may be checked (0: it may now), after
-- counting the checks whose verdict never came as failures (reservation_wait, _prelude.lua);
-- and 1 when this call locked it again (failures counted during a lock), else 0.
local function guess_wait(guard_key, inflight_key, now, max_failures, lock_base_ms, lock_max_ms,
    memory_ms, lifetime_ms)
  local locked_until = tonumber(redis.call('HGET', guard_key, 'u') or '0')
  local settled = tonumber(redis.call('HGET', guard_key, 'f') or '0')
  local relocked = 0
  if locked_until <= now and settled >= max_failures then
    -- Failures counted while it was locked (wrong recovery codes) lock it again now that the
    -- lock is over, rather than leave it refusing every code for a second at a time.
    count_failures(guard_key, 0, now, max_failures, lock_base_ms, lock_max_ms, memory_ms)
    relocked = 1
  end
  local wait = reservation_wait(guard_key, inflight_key, now, max_failures, lock_base_ms,
    lock_max_ms, memory_ms, lifetime_ms)
  keep_guard(guard_key, now)
  return wait, relocked
end

local function reserve_guess(inflight_key, reservation, now, lifetime_ms, memory_ms)
  redis.call('ZADD', inflight_key, now, reservation)
  redis.call('PEXPIRE', inflight_key, lifetime_ms + memory_ms)
end

-- A checked code that failed: counted once (settling is ZREM's reply). Returns the locked-until
-- ms, and the ms this very failure locked the subject for (0 when it did not: its event is
-- sent once).
local function settle_failure(guard_key, settling, now, max_failures, lock_base_ms, lock_max_ms,
    memory_ms)
  local before = tonumber(redis.call('HGET', guard_key, 'u') or '0')
  if settling ~= 1 then return before, 0 end
  local locked_until = count_failures(guard_key, 1, now, max_failures, lock_base_ms, lock_max_ms,
    memory_ms)
  if locked_until > before and locked_until > now then return locked_until, locked_until - now end
  return locked_until, 0
end

-- Failures the subject may still make before it is locked (0 while locked).
local function guesses_left(guard_key, now, max_failures)
  if tonumber(redis.call('HGET', guard_key, 'u') or '0') > now then return 0 end
  return math.max(max_failures - tonumber(redis.call('HGET', guard_key, 'f') or '0'), 0)
end

-- The recovery failures of the last 24 hours and when they are forgotten (0, 0: none).
local function recovery_failures(guard_key, now)
  local fields = redis.call('HMGET', guard_key, 'rf', 're')
  local ends = tonumber(fields[2] or '0')
  if ends <= now then return 0, 0 end
  return tonumber(fields[1] or '0'), ends
end

local function count_recovery_failures(guard_key, n, now, window_ms)
  local failures, ends = recovery_failures(guard_key, now)
  if ends == 0 then ends = now + window_ms end
  failures = failures + n
  redis.call('HSET', guard_key, 'rf', failures, 're', ends)
  return failures, ends
end

local function recovery_codes_left(factor_key)
  local left = 0
  for slot = 0, RECOVERY_SLOTS - 1 do
    left = left + redis.call('HEXISTS', factor_key, 'r' .. slot)
  end
  return left
end
