-- Move envelopes from one agent's outbox to where clients and controllers read them.
--
-- Runs inside Redis, so popping an envelope and storing what it says are one
-- step: a controller dying at any instant neither loses nor repeats a result.
-- Only the small header line of an envelope is decoded; bodies are stored
-- byte for byte as the agent wrote them.
--
-- KEYS[1]  the agent's outbox     KEYS[2]  the agent's running-jobs hash
-- KEYS[3]  the agents registry    KEYS[4]  the agent's log list    KEYS[5]  the agent's stats hash
-- ARGV[1]  agent name "<gid>:<nid>"   ARGV[2]  result ttl (s)   ARGV[3]  max envelopes
-- ARGV[4]  jobresult key prefix       ARGV[5]  result queue key prefix
-- ARGV[6]  messages kept in the log list
-- ARGV[7]  job channel prefix   ARGV[8]  updates channel suffix   ARGV[9]  messages channel suffix
-- ARGV[10] results kept in a result queue nobody pops (at least one per target of the command)
--
-- A job update is taken only while the job is open on this agent (in its
-- running-jobs hash): one that was never sent to it, or was already answered
-- (say, as lost while the agent was away), is dropped. So each result reaches
-- the client once. A long-running job (header ``reopen``) routed to this agent
-- is the exception: it lives across agent restarts, so its updates open it again.
--
-- Returns {envelopes taken, jobs still open on the agent, last registration
-- body or '', 1 if that agent was new to the registry else 0, the results
-- pushed as a flat list of state and count, dropped job ids...}.
local agent, ttl, queue_max = ARGV[1], ARGV[2], tonumber(ARGV[10])
local taken, registration, new_agent, dropped, pushed = 0, '', 0, {}, {}
for _ = 1, tonumber(ARGV[3]) do
  local envelope = redis.call('LPOP', KEYS[1])
  if not envelope then
    break
  end
  taken = taken + 1
  local newline = string.find(envelope, '\n', 1, true)
  local ok, header = false, nil
  if newline then
    ok, header = pcall(cjson.decode, string.sub(envelope, 1, newline - 1))
  end
  if not ok or type(header) ~= 'table' then
    table.insert(dropped, '(malformed envelope)')
  else
    local body = string.sub(envelope, newline + 1)
    if header.kind == 'job' then
      local id = tostring(header.id)
      local results = ARGV[4] .. id
      local open = redis.call('HEXISTS', KEYS[2], id) == 1
      if not open and header.reopen and redis.call('HEXISTS', results, agent) == 1 then
        redis.call('HSET', KEYS[2], id, 0)  -- a long-running job the agent started again
        open = true
      end
      if not open then
        table.insert(dropped, id)
      else
        redis.call('HSET', results, agent, body)
        redis.call('EXPIRE', results, ttl)
        redis.call('PUBLISH', ARGV[7] .. id .. ARGV[8], body)
        if header.push then
          local queue = ARGV[5] .. id
          local length = redis.call('RPUSH', queue, body)
          if length > queue_max then
            local keep = math.max(queue_max, redis.call('HLEN', results))
            if length > keep then
              redis.call('LTRIM', queue, length - keep, -1)
            end
          end
          redis.call('EXPIRE', queue, ttl)
          if type(header.state) == 'string' then
            pushed[header.state] = (pushed[header.state] or 0) + 1
          end
        end
        if header.final then
          redis.call('HDEL', KEYS[2], id)
          redis.call('HDEL', KEYS[5], id)
        end
      end
    elseif header.kind == 'register' then
      if redis.call('HSET', KEYS[3], agent, body) == 1 then
        new_agent = 1
      end
      registration = body
    elseif header.kind == 'log' then
      for line in string.gmatch(body, '[^\n]+') do
        redis.call('LPUSH', KEYS[4], line)
        local decoded, message = pcall(cjson.decode, line)
        if decoded and type(message) == 'table' and message.jobid then
          redis.call('PUBLISH', ARGV[7] .. tostring(message.jobid) .. ARGV[9], line)
        end
      end
      redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
    elseif header.kind == 'stats' then
      redis.call('HSET', KEYS[5], tostring(header.id), body)
      redis.call('EXPIRE', KEYS[5], ttl)
    else
      table.insert(dropped, '(unknown envelope kind ' .. tostring(header.kind) .. ')')
    end
  end
end
local counts = {}
for state, count in pairs(pushed) do
  table.insert(counts, state)
  table.insert(counts, count)
end
local reply = {taken, redis.call('HLEN', KEYS[2]), registration, new_agent, counts}
for _, id in ipairs(dropped) do
  table.insert(reply, id)
end
return reply
