-- The platform's mix for bench/load.sh: 80 % reads, 20 % writes, each as a random user of the
-- seed (LOAD_USERS x LOAD_EXERCISES, default 10000 x 100, id = (exercise-1)*LOAD_USERS + user):
--   40 % GET /scores/<id> of one of the caller's scores (as its owner)
--   40 % GET /scores/user (the caller's first page: LOAD_EXERCISES scores)
--   20 % PATCH /scores {"exercise_id", "correct"} (the old client's upsert; an update)
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

local USERS = tonumber(os.getenv("LOAD_USERS") or "10000")
local EXERCISES = tonumber(os.getenv("LOAD_EXERCISES") or "100")

function request()
  local user = math.random(1, USERS)
  local exercise = math.random(1, EXERCISES)
  local headers = {["Authorization"] = "Bearer u" .. user}
  local pick = math.random(1, 100)
  if pick <= 40 then
    return wrk.format("GET", "/scores/" .. ((exercise - 1) * USERS + user), headers)
  elseif pick <= 80 then
    return wrk.format("GET", "/scores/user", headers)
  end
  headers["Content-Type"] = "application/json"
  local body = string.format('{"exercise_id": %d, "correct": %s}',
    exercise, math.random(0, 1) == 1 and "true" or "false")
  return wrk.format("PATCH", "/scores", headers, body)
end
