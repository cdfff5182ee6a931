-- wrk script for bench/journeys.sh: one unique track event per request, cycling
-- through the events the ten bench journeys listen to (every userId and
-- messageId is new, so every event creates a profile and enters its journeys).
local counter = 0
local events = {
  '"event":"Product Viewed","properties":{"sku":"SKU-%d","price":%d.5,"category":"%s"}',
  '"event":"Product Added","properties":{"sku":"SKU-%d","price":%d.5,"category":"%s"}',
  '"event":"Checkout Started","properties":{"cart":"C-%d","items":%d,"category":"%s"}',
  '"event":"Order Completed","properties":{"order":"O-%d","revenue":%d.5,"items":3,"category":"%s"}',
  '"event":"Signed Up","properties":{"ref":"R-%d","plan":"%s","seats":%d}',
  '"event":"Trial Started","properties":{"ref":"R-%d","days":%d,"plan":"%s"}',
}
local categories = {"shoes", "shirts", "books", "games"}

local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  run = math.random(1e9)
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("NUDGE_AUTH")
end
function request()
  counter = counter + 1
  local k = counter % #events + 1
  local cat = categories[counter % #categories + 1]
  local props
  if k == 5 then
    props = string.format(events[k], counter, counter % 3 == 0 and "pro" or "basic", counter % 9)
  elseif k == 6 then
    props = string.format(events[k], counter, 7 * (counter % 4 + 1), "trial")
  else
    props = string.format(events[k], counter, counter % 200, cat)
  end
  local body = string.format('{"userId":"jb-%d-%d-%d",%s,"messageId":"jm-%d-%d-%d","context":{"traits":{"email":"jb-%d-%d-%d@example.com"}}}',
    run, tid, counter, props, run, tid, counter, run, tid, counter)
  return wrk.format("POST", "/v1/track", nil, body)
end
