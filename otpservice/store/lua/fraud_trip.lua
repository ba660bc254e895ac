-- fraud_trip.lua: the fleet's record of the destinations the fraud guard has tripped, one hash
-- every process reads in its loop (never on a request's path). Whichever process sees a change
-- first records it and is told so, so each trip, widening and clear is reported once.
-- KEYS[1] tripped  hash: destination -> its FraudTrip (msgpack), and "<destination>|scope" ->
--                  whom it refuses ("everyone" or "sources")
-- ARGV[1] "trip" or "clear"    ARGV[2] destination
-- ARGV[3] its FraudTrip, ARGV[4] its scope (for "trip")
-- Returns 1 when this call changed the state (newly tripped, or tripped for other people;
-- cleared while tripped), else 0. A "trip" of a destination already tripped so refreshes its
-- figures.
local scope_field = ARGV[2] .. '|scope'
if ARGV[1] == 'trip' then
  local was = redis.call('HEXISTS', KEYS[1], ARGV[2])
  local scope_before = redis.call('HGET', KEYS[1], scope_field)
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], scope_field, ARGV[4])
  if was == 0 or (scope_before and scope_before ~= ARGV[4]) then return 1 end
  return 0
end
redis.call('HDEL', KEYS[1], scope_field)
return redis.call('HDEL', KEYS[1], ARGV[2])
