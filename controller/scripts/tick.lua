-- Submit a schedule's command for one tick, exactly once however many
-- controllers see the tick: only the caller that still finds the tick it read
-- as due moves the schedule to its next tick and submits the command.
--
-- KEYS[1]  schedules due set    KEYS[2]  schedules hash    KEYS[3]  cmds_queue
-- KEYS[4]  schedules' last ticks
-- ARGV[1]  schedule id    ARGV[2]  the due tick read (ms)    ARGV[3]  next tick (ms)
-- ARGV[4]  command JSON (with a fresh id)    ARGV[5]  last tick JSON
-- Returns 1 if submitted, 0 if a peer did it (or the schedule was removed).
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) ~= tonumber(ARGV[2]) or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return 1
