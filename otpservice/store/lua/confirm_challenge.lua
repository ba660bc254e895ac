-- confirm_challenge.lua: whether a challenge exists, by a write that changes nothing (its own
-- expiry set again), so that with redis.min_replicas_acked the WAIT after it proves the
-- replicas hold the challenge (replication is one ordered stream: what came before is there).
-- Used when an Idempotency-Key's first request was answered 503 "in doubt" (otp.py).
-- KEYS[1] challenge  hash of the challenge
-- Returns 1 when it exists, 0 when it does not (a failover lost it, or it expired).
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
