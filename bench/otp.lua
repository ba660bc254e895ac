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
-- Each thread counts responses by HTTP status, plus the problem's stable `code` for statuses
-- >= 300 ("503 hashing_busy"); done() prints one machine-readable line:
--   BENCH_RESULT {"requests": ..., "latency_us": {...}, "statuses": {"200": 123, ...}, ...}

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
  else
    error("otp.lua: first argument must be 'challenge' or 'verify', not " .. tostring(mode))
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
