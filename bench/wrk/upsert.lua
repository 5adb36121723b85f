-- PATCH /scores {"exercise_id": 1..100, "correct": true|false} as a random user u1..u10000
-- (the old client's call; always an update of an existing row with the seed's data)
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

function request()
  local body = string.format('{"exercise_id": %d, "correct": %s}',
    math.random(1, 100), math.random(0, 1) == 1 and "true" or "false")
  return wrk.format("PATCH", "/scores", token_headers({["Content-Type"] = "application/json"}), body)
end
