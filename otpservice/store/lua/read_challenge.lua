-- read_challenge.lua: the public view of a challenge, with its status computed the same way the
-- other scripts compute it. Read-only.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- Returns {"missing"} | {status, attempts left, created ms, expires ms, masked phone, purpose}
-- with status "pending", "approved", "cancelled", "expired" or "too_many_attempts".
local challenge_key, active_key = KEYS[1], KEYS[2]
local random_part, client = ARGV[1], ARGV[2]

local status = challenge_status(challenge_key, active_key, random_part, client, now_ms())
if status == 'missing' then
  return {status}
end
local f = redis.call('HMGET', challenge_key, 'a', 'cr', 'ex', 'ph', 'pu')
if status == 'pending' and tonumber(f[1]) <= 0 then
  status = 'too_many_attempts'
end
return {status, f[1], f[2], f[3], f[4], f[5]}
