-- _prelude.lua: shared by the challenge scripts and take_quota.lua; scripts.py puts it in front
-- of each of them.
-- Challenge hash fields: st status (p pending, a approved, c cancelled), h argon2id salt and
-- digest (raw, kept under 64 bytes so the hash stays a compact listpack), pid pepper id,
-- hp argon2 parameters, cl client, ph masked phone, pu purpose, a attempts left,
-- cr created ms, ex expires ms; once approved, an the approving reservation and at its time.

-- The server clock, so every replica of the service agrees on time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- How long (ms) until one more member fits in the last window_ms of zset key (scored by ms),
-- which may hold limit members; 0 when one fits now. Room comes back when the member that must
-- leave the window first ages out of it.
local function window_wait(key, now, window_ms, limit)
  local since = '(' .. (now - window_ms)
  local count = redis.call('ZCOUNT', key, since, '+inf')
  if count < limit then return 0 end
  local oldest = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES',
    'LIMIT', count - limit, 1)
  return tonumber(oldest[2]) + window_ms - now
end

-- Whether random_part is its client's current challenge for the number: the newest that client
-- asked for (actives hash: client -> random part), so another client's new challenge does not
-- end it. The release before kept one current challenge for all clients (the active string,
-- still written for it); a challenge that release issued is current while it is that one.
-- Drop the active string in the release after.
local function is_current(active_key, actives_key, random_part, client)
  if redis.call('HGET', actives_key, client) == random_part then return true end
  return redis.call('GET', active_key) == random_part
end

-- "missing", "approved", "cancelled", "expired" or "pending" (attempt budget not considered).
-- Another client's challenge reads as missing; one replaced by a newer challenge of its client
-- as cancelled.
local function challenge_status(challenge_key, active_key, actives_key, random_part, client, now)
  local fields = redis.call('HMGET', challenge_key, 'st', 'cl', 'ex')
  local st, cl, ex = fields[1], fields[2], fields[3]
  if not st or cl ~= client then return 'missing' end
  if st == 'a' then return 'approved' end
  if st == 'c' then return 'cancelled' end
  if now >= tonumber(ex) then return 'expired' end
  if not is_current(active_key, actives_key, random_part, client) then return 'cancelled' end
  return 'pending'
end

-- Count n settled failures of a number; lock it once the count reaches max_failures, each
-- lockout twice as long as the last, up to lock_max_ms. Returns the locked-until ms (0: none).
-- Guard fields: f settled failures, u locked-until ms, l lockout level.
local function count_failures(guard_key, n, now, max_failures, lock_base_ms, lock_max_ms, memory_ms)
  local failures = redis.call('HINCRBY', guard_key, 'f', n)
  local locked_until = tonumber(redis.call('HGET', guard_key, 'u') or '0')
  if locked_until <= now and failures >= max_failures then
    local level = redis.call('HINCRBY', guard_key, 'l', 1)
    locked_until = now + math.min(lock_base_ms * 2 ^ (level - 1), lock_max_ms)
    redis.call('HSET', guard_key, 'u', locked_until, 'f', 0)
  end
  redis.call('PEXPIRE', guard_key, math.max(locked_until - now, 0) + memory_ms)
  return locked_until
end

-- Count the reservations of inflight_key whose verdict never came (older than lifetime_ms) as
-- failures, then say how long to wait before one more check may be reserved: 0 when it may now.
-- Settled failures plus checks in flight never pass max_failures, so concurrent guesses cannot.
local function reservation_wait(guard_key, inflight_key, now, max_failures, lock_base_ms,
    lock_max_ms, memory_ms, lifetime_ms)
  local locked_until = tonumber(redis.call('HGET', guard_key, 'u') or '0')
  local stale = redis.call('ZREMRANGEBYSCORE', inflight_key, '-inf', now - lifetime_ms)
  if stale > 0 then
    locked_until = count_failures(guard_key, stale, now, max_failures, lock_base_ms, lock_max_ms,
      memory_ms)
  end
  if locked_until > now then return locked_until - now end
  local settled = tonumber(redis.call('HGET', guard_key, 'f') or '0')
  if settled + redis.call('ZCARD', inflight_key) >= max_failures then
    -- Enough guesses are being checked to lock if they fail: wait for their verdicts.
    return 1000
  end
  return 0
end
