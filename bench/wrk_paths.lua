-- GET paths with a bearer token (bench/scale.py). BENCH_PATHS holds paths separated by "|",
-- taken in turn; in each, "{account}" becomes a random one of BENCH_ACCOUNTS accounts, named
-- by BENCH_ID_FORMAT.
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local id_format = os.getenv("BENCH_ID_FORMAT") or "acc-%06d"
local token = os.getenv("BENCH_TOKEN") or ""
local paths = {}
for p in string.gmatch(os.getenv("BENCH_PATHS") or "/", "[^|]+") do
  table.insert(paths, p)
end
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
end

function init(args)
  math.randomseed(os.time() * 64 + id)
  turn = id
end

function request()
  turn = turn + 1
  local path = paths[turn % #paths + 1]
  local target = path:gsub("{account}", string.format(id_format, math.random(0, accounts - 1)))
  return wrk.format("GET", target, {["Authorization"] = "Bearer " .. token})
end
