-- inbound_claim.lua: take a reply in hand, once. Its mark says how far it got: "1" being
-- handled (or handled: kept for privacy.retention_days), "r" a handler failed half-way and
-- let the provider's repeat finish it (every step is safe to repeat).
-- KEYS[1] mark     string: "1" or "r" (see above), in the replying number's slot
-- ARGV[1] seconds the claim holds a reply that is being handled
-- Returns {"new"} (never seen, now claimed), {"retry"} (a half-handled reply, now claimed
-- again) or {"taken"} (being handled, or handled already).
local mark = redis.call('GET', KEYS[1])
if mark and mark ~= 'r' then
  return {'taken'}
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
if mark then return {'retry'} end
return {'new'}
