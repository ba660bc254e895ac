-- queue_retry.lua (any queue): put an entry aside until it is due again, in one step, so it
-- is never both pending and scheduled, nor neither. Only the entry's current owner can: a
-- worker whose entry was taken over must not schedule a second attempt.
-- KEYS[1] stream   the queue's stream       KEYS[2] delayed  zset of entries by due ms
-- ARGV[1] consumer group    ARGV[2] stream entry id    ARGV[3] due ms
-- ARGV[4] the entry to handle again (its attempt count already raised)
-- ARGV[5] consumer (the worker)
-- Returns 1, or 0 when the entry is not this worker's any more (finished or taken over).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not pending[1] or pending[1][2] ~= ARGV[5] then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
