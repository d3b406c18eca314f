-- Shared by the wrk scripts: one machine-readable summary line at the end of a run.
-- RESULT <name> rps=<requests/s> p50=<ms> p90=<ms> p99=<ms> max=<ms> n=<requests> errors=<n>
local M = {}
function M.done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    "RESULT %s rps=%.1f p50=%.2f p90=%.2f p99=%.2f max=%.2f n=%d errors=%d (status=%d timeout=%d)\n",
    os.getenv("BENCH_NAME") or "run",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, errors, e.status, e.timeout))
end
return M
