-- Queue one command, stamped with the bus's clock, and tell the client what it needs to wait for it well.
--
-- The stamp ("queued", epoch ms) is what a controller measures a command's age by (route_ttl, ttl):
-- the bus's clock, never the client's.
--
-- KEYS[1]  cmds_queue    KEYS[2]  the bus epoch token    KEYS[3]  the key that says a controller is alive
-- ARGV[1]  the command JSON without its closing brace
-- Returns {the bus epoch (or false), 1 if a controller is alive else 0}.
local now = redis.call('TIME')
local queued = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('RPUSH', KEYS[1], ARGV[1] .. ',"queued":' .. string.format('%d', queued) .. '}')
return {redis.call('GET', KEYS[2]), redis.call('EXISTS', KEYS[3])}
