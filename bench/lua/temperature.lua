-- POST /api/v1/subjects/{code}/temperatures with a bearer token (TOKEN). Identical
-- measurements are allowed: every request inserts one temperature and one audit row.
package.path = package.path .. ";" .. (os.getenv("BENCH_LUA") or "bench/lua") .. "/?.lua"
local common = require("common")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"measured_at":"2026-10-05T08:00:00Z","celsius":38.4,"method":"rectal"}'
done = common.done
