-- Take over the tunnel connections of a controller that died, so they go on being relayed.
--
-- KEYS[1] its set of connections   KEYS[2] ours   KEYS[3] the set of tunnel owners   KEYS[4] its heartbeat
-- ARGV[1] its id   ARGV[2] our id   ARGV[3] record key prefix   ARGV[4] lease ttl (ms)
--
-- Returns the stream ids taken over (those still recorded), or -1 if that controller is alive.
if redis.call('EXISTS', KEYS[4]) == 1 then
  return -1
end
local taken = {}
for _, stream in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = ARGV[3] .. stream
  if redis.call('EXISTS', record) == 1 then
    redis.call('HSET', record, 'owner', ARGV[2])
    redis.call('PEXPIRE', record, ARGV[4])
    redis.call('SADD', KEYS[2], stream)
    table.insert(taken, stream)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
if #taken > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[2])
end
return taken
