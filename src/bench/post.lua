-- wrk script for `switchyard bench ingest`: POST pre-signed webhook bodies read from $REQS
-- ("<signature>\t<body>" per line). Thread t of $THREADS keeps every line whose number is t
-- modulo $THREADS, so no body is sent twice within a run and each thread prepares only its
-- share (wrk's start-up time counts in its duration).
local reqs = {}
local idx = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  local n = tonumber(os.getenv("THREADS") or "1")
  local i = 0
  for line in io.lines(os.getenv("REQS")) do
    if i % n == (tid or 0) then
      local sig, body = line:match("^([^\t]+)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/facebook",
        { ["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig }, body)
    end
    i = i + 1
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
