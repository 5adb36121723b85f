-- GET /scores/stats/exercises (first page: 100 exercises, from the trigger-kept counters) as a
-- random user u1..u10000
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

function request()
  return wrk.format("GET", "/scores/stats/exercises", token_headers())
end
