-- GET a console page with a signed-in session's cookie (bench/console.py). In BENCH_PAGE,
-- "{account}" becomes a random one of the BENCH_ACCOUNTS seeded accounts, per request.
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local page = os.getenv("BENCH_PAGE") or "/console/accounts"
local cookie = os.getenv("BENCH_COOKIE") or ""
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
end

function init(args)
  math.randomseed(os.time() * 64 + id)
end

function request()
  local target = page:gsub("{account}", string.format("acc-%06d", math.random(0, accounts - 1)))
  return wrk.format("GET", target, {["Cookie"] = cookie})
end
