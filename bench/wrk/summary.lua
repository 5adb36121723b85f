-- GET /scores/summary (the caller's progress over their 100 rows) as a random user u1..u10000
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

function request()
  return wrk.format("GET", "/scores/summary", token_headers())
end
