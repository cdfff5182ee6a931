-- wrk script: batches of 100 unique track events per request (see bench/ingest.sh).
local counter = 0

local threads = {}
local n = 100
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("NUDGE_AUTH")
end
function request()
  local items = {}
  local r = math.random(1e9)
  for i = 1, n do
    counter = counter + 1
    items[i] = string.format('{"type":"track","userId":"bench-%d-%d","event":"Product Added","messageId":"b-%d-%d-%d","properties":{"price":19.99}}',
      tid, counter % 5000, tid, counter, r)
  end
  return wrk.format("POST", "/v1/batch", nil, '{"batch":[' .. table.concat(items, ",") .. ']}')
end
function done(summary, latency, requests)
  io.write(string.format("   events/s %.0f\n", n * summary.requests / (summary.duration / 1e6)))
end
