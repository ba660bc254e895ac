-- _prelude.lua: shared by the challenge scripts; scripts.py puts it in front of each of them.
-- Challenge hash fields: st status (p pending, a approved, c cancelled), h argon2id salt and
-- digest (raw, kept under 64 bytes so the hash stays a compact listpack), pid pepper id,
-- hp argon2 parameters, cl client, ph masked phone, pu purpose, a attempts left,
-- cr created ms, ex expires ms.

-- The server clock, so every replica of the service agrees on time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "missing", "approved", "cancelled", "expired" or "pending" (attempt budget not considered).
-- Another client's challenge reads as missing; one replaced by a newer challenge as cancelled.
local function challenge_status(challenge_key, active_key, random_part, client, now)
  local fields = redis.call('HMGET', challenge_key, 'st', 'cl', 'ex')
  local st, cl, ex = fields[1], fields[2], fields[3]
  if not st or cl ~= client then return 'missing' end
  if st == 'a' then return 'approved' end
  if st == 'c' then return 'cancelled' end
  if now >= tonumber(ex) then return 'expired' end
  if redis.call('GET', active_key) ~= random_part then return 'cancelled' end
  return 'pending'
end
