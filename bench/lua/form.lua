-- POST /api/v1/subjects/{code}/forms/{form} with a bearer token (TOKEN) and the body in
-- FORM_BODY: every request enters one record of a form of the engine and its audit row.
package.path = package.path .. ";" .. (os.getenv("BENCH_LUA") or "bench/lua") .. "/?.lua"
local common = require("common")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("FORM_BODY") or ""
done = common.done
