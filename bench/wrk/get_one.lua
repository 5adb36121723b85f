-- GET /scores/<id>, id random over the seed, as that score's owner (only owners and privileged
-- callers may read a score).  Relies on the seed's layout: id = (exercise-1)*USERS + user, with
-- LOAD_USERS x LOAD_EXERCISES from the environment (default 10000 x 100: seed.sql's 1,000,000).
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

local USERS = tonumber(os.getenv("LOAD_USERS") or "10000")
local EXERCISES = tonumber(os.getenv("LOAD_EXERCISES") or "100")

function request()
  local id = math.random(1, USERS * EXERCISES)
  local owner = (id - 1) % USERS + 1
  return wrk.format("GET", "/scores/" .. id, {["Authorization"] = "Bearer u" .. owner})
end
