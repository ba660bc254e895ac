-- record_delivery.lua: move a challenge's delivery state forward, never back, so reports that
-- arrive late, twice or out of order change nothing they should not.
-- KEYS[1] challenge  hash of the challenge (fields in _prelude.lua)
-- KEYS[2] active     string: random part of the number's current challenge
-- KEYS[3] optout     hash: the number's opt-out (see opt_out.lua)
-- KEYS[4] actives    hash: client -> random part of its current challenge for the number
-- ARGV[1] random part of the challenge id
-- ARGV[2] new state: queued 0, sending 1, retrying 1, unknown 2, sent 2.5,
--         delivered 3, undelivered 3, failed 3 (rank); a lower rank never replaces a higher
--         one (a report of "sent" settles an "unknown", never the other way), and a rank-3
--         state is final
-- ARGV[3] send id of the message ("" keeps: a provider's report does not know it)
-- ARGV[4] provider ("" keeps the recorded one)
-- ARGV[5] provider message id ("" keeps)    ARGV[6] detail ("" clears)
-- Delivery fields: ds state, dsid send id, dp provider, dm message id, de detail,
-- du updated ms, dsa sent ms.
-- "sending" is written only while the challenge can still be used (pending, current, not
-- expired), and its number has not opted out: such a message is not sent.
-- Returns {"ok"|"stale"|"ended"|"opted_out", previous state, previous provider, previous
-- send id, where (see issue_challenge.lua)}
--       | {"missing"}
local challenge_key, active_key = KEYS[1], KEYS[2]
local random_part, state, send_id = ARGV[1], ARGV[2], ARGV[3]
local provider, message_id, detail = ARGV[4], ARGV[5], ARGV[6]
local RANK = {queued = 0, sending = 1, retrying = 1, unknown = 2, sent = 2.5,
              delivered = 3, undelivered = 3, failed = 3}

local f = redis.call('HMGET', challenge_key, 'st', 'ex', 'ds', 'dp', 'dsid', 'g', 'cl')
if not f[1] then
  return {'missing'}
end
local current = f[3] or 'queued'
local function answer(status)
  return {status, current, f[4] or '', f[5] or '', f[6] or ''}
end
local now = now_ms()
if state == 'sending' then
  local live = f[1] == 'p' and now < tonumber(f[2])
    and is_current(active_key, KEYS[4], random_part, f[7])
  if not live then
    return answer('ended')
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return answer('opted_out')
  end
end
if state == current and RANK[state] == 3 then
  return answer('ok')  -- a duplicate report
end
if RANK[state] < RANK[current] or RANK[current] == 3 then
  return answer('stale')
end
redis.call('HSET', challenge_key, 'ds', state, 'du', now)
if send_id ~= '' then redis.call('HSET', challenge_key, 'dsid', send_id) end
if provider ~= '' then redis.call('HSET', challenge_key, 'dp', provider) end
if message_id ~= '' then redis.call('HSET', challenge_key, 'dm', message_id) end
if detail ~= '' then
  redis.call('HSET', challenge_key, 'de', detail)
else
  redis.call('HDEL', challenge_key, 'de')
end
if state == 'sent' and not redis.call('HGET', challenge_key, 'dsa') then
  redis.call('HSET', challenge_key, 'dsa', now)
end
return answer('ok')
