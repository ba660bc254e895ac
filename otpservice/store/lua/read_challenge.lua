-- read_challenge.lua: the public view of a challenge, with its status computed the same way the
-- other scripts compute it. Read-only.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] actives    hash: client -> random part of its current challenge for the number
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- Returns {"missing"} | {status, attempts left, created ms, expires ms, masked phone, purpose,
--   delivery state, provider, provider message id, detail, updated ms, sent ms}
-- with status "pending", "approved", "cancelled", "expired" or "too_many_attempts"; delivery
-- fields are "" when not recorded yet (see record_delivery.lua).
local challenge_key, active_key, actives_key = KEYS[1], KEYS[2], KEYS[3]
local random_part, client = ARGV[1], ARGV[2]

local status = challenge_status(challenge_key, active_key, actives_key, random_part, client, now_ms())
if status == 'missing' then
  return {status}
end
local f = redis.call('HMGET', challenge_key, 'a', 'cr', 'ex', 'ph', 'pu',
  'ds', 'dp', 'dm', 'de', 'du', 'dsa')
if status == 'pending' and tonumber(f[1]) <= 0 then
  status = 'too_many_attempts'
end
local reply = {status}
for i = 1, 11 do
  reply[i + 1] = f[i] or ''
end
return reply
