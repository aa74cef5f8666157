-- GET /v1/accounts/{random seeded account}/health with a bearer token (bench/api.py)
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local token = os.getenv("BENCH_TOKEN") or ""
math.randomseed(os.time())
request = function()
  local path = os.getenv("BENCH_PATH")
  if path == nil or path == "" then
    path = string.format("/v1/accounts/acc-%06d/health", math.random(0, accounts - 1))
  end
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
