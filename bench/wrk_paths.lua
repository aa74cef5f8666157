-- GET paths under wrk (bench/api.py, console.py, scale.py). BENCH_PATHS holds paths separated
-- by "|", taken in turn; in each, "{account}" becomes one of BENCH_ACCOUNTS accounts, named by
-- BENCH_ID_FORMAT: a random one, or with BENCH_WALK set, the threads (BENCH_THREADS) walk the
-- accounts in turn, so that every account is read (to warm the API's cache). BENCH_TOKEN is
-- sent as a bearer token, BENCH_COOKIE as the Cookie header, each if set.
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
local walk = (os.getenv("BENCH_WALK") or "") ~= ""
local id_format = os.getenv("BENCH_ID_FORMAT") or "acc-%06d"
local token = os.getenv("BENCH_TOKEN") or ""
local cookie = os.getenv("BENCH_COOKIE") or ""
local paths = {}
for p in string.gmatch(os.getenv("BENCH_PATHS") or "/", "[^|]+") do
  table.insert(paths, p)
end
local headers = {}
if token ~= "" then headers["Authorization"] = "Bearer " .. token end
if cookie ~= "" then headers["Cookie"] = cookie end
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
end

function init(args)
  math.randomseed(os.time() * 64 + id)
  turn = id
  position = id
end

function request()
  turn = turn + 1
  local account
  if walk then
    account = position % accounts
    position = position + threads
  else
    account = math.random(0, accounts - 1)
  end
  local path = paths[turn % #paths + 1]
  local target = path:gsub("{account}", string.format(id_format, account))
  return wrk.format("GET", target, headers)
end
