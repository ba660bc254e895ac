-- queue_finish.lua: a message's outcome is final; forget it (acknowledge and delete).
-- KEYS[1] stream   the queue's stream (outbox, events or replies)
-- ARGV[1] consumer group    ARGV[2] stream entry id
-- Returns the number of entries deleted (0 when another worker finished it first).
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
