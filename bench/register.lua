-- wrk script for bench/admin_wrk.sh: every request registers a distinct
-- instance (names i<thread>-<n>, spread over 100 types), as in
-- benches/registrations.rs.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local count = 0
request = function()
  count = count + 1
  local body = string.format(
    '{"name":"i%d-%d","type":"bench-%02d","host":"127.0.0.1","port":%d,"ttl":86400}',
    tid or 0, count, count % 100, 1024 + count % 60000)
  return wrk.format("POST", "/v1/services", {["content-type"] = "application/json"}, body)
end
