-- Shared by the scenario scripts (each loads it with dofile, in every wrk Lua state):
-- per-thread random seeds, random user tokens, an exact count of non-2xx responses (wrk's
-- own "Non-2xx or 3xx" count misses redirects), and one parseable result line from done():
--   BENCH rps=... p50_ms=... p99_ms=... requests=... non2xx=... socket_errors=... duration_s=...
-- Latency is wrk's, over every response, 2xx or not.  Tokens "Bearer u<N>" are accepted by
-- bench/fake_users.py as user N; the seed has users 1..10000.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function token_headers(extra)
  local h = extra or {}
  h["Authorization"] = "Bearer u" .. math.random(1, 10000)
  return h
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH rps=%.2f p50_ms=%.3f p99_ms=%.3f requests=%d non2xx=%d socket_errors=%d duration_s=%.3f\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, bad, e.connect + e.read + e.write + e.timeout, secs))
end
