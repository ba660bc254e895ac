-- inbound_claim.lua: take a reply in hand, once, and say how far it got. Its mark is a claim
-- token while a handler has it, "h" once handled (kept for privacy.retention_days), or "r"
-- when a handler failed half-way and left the provider's repeat to finish it (every step is
-- safe to repeat). Only the handler whose token is there may settle it, so one that outlived
-- its claim cannot undo what a later handler finished.
-- KEYS[1] mark     string (see above), in the replying number's slot
-- ARGV[1] "claim", "handled" or "release"    ARGV[2] the handler's claim token
-- ARGV[3] seconds: the claim's hold ("claim"), or how long the mark is kept (else)
-- Returns, for "claim": {"new"} (never seen, now claimed), {"retry"} (half-handled, claimed
-- again) or {"taken"} (being handled, or handled); else {1} when settled, {0} when the mark
-- is no longer this handler's.
local mark = redis.call('GET', KEYS[1])
if ARGV[1] == 'claim' then
  if mark and mark ~= 'r' then
    return {'taken'}
  end
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  if mark then return {'retry'} end
  return {'new'}
end
if mark ~= ARGV[2] then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[1] == 'handled' and 'h' or 'r', 'EX', ARGV[3])
return {1}
