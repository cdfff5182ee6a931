-- wrk script for bench/journeys.sh: paced "Password Reset" events for the
-- bench-instant journey (entry -> branch -> message, no wait). Each connection
-- waits JB_PACE_MS between requests, so the load stays moderate (about
-- connections * 1000 / JB_PACE_MS events/s) instead of saturating the server.
local counter = 0
local pace = tonumber(os.getenv("JB_PACE_MS") or "20")

local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  run = math.random(1e9)
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("NUDGE_AUTH")
end
function delay() return pace end
function request()
  counter = counter + 1
  local body = string.format('{"userId":"jp-%d-%d-%d","event":"Password Reset","messageId":"jpm-%d-%d-%d","properties":{"token":"t%d","priority":"%s"},"context":{"traits":{"email":"jp-%d-%d-%d@example.com"}}}',
    run, tid, counter, run, tid, counter, counter, counter % 4 == 0 and "high" or "normal", run, tid, counter)
  return wrk.format("POST", "/v1/track", nil, body)
end
