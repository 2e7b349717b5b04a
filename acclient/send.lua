-- Queue commands, stamped with the bus's clock, and tell the client what it needs to wait for them well.
--
-- The stamp ("queued", epoch ms) is what a controller measures a command's age by (route_ttl, ttl):
-- the bus's clock, never the client's.
--
-- KEYS[1]  cmds_queue    KEYS[2]  the bus epoch token    KEYS[3]  the key that says a controller is alive
-- ARGV[1..] the commands' JSON, each without its closing brace
-- Returns {the bus epoch (or false), 1 if a controller is alive else 0}. The epoch is read last and with
-- pcall: a client may push to it while it does not exist (before a controller's sweep replaces such a
-- list), and an error then would tell of a failure for commands already queued.
local now = redis.call('TIME')
local stamp = ',"queued":' .. string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) .. '}'
local stamped = {}
for i = 1, #ARGV do
  stamped[i] = ARGV[i] .. stamp
end
redis.call('RPUSH', KEYS[1], unpack(stamped))
local epoch = redis.pcall('GET', KEYS[2])
if type(epoch) == 'table' then
  epoch = false
end
return {epoch, redis.call('EXISTS', KEYS[3])}
