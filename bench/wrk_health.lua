-- GET /v1/accounts/{seeded account}/health with a bearer token (bench/api.py). Each thread
-- picks accounts at random from a seed of its own; with BENCH_WALK set, the threads walk the
-- accounts in turn instead, so that every account is read (to warm the API's cache).
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
local walk = (os.getenv("BENCH_WALK") or "") ~= ""
local path = os.getenv("BENCH_PATH") or ""
local token = os.getenv("BENCH_TOKEN") or ""
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
end

function init(args)
  math.randomseed(os.time() * 64 + id)
  position = id
end

function request()
  local target = path
  if target == "" then
    local account
    if walk then
      account = position % accounts
      position = position + threads
    else
      account = math.random(0, accounts - 1)
    end
    target = string.format("/v1/accounts/acc-%06d/health", account)
  end
  return wrk.format("GET", target, {["Authorization"] = "Bearer " .. token})
end
