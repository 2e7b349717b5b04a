-- Answer the unfinished jobs of a lost agent with final ERROR jobs.
--
-- A job is answered only if it is still unfinished, so two controllers that
-- both notice the loss answer each job once. Once nothing is left unfinished,
-- the commands still waiting in the agent's queue are withdrawn: they have
-- all been answered, and must not run when the agent comes back.
--
-- KEYS[1]  the agent's running-jobs hash (job id -> its result ttl, 0: ARGV[2])    KEYS[2]  the agent's command queue
-- ARGV[1]  agent name    ARGV[2]  result ttl (s)
-- ARGV[3]  jobresult key prefix    ARGV[4]  result queue key prefix
-- ARGV[5]  job updates channel prefix    ARGV[6]  job updates channel suffix
-- ARGV[7..] pairs: job id, error job JSON
--
-- Returns {jobs answered, ids still unfinished (routed meanwhile)...}.
local agent, ttl = ARGV[1], tonumber(ARGV[2])
local answered = 0
for i = 7, #ARGV, 2 do
  local id, job = ARGV[i], ARGV[i + 1]
  local value = redis.call('HGET', KEYS[1], id)
  if value then
    redis.call('HDEL', KEYS[1], id)
    local keep = tonumber(value)
    if not (keep and keep >= 1 and keep <= ttl) then
      keep = ttl
    end
    local results, queue = ARGV[3] .. id, ARGV[4] .. id
    redis.call('HSET', results, agent, job)
    redis.call('EXPIRE', results, keep)
    redis.call('RPUSH', queue, job)
    redis.call('EXPIRE', queue, keep)
    redis.call('PUBLISH', ARGV[5] .. id .. ARGV[6], job)
    answered = answered + 1
  end
end
local reply = {answered}
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  table.insert(reply, id)
end
if #reply == 1 then
  redis.call('DEL', KEYS[2])
end
return reply
