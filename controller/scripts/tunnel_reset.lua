-- End one tunnel connection before its time: tell the ends still there, clear what lost ends left.
--
-- KEYS[1] the connection's record   KEYS[2] its owner's set of connections
-- then n order lists (of the ends to tell), m keys to delete, and sets to remove the stream from
-- ARGV[1] stream id   ARGV[2] n   ARGV[3] m   ARGV[4] the reset order   ARGV[5] list ttl (ms)
-- ARGV[6..5+n] the down channels of the ends to tell
--
-- Returns 1, or 0 when the connection was over already (its record gone): then nothing is done,
-- so however many controllers notice, the ends are told once.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  redis.call('RPUSH', KEYS[2 + i], ARGV[4])
  redis.call('PEXPIRE', KEYS[2 + i], ARGV[5])
  redis.call('PUBLISH', ARGV[5 + i], 'orders')
end
for i = 3 + n, 2 + n + m do
  redis.call('DEL', KEYS[i])
end
for i = 3 + n + m, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[1])
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
