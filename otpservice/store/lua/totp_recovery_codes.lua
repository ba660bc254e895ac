-- totp_recovery_codes.lua: replace an active factor's recovery codes (the old ones stop
-- working) and, when the TOTP key was rotated, its secret, label and subject sealed under the
-- current key.
-- KEYS[1] active   hash: the subject's active factor (fields in _totp.lua)
-- ARGV[1] client name   ARGV[2] factor random part
-- ARGV[3] the secret sealed under the current key ("" to keep it as it is)
-- ARGV[4] the label, so sealed ("" to keep it)   ARGV[5] the subject, so sealed ("" to keep it)
-- ARGV[6] recovery key id   ARGV[7] argon2 parameters   ARGV[8..17] recovery-code hashes
-- Returns {"ok"} | {"missing"}
local active_key = KEYS[1]
local client, random_part = ARGV[1], ARGV[2]
local factor = redis.call('HMGET', active_key, 'id', 'cl')
if factor[1] ~= random_part or factor[2] ~= client then
  return {'missing'}
end
for index, field in ipairs({'sk', 'lb', 'sb'}) do
  if ARGV[2 + index] ~= '' then
    redis.call('HSET', active_key, field, ARGV[2 + index])
  end
end
redis.call('HSET', active_key, 'rk', ARGV[6], 'rp', ARGV[7])
for slot = 0, RECOVERY_SLOTS - 1 do
  redis.call('HSET', active_key, 'r' .. slot, ARGV[8 + slot])
end
return {'ok'}
