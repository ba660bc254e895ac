-- fraud_trip.lua: the fleet's record of the destinations the fraud guard has tripped, one hash
-- every process reads in its loop (never on a request's path). Whichever process sees a change
-- first records it and is told so, so each trip and clear is reported once.
-- KEYS[1] tripped  hash: destination -> its FraudTrip (msgpack: sent, verified, until)
-- ARGV[1] "trip" or "clear"    ARGV[2] destination    ARGV[3] its FraudTrip (for "trip")
-- Returns 1 when this call changed the state (newly tripped; cleared while tripped), else 0.
-- A "trip" of a destination already tripped refreshes its figures.
if ARGV[1] == 'trip' then
  return redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
return redis.call('HDEL', KEYS[1], ARGV[2])
