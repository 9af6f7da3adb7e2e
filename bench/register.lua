-- wrk script for bench/admin_wrk.sh and bench/cluster.sh: every request registers a
-- distinct instance (names i<salt>-<thread>-<n>, spread over 100 types, as in
-- benches/registrations.rs). The salt is random per run, so that runs, and wrk clients on
-- several nodes of one cluster, never replace each other's instances.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local count = 0
local salt
request = function()
  if not salt then
    math.randomseed(os.time() + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
    salt = string.format("%06x", math.random(0, 0xffffff))
  end
  count = count + 1
  local body = string.format(
    '{"name":"i%s-%d-%d","type":"bench-%02d","host":"127.0.0.1","port":%d,"ttl":86400}',
    salt, tid or 0, count, count % 100, 1024 + count % 60000)
  return wrk.format("POST", "/v1/services", {["content-type"] = "application/json"}, body)
end
