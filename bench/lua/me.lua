-- GET /api/v1/me with a bearer token (TOKEN), paced: each connection pauses PROBE_DELAY_MS
-- (default 5) between requests, so that the probe measures latency without adding much load.
package.path = package.path .. ";" .. (os.getenv("BENCH_LUA") or "bench/lua") .. "/?.lua"
local common = require("common")
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")
local pause = tonumber(os.getenv("PROBE_DELAY_MS") or "5")
function delay()
  return pause
end
done = common.done
