-- wrk script: GET /stores/<STORE>/get/<key> for keys read from KEYFILE
-- (one percent-encoded key a line), each thread starting at its own place.
local keys = {}
local store = os.getenv("STORE") or "order-count"
for line in io.lines(os.getenv("KEYFILE")) do
  if #line > 0 then keys[#keys + 1] = line end
end
local i = 0
local counter = 0
local requests = {}

setup = function(thread)
  counter = counter + 1
  thread:set("i", counter * 7919)
end

-- the requests are formatted once, so that wrk spends the CPU it shares
-- with the server on sending them, not on building strings
init = function(args)
  for n, key in ipairs(keys) do
    requests[n] = wrk.format("GET", "/stores/" .. store .. "/get/" .. key)
  end
end

request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests/s %.0f p50 %.2f ms p99 %.2f ms errors %d non2xx %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
