-- queue_touch.lua (any queue): a worker still handling an entry says so, so it does not look
-- idle to another worker's XAUTOCLAIM. Only the entry's current owner can.
-- KEYS[1] stream   the queue's stream
-- ARGV[1] consumer group    ARGV[2] consumer (the worker)    ARGV[3] stream entry id
-- Returns 1, or 0 when the entry is no longer this worker's (taken over, or finished).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not pending[1] or pending[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
