-- Commit one routed batch, atomically, unless another controller took it over.
--
-- The batch sits in this controller's inflight list. Either everything below
-- happens and the inflight list is deleted, or (the list no longer holds the
-- batch because a peer recovered it) nothing happens. So a command is routed
-- exactly once whatever instant a controller dies at.
--
-- KEYS[1]  this controller's inflight list     KEYS[2]  joblog
-- ARGV[1]  batch size    ARGV[2]  result ttl (s)    ARGV[3]  joblog max length
-- ARGV[4]  jobresult key prefix                    ARGV[5]  result queue key prefix
-- ARGV[6]  dead letter list    ARGV[7]  dead letter counter    ARGV[8]  dead letter list max length
-- ARGV[9]  job updates channel prefix                ARGV[10] job updates channel suffix
-- ARGV[11..] records, each led by an op code:
--   'Q' id agent queue running command queued_job   send to an agent, show QUEUED
--   'A' id field job                                answer at once with a final job
--   'L' command                                     record in joblog
--   'D' dead_letter                                 keep input that cannot be answered
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then
  return 0
end
local ttl, results_prefix, queue_prefix = ARGV[2], ARGV[4], ARGV[5]
local dead_letters, dead_count = ARGV[6], ARGV[7]
local i = 11
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'Q' then
    local results = results_prefix .. ARGV[i + 1]
    redis.call('HSET', results, ARGV[i + 2], ARGV[i + 6])
    redis.call('EXPIRE', results, ttl)
    redis.call('HSET', ARGV[i + 4], ARGV[i + 1], 0)
    redis.call('RPUSH', ARGV[i + 3], ARGV[i + 5])
    i = i + 7
  elseif op == 'A' then
    local results, queue = results_prefix .. ARGV[i + 1], queue_prefix .. ARGV[i + 1]
    redis.call('HSET', results, ARGV[i + 2], ARGV[i + 3])
    redis.call('EXPIRE', results, ttl)
    redis.call('RPUSH', queue, ARGV[i + 3])
    redis.call('EXPIRE', queue, ttl)
    redis.call('PUBLISH', ARGV[9] .. ARGV[i + 1] .. ARGV[10], ARGV[i + 3])
    i = i + 4
  elseif op == 'L' then
    redis.call('LPUSH', KEYS[2], ARGV[i + 1])
    i = i + 2
  elseif op == 'D' then
    redis.call('LPUSH', dead_letters, ARGV[i + 1])
    redis.call('LTRIM', dead_letters, 0, tonumber(ARGV[8]) - 1)
    redis.call('INCR', dead_count)
    i = i + 2
  else
    return redis.error_reply('route.lua: unknown op ' .. tostring(op))
  end
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('DEL', KEYS[1])
return 1
