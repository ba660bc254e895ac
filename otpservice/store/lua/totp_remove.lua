-- totp_remove.lua: remove a factor, active or pending.
-- KEYS[1] active    hash: the subject's active factor (fields in _totp.lua)
-- KEYS[2] pending   hash: the subject's pending factor
-- ARGV[1] client name (the factor's, or "" for an operator's removal)
-- ARGV[2] factor random part
-- Returns {"removed", "active" | "pending", the factor's client} | {"missing"}
local client, random_part = ARGV[1], ARGV[2]
for index, status in ipairs({'active', 'pending'}) do
  local factor = redis.call('HMGET', KEYS[index], 'id', 'cl')
  if factor[1] == random_part and (client == '' or factor[2] == client) then
    redis.call('DEL', KEYS[index])
    return {'removed', status, factor[2]}
  end
end
return {'missing'}
