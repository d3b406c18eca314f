-- POST /api/v1/auth/login with the demo accounts in turn (LOGIN_EMAILS, comma-separated).
-- Successful logins never count towards the lockout. LOGIN_DELAY_MS paces each connection
-- (a pause before each request), to compare login paths at the same login rate.
package.path = package.path .. ";" .. (os.getenv("BENCH_LUA") or "bench/lua") .. "/?.lua"
local common = require("common")
local emails = {}
for e in string.gmatch(os.getenv("LOGIN_EMAILS") or "investigator.fr01@casebook.test", "[^,]+") do
  table.insert(emails, e)
end
local password = os.getenv("DEMO_PASSWORD") or "demo password for casebook"
local bodies = {}
for i, e in ipairs(emails) do
  bodies[i] = string.format('{"email":"%s","password":"%s"}', e, password)
end
local counter = 0
local thread_id = 0
local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end
function request()
  counter = counter + 1
  local body = bodies[((counter + thread_id) % #bodies) + 1]
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
local pause = tonumber(os.getenv("LOGIN_DELAY_MS") or "0")
if pause > 0 then
  function delay()
    return pause
  end
end
done = common.done
