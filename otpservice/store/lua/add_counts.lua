-- add_counts.lua: add to an hour's analytics counters in one step.
-- KEYS[1] stats    hash of one hour: "<metric>|<country>|<provider>" -> count
-- ARGV[1] seconds to keep the hour (privacy.analytics_days)
-- ARGV[2..] pairs: field, amount
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
