-- otp.lua: wrk script for the otpservice benchmarks (driven by bench.run).
--
-- Two modes, chosen by the first script argument (after wrk's `--`):
--
--   challenge PREFIX START
--       POST /challenge, one unique phone number per request: thread `tid` sends
--       PREFIX .. (START + tid * 1000000 + n), n = 0, 1, 2, ... (7 digits, zero-padded).
--   verify PAIRS_FILE THREADS
--       POST /verify once per line "challenge_id code" of PAIRS_FILE; thread `tid` takes
--       lines tid+1, tid+1+THREADS, tid+1+2*THREADS, ... so no pair is sent twice. When a
--       thread runs out of pairs it stops (wrk.thread:stop(), wrk >= 4.1) and counts it in
--       `exhausted`: the run's rate is then a lower bound, and run.py says so.
--
-- An optional last argument RATE (requests a second per thread) paces each thread to that rate
-- (an open schedule: a request is due every 1/RATE s, sent when a connection is free), so that
-- two stores can be compared doing the same work; without it each connection sends as fast as
-- it is answered.
--
-- Each thread counts responses by HTTP status, plus the problem's stable `code` for statuses
-- >= 300 ("503 hashing_busy"); done() prints one machine-readable line:
--   BENCH_RESULT {"requests": ..., "latency_us": {...}, "statuses": {"200": 123, ...}, ...}

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } otp_timespec;
  int clock_gettime(int clock_id, otp_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("otp_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

-- Pacing (RATE given): requests a second, the gap between them, when the next one is due.
local rate, period_ms, next_due_ms

-- How long wrk holds the next request: until its turn in the schedule. A thread that fell
-- behind (every connection busy) sends at once and does not catch up in a burst.
local function paced_delay()
  local now = now_ms()
  next_due_ms = math.max((next_due_ms or now) + period_ms, now)
  return math.floor(next_due_ms - now)
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local headers = { ["Content-Type"] = "application/json" }
local mode
local prefix, first_number, sent_numbers
local bodies, next_body

exhausted = 0
counts = {}

function init(args)
  mode = args[1]
  if mode == "challenge" then
    prefix = args[2]
    first_number = tonumber(args[3]) + tid * 1000000
    sent_numbers = 0
    rate = tonumber(args[4])
  elseif mode == "verify" then
    local path, stride = args[2], tonumber(args[3])
    bodies, next_body = {}, 0
    local line_no = 0
    for line in io.lines(path) do
      if line_no % stride == tid then
        local id, code = line:match("^(%S+) (%d+)$")
        if id then
          bodies[#bodies + 1] = string.format('{"challenge_id":"%s","code":"%s"}', id, code)
        end
      end
      line_no = line_no + 1
    end
    rate = tonumber(args[4])
  else
    error("otp.lua: first argument must be 'challenge' or 'verify', not " .. tostring(mode))
  end
  if rate then
    -- Defined only when pacing: wrk holds every request on a timer once `delay` exists.
    period_ms = 1000 / rate
    delay = paced_delay
  end
end

function request()
  if mode == "challenge" then
    local body = string.format('{"phone":"%s%07d"}', prefix, first_number + sent_numbers)
    sent_numbers = sent_numbers + 1
    return wrk.format("POST", "/challenge", headers, body)
  end
  next_body = next_body + 1
  local body = bodies[next_body]
  if body == nil then
    -- Out of pairs: stop this thread. wrk still wants a request back; make it a cheap one.
    exhausted = exhausted + 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  return wrk.format("POST", "/verify", headers, body)
end

function response(status, _, body)
  local key = tostring(status)
  if status >= 300 then
    key = key .. " " .. (body:match('"code":"([%w_]+)"') or "?")
  end
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, _)
  local statuses, exhausted_total = {}, 0
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts") or {}) do
      statuses[key] = (statuses[key] or 0) + n
    end
    exhausted_total = exhausted_total + (thread:get("exhausted") or 0)
  end
  local parts = {}
  for key, n in pairs(statuses) do
    parts[#parts + 1] = string.format('"%s":%d', key, n)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},'
      .. '"statuses":{%s},"exhausted_threads":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, table.concat(parts, ","), exhausted_total
  ))
end
