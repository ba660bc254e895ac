-- totp_enrol.lua: store a new pending factor for a subject, replacing its pending one, if the
-- subject's hourly enrolment limit allows it.
-- KEYS[1] pending     hash: the subject's pending factor (fields in _totp.lua)
-- KEYS[2] enrolments  zset: the subject's enrolments of the last hour, by ms
-- ARGV[1] random part of the factor id   ARGV[2] client name
-- ARGV[3] sealed secret                   ARGV[4] sealed label
-- ARGV[5] digits   ARGV[6] period s       ARGV[7] algorithm
-- ARGV[8] how long the factor stays pending, ms     ARGV[9] activation attempts
-- ARGV[10] enrolments allowed per hour    ARGV[11] the subject, sealed (for its events)
-- Returns {"ok", now ms, expires ms} | {"rate_limited", retry-after ms}
local pending_key, enrolments_key = KEYS[1], KEYS[2]
local random_part, client = ARGV[1], ARGV[2]
local ttl_ms, attempts, per_hour = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local hour_ms = 3600 * 1000

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', enrolments_key, '-inf', now - hour_ms)
local wait = window_wait(enrolments_key, now, hour_ms, per_hour)
if wait > 0 then
  return {'rate_limited', wait}
end
redis.call('ZADD', enrolments_key, now, random_part)
redis.call('PEXPIRE', enrolments_key, hour_ms)

redis.call('DEL', pending_key)
redis.call('HSET', pending_key, 'id', random_part, 'cl', client, 'st', 'p', 'sk', ARGV[3],
  'lb', ARGV[4], 'dg', ARGV[5], 'pd', ARGV[6], 'al', ARGV[7], 'cr', now, 'ex', now + ttl_ms,
  'a', attempts, 'sb', ARGV[11])
-- Kept ten minutes past its expiry, so a late activation reads "expired", not "unknown".
redis.call('PEXPIRE', pending_key, ttl_ms + 600 * 1000)
return {'ok', now, now + ttl_ms}
