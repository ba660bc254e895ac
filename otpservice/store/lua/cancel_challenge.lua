-- cancel_challenge.lua: cancel a pending challenge; its code stops working at once.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] actives    hash: client -> random part of its current challenge for the number
-- ARGV[1] random part of the challenge id     ARGV[2] client name
-- Returns {"cancelled", 1} when cancelled now, {"cancelled"} when it was before, else
-- {status}: "missing", "approved", "expired".
local challenge_key, active_key, actives_key = KEYS[1], KEYS[2], KEYS[3]
local random_part, client = ARGV[1], ARGV[2]

local status = challenge_status(challenge_key, active_key, actives_key, random_part, client, now_ms())
if status == 'pending' then
  redis.call('HSET', challenge_key, 'st', 'c')
  redis.call('HDEL', challenge_key, 'h', 'pid', 'hp')
  return {'cancelled', 1}
end
return {status}
