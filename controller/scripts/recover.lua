-- Put the unrouted commands of a dead controller back at the head of cmds_queue.
--
-- KEYS[1]  the dead controller's inflight list    KEYS[2]  cmds_queue
-- KEYS[3]  the dead controller's heartbeat key    KEYS[4]  set of controllers
-- ARGV[1]  the dead controller's id
-- Returns how many commands were put back, or -1 if that controller is alive.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do
  moved = moved + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
return moved
