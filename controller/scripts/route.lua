-- Commit routing decisions, atomically, unless what they were decided on changed.
--
-- Two callers, each with its guard (ARGV[1]):
--   L<n>:  a batch: KEYS[1] is this controller's inflight list, which must still hold the n commands
--          decided (a peer recovers the batch of a controller it thinks dead); it is deleted at the end.
--   W<n>:  a rollout's next step: KEYS[1] is its record, which must still be at wave n (another
--          controller may have taken that step already).
-- Either everything below happens, or nothing does. So a command, and each wave of a rollout, is
-- routed exactly once whatever instant a controller dies at. So no write below may fail once the
-- guard holds (Redis would not undo the writes before it): a key others may write (an agent its
-- command queue; a client its command's jobresult:<id> before it is routed, and the keys it may push
-- to) holding another type than is written here is replaced first (``own``).
--
-- Returns 0 when the guard does not hold, else {1, the keys replaced...}.
--
-- KEYS[1]  the guard's key (above)     KEYS[2]  joblog
-- ARGV[1]  the guard    ARGV[2]  result ttl (s)    ARGV[3]  joblog max length
-- ARGV[4]  jobresult key prefix                    ARGV[5]  result queue key prefix
-- ARGV[6]  dead letter list    ARGV[7]  dead letter counter    ARGV[8]  dead letter list max length
-- ARGV[9]  schedules hash      ARGV[10] schedules due set    ARGV[11] schedules' last ticks
-- ARGV[12] job updates channel prefix                ARGV[13] job updates channel suffix
-- ARGV[14] rollout record key prefix                  ARGV[15] the set of rollouts in progress
-- ARGV[16..] records, each led by an op code:
--   'Q' field queue running n, then n times: id command queued_job keep
--                                     send n commands to one agent, each shown RUNNING (phase routed)
--   'A' id field job keep             answer at once with a final job
--   'P' id field job keep             a placeholder of a target not sent yet (a rollout's later waves)
-- keep: the command's result ttl (s), '' for ARGV[2]; never more than ARGV[2]. The running-jobs hash
-- holds it for each open job (drain.lua and fail_jobs.lua keep the job's results as long).
--   'R' id score n, then n times: field value
--                                     start (or update) rollout id's record; score: when it started ('' to
--                                     keep it)
--   'X' id                            a rollout is over: forget its record
--   'L' command                       record in joblog
--   'D' dead_letter                   keep input that cannot be answered
--   'G' grants_hash grant             let an agent open tunnel connections to a target (count one more grant)
--   'S' schedule_id schedule due_ms   add (or replace) a schedule
--   'U' schedule_id                   remove a schedule
local guard, expected = string.sub(ARGV[1], 1, 1), string.sub(ARGV[1], 2)
if guard == 'L' then
  if redis.call('LLEN', KEYS[1]) ~= tonumber(expected) then
    return 0
  end
elseif guard == 'W' then
  if redis.call('HGET', KEYS[1], 'wave') ~= expected then
    return 0
  end
else
  return redis.error_reply('route.lua: unknown guard ' .. tostring(ARGV[1]))
end
local ttl, results_prefix, queue_prefix = tonumber(ARGV[2]), ARGV[4], ARGV[5]
local function keep_for(keep)
  keep = tonumber(keep)
  if keep == nil or keep < 1 or keep > ttl then
    return ttl
  end
  return keep
end
local rollout_prefix, rollouts = ARGV[14], ARGV[15]
local dead_letters, dead_count = ARGV[6], ARGV[7]
local schedules, schedules_due, schedules_last = ARGV[9], ARGV[10], ARGV[11]
local logged, replaced = {}, {}
local function own(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= kind and found ~= 'none' then
    redis.call('DEL', key)
    table.insert(replaced, key)
  end
end
local i = 16
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'Q' then
    local field, queue, running, n = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    local commands, open = {}, {}
    i = i + 5
    for k = 1, n do
      local id, keep = ARGV[i], keep_for(ARGV[i + 3])
      local results = results_prefix .. id
      own(results, 'hash')
      redis.call('HSET', results, field, ARGV[i + 2])
      redis.call('EXPIRE', results, keep)
      commands[k] = ARGV[i + 1]
      open[2 * k - 1] = id
      open[2 * k] = keep
      i = i + 4
    end
    redis.call('HSET', running, unpack(open))
    own(queue, 'list')
    redis.call('RPUSH', queue, unpack(commands))
  elseif op == 'A' then
    local results, queue, keep = results_prefix .. ARGV[i + 1], queue_prefix .. ARGV[i + 1], keep_for(ARGV[i + 4])
    own(results, 'hash')
    own(queue, 'list')
    redis.call('HSET', results, ARGV[i + 2], ARGV[i + 3])
    redis.call('EXPIRE', results, keep)
    redis.call('RPUSH', queue, ARGV[i + 3])
    redis.call('EXPIRE', queue, keep)
    redis.call('PUBLISH', ARGV[12] .. ARGV[i + 1] .. ARGV[13], ARGV[i + 3])
    i = i + 5
  elseif op == 'P' then
    local results = results_prefix .. ARGV[i + 1]
    own(results, 'hash')
    redis.call('HSET', results, ARGV[i + 2], ARGV[i + 3])
    redis.call('EXPIRE', results, keep_for(ARGV[i + 4]))
    i = i + 5
  elseif op == 'R' then
    local record, n = rollout_prefix .. ARGV[i + 1], tonumber(ARGV[i + 3])
    redis.call('HSET', record, unpack(ARGV, i + 4, i + 3 + 2 * n))
    if ARGV[i + 2] ~= '' then
      redis.call('ZADD', rollouts, ARGV[i + 2], ARGV[i + 1])
    end
    i = i + 4 + 2 * n
  elseif op == 'X' then
    redis.call('DEL', rollout_prefix .. ARGV[i + 1])
    redis.call('ZREM', rollouts, ARGV[i + 1])
    i = i + 2
  elseif op == 'L' then
    table.insert(logged, ARGV[i + 1])
    i = i + 2
  elseif op == 'D' then
    own(dead_letters, 'list')
    own(dead_count, 'string')
    redis.call('LPUSH', dead_letters, ARGV[i + 1])
    redis.call('LTRIM', dead_letters, 0, tonumber(ARGV[8]) - 1)
    redis.call('INCR', dead_count)
    i = i + 2
  elseif op == 'S' then
    redis.call('HSET', schedules, ARGV[i + 1], ARGV[i + 2])
    redis.call('ZADD', schedules_due, ARGV[i + 3], ARGV[i + 1])
    i = i + 4
  elseif op == 'G' then
    redis.call('HINCRBY', ARGV[i + 1], ARGV[i + 2], 1)
    i = i + 3
  elseif op == 'U' then
    redis.call('HDEL', schedules, ARGV[i + 1])
    redis.call('ZREM', schedules_due, ARGV[i + 1])
    redis.call('HDEL', schedules_last, ARGV[i + 1])
    i = i + 2
  else
    return redis.error_reply('route.lua: unknown op ' .. tostring(op))
  end
end
if #logged > 0 then
  own(KEYS[2], 'list')
  redis.call('LPUSH', KEYS[2], unpack(logged))
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
end
if guard == 'L' then
  redis.call('DEL', KEYS[1])
end
return {1, unpack(replaced)}
