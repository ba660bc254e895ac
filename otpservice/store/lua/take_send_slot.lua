-- take_send_slot.lua: one send slot of a provider's sender, shared by every worker of the fleet
-- (GCRA: the key holds the theoretical arrival time of the next send).
-- KEYS[1] rate     string: theoretical arrival time, ms
-- ARGV[1] emission interval ms (1000 / messages per second)
-- ARGV[2] burst: sends allowed back to back
-- Returns {wait_ms, slot_ms}: {0, the slot's time in server ms} when a slot is taken, else
-- {the ms to wait before asking again, 0}.
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local tolerance = interval * (burst - 1)
if tat - now > tolerance then
  return {math.ceil(tat - now - tolerance), 0}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now) + 1000)
return {0, math.floor(tat)}
