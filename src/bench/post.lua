-- wrk script for `switchyard bench ingest`: send pre-signed webhook requests, each thread its own
-- share read from $REQS.<thread>, where every whole HTTP request follows a line with its length.
-- No request is sent twice within a run. The file is read in one go: wrk starts each thread as
-- soon as it is prepared, so a slow preparation would let the first run alone for a while.
local reqs = {}
local idx = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  local f = assert(io.open(os.getenv("REQS") .. "." .. (tid or 0), "rb"))
  local all = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #all do
    local nl = all:find("\n", pos, true)
    local len = tonumber(all:sub(pos, nl - 1))
    reqs[#reqs + 1] = all:sub(nl + 1, nl + len)
    pos = nl + len + 1
  end
end
function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end
function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_s=%.3f p50_ms=%.3f p99_ms=%.3f non2xx=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status or 0, (summary.errors.connect or 0) + (summary.errors.read or 0) + (summary.errors.write or 0) + (summary.errors.timeout or 0)))
end
