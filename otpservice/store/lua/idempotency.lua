-- idempotency.lua: the record behind an Idempotency-Key, claimed by one request, completed
-- with its result or released when it failed. A script so that, with
-- redis.min_replicas_acked, each step is followed by WAIT on its connection: a claim lost in a
-- failover would let a retry send a second SMS.
-- KEYS[1] record   string: the IdempotencyRecord (msgpack)
-- ARGV[1] "claim", "complete", "swap", "release" or "release_if" (only while ARGV[2] is
--         there: a claim this request made and could not confirm, never another's record)
-- ARGV[2] the record to write (claim: the pending one; complete: the finished or in-doubt one;
--         swap: the one to put in place of ARGV[4])
-- ARGV[3] its lifetime in seconds    ARGV[4] (swap) the record expected there now
-- Returns, for "claim": {1} when this request now holds the key, {0, record} when another
-- request's record is there; for "swap": {1} when it was swapped, {0} when the record there
-- was another (another retry got there first); else {1}.
local op = ARGV[1]
if op == 'claim' then
  if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then
    return {1}
  end
  return {0, redis.call('GET', KEYS[1])}
elseif op == 'swap' then
  if redis.call('GET', KEYS[1]) ~= ARGV[4] then
    return {0}
  end
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
elseif op == 'release_if' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('DEL', KEYS[1])
  end
elseif op == 'complete' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return {1}
