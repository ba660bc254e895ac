-- totp_recovery_codes.lua: replace an active factor's recovery codes (the old ones stop
-- working) and, when the TOTP key was rotated, its secret sealed under the current key.
-- KEYS[1] active   hash: the subject's active factor (fields in _totp.lua)
-- ARGV[1] client name   ARGV[2] factor random part
-- ARGV[3] the secret sealed under the current key ("" to keep it)
-- ARGV[4] recovery key id   ARGV[5] argon2 parameters   ARGV[6..15] recovery-code hashes
-- Returns {"ok"} | {"missing"}
local active_key = KEYS[1]
local client, random_part = ARGV[1], ARGV[2]
local factor = redis.call('HMGET', active_key, 'id', 'cl')
if factor[1] ~= random_part or factor[2] ~= client then
  return {'missing'}
end
if ARGV[3] ~= '' then
  redis.call('HSET', active_key, 'sk', ARGV[3])
end
redis.call('HSET', active_key, 'rk', ARGV[4], 'rp', ARGV[5])
for slot = 0, RECOVERY_SLOTS - 1 do
  redis.call('HSET', active_key, 'r' .. slot, ARGV[6 + slot])
end
return {'ok'}
