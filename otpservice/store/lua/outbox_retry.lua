-- outbox_retry.lua: put a message aside until it is due again, in one step, so it is never both
-- pending and scheduled, nor neither.
-- KEYS[1] stream   the outbox stream        KEYS[2] delayed  zset of entries by due ms
-- ARGV[1] consumer group    ARGV[2] stream entry id    ARGV[3] due ms
-- ARGV[4] the entry to send again (its attempt count already raised)
-- Returns 1, or 0 when the entry was already finished or rescheduled by another worker.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
