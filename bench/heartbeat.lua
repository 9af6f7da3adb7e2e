-- wrk script for bench/cluster.sh: every request is a heartbeat of one of
-- the instance ids in the file $IDS (one a line), in turn, each thread
-- starting at its own place.
local ids = {}
local next_id = 1

function init(args)
  for line in io.lines(os.getenv("IDS")) do
    ids[#ids + 1] = line
  end
  next_id = math.random(#ids)
end

request = function()
  local id = ids[next_id]
  next_id = next_id % #ids + 1
  return wrk.format("PUT", "/v1/services/" .. id .. "/heartbeat")
end

response = function(status)
  if status ~= 200 then
    io.stderr:write("heartbeat answered " .. status .. "\n")
  end
end
