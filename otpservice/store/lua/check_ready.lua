-- check_ready.lua: prove the store runs scripts and accepts writes (a full, read-only or
-- script-less Redis fails here, where PING would pass).
-- KEYS[1] readiness key
-- ARGV: none
-- Returns 1.
local ready_key = KEYS[1]
redis.call('SET', ready_key, '1', 'PX', 10000)
return 1
