-- wrk script: one unique track event per request (see bench/ingest.sh). The
-- request line and headers are built once; each request formats only its
-- body (wrk.format rebuilt the whole header block for every request, which
-- cost the load generator CPU on the server's two cores).
local counter = 0
local head

local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  head = "POST /v1/track HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
    "\r\nContent-Type: application/json\r\nAuthorization: Basic " .. os.getenv("NUDGE_AUTH") ..
    "\r\nContent-Length: "
end
function request()
  counter = counter + 1
  local body = string.format('{"userId":"bench-%d-%d","event":"Product Added","messageId":"m-%d-%d-%d","properties":{"price":19.99,"sku":"SKU-%d"}}',
    tid, counter % 5000, tid, counter, math.random(1e9), counter % 100)
  return head .. #body .. "\r\n\r\n" .. body
end
function done(summary, latency, requests)
  io.write(string.format("   events/s %.0f\n", summary.requests / (summary.duration / 1e6)))
end
