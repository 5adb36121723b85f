-- POST /scores/bulk with 1000 scores per request, as the grader (staff token from the
-- environment: STAFF_TOKEN=<key>, sent as "Authorization: Token <key>").  Each request covers
-- a random window of 100 consecutive users x 10 consecutive exercises, so the 1000 items are
-- unique within the request and, with the seed's data, all updates of existing rows; `correct`
-- is random.  Throughput in scores/s is req/s x 1000.
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

local USERS, EXERCISES = 100, 10  -- 1000 items
local staff = os.getenv("STAFF_TOKEN")
if staff == nil or staff == "" then
  error("bulk.lua needs STAFF_TOKEN in the environment")
end
local headers = {["Authorization"] = "Token " .. staff, ["Content-Type"] = "application/json"}

function request()
  local u0 = math.random(1, 10000 - USERS + 1)
  local e0 = math.random(1, 100 - EXERCISES + 1)
  local items = {}
  for u = u0, u0 + USERS - 1 do
    for e = e0, e0 + EXERCISES - 1 do
      items[#items + 1] = string.format('{"user_id":%d,"exercise_id":%d,"correct":%s}',
        u, e, math.random(0, 1) == 1 and "true" or "false")
    end
  end
  local body = '{"scores":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/scores/bulk", headers, body)
end
