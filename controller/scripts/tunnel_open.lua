-- Take one tunnel connection on: record it as ours, lease it to its ends, order the gateway to connect.
--
-- KEYS[1] the connection's record   KEYS[2] our set of connections   KEYS[3] the set of tunnel owners
-- KEYS[4] a's set of streams   KEYS[5] a's lease   KEYS[6] b's lease   KEYS[7] b's order list
-- KEYS[8] b's command queue
-- ARGV[1] stream id   ARGV[2] our controller id   ARGV[3] a (gid:nid)   ARGV[4] b (gid:nid, or "controller")
-- ARGV[5] ip   ARGV[6] remote port   ARGV[7] lease ttl (ms)   ARGV[8] list ttl (ms)
-- ARGV[9] the connect order for b   ARGV[10] b's down channel   ARGV[11] the wake-up for b's queue
-- (KEYS[6..8], ARGV[9..11] only when b is an agent: if nobody hears the bell, b listens to no tunnel
-- channel, and the wake-up in its command queue makes it look at its orders)
--
-- Returns 'ok'; 'exists' when the stream id is taken (a forged or repeated request); 'gone' when a
-- no longer holds the stream (it gave up waiting).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists'
end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then
  return 'gone'
end
local lease = ARGV[7]
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'a', ARGV[3], 'b', ARGV[4], 'ip', ARGV[5], 'remote', ARGV[6])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], lease)
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SET', KEYS[5], ARGV[2], 'PX', lease)
if KEYS[6] then
  redis.call('SET', KEYS[6], ARGV[2], 'PX', lease)
  redis.call('RPUSH', KEYS[7], ARGV[9])
  redis.call('PEXPIRE', KEYS[7], ARGV[8])
  if redis.call('PUBLISH', ARGV[10], 'orders') == 0 then
    redis.call('RPUSH', KEYS[8], ARGV[11])
  end
end
return 'ok'
