-- GET /scores/user (the caller's scores, first page: 100 rows, all of a seeded user's) as a
-- random user u1..u10000
dofile(debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") .. "common.lua")

function request()
  return wrk.format("GET", "/scores/user", token_headers())
end
