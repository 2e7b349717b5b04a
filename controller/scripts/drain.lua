-- Move envelopes from one agent's outbox to where clients and controllers read them.
--
-- Runs inside Redis, so popping an envelope and storing what it says are one
-- step: a controller dying at any instant neither loses nor repeats a result.
-- Only the small header line of a job envelope is decoded; job bodies are
-- stored byte for byte as the agent wrote them.
--
-- KEYS[1]  the agent's outbox     KEYS[2]  the agent's running-jobs hash (job id -> its result ttl, 0: ARGV[2])
-- KEYS[3]  the agents registry    KEYS[4]  the agent's log list    KEYS[5]  the agent's stats hash
-- KEYS[6]  the roles granted to agents (hash "<gid>:<nid>" -> JSON list; no field: roles are not checked)
-- KEYS[7]  the bus epoch token     KEYS[8]  the flag a controller sets while the bus recovers from a data loss
-- ARGV[1]  agent name "<gid>:<nid>"   ARGV[2]  result ttl (s)
-- ARGV[3]  most envelopes taken       ARGV[4]  bytes after which no further envelope is taken
-- ARGV[5]  jobresult key prefix       ARGV[6]  result queue key prefix
-- ARGV[7]  messages kept in the log list
-- ARGV[8]  job channel prefix   ARGV[9]  updates channel suffix   ARGV[10] messages channel suffix
-- ARGV[11] results kept in a result queue nobody pops (at least one per target of the command)
-- ARGV[12] the agent's gid   ARGV[13] its nid (stamped on its log messages)
-- ARGV[14] largest envelope taken (bytes)   ARGV[15] most envelopes an outbox may hold
--
-- What an agent writes is not trusted. A job update is taken only while the
-- job is open on this agent (in its running-jobs hash): one that was never
-- sent to it, or was already answered (say, as lost while the agent was
-- away), is dropped, so each result reaches the client once. A long-running
-- job (header ``reopen``) routed to this agent is the exception: it lives
-- across agent restarts, so its updates open it again. A log message is taken
-- only for a job open on this agent, and is stamped with this agent's gid and
-- nid, whatever it claimed. A registration that claims roles the agent was
-- not granted is refused. An envelope over the size limit is dropped, an
-- outbox grown past its bound is cut to its newest envelopes, and an outbox
-- its agent made anything but a list is deleted (one envelope discarded). An ``adopt``
-- envelope (the jobs an agent still holds when it finds the bus lost its data)
-- opens only jobs the bus knows nothing of any more, and only while the bus
-- recovers from a loss (KEYS[8] set, or KEYS[7] gone: no controller noticed yet).
--
-- Each call does a bounded amount of work (ARGV[3], ARGV[4]) so that no call
-- holds Redis for long; the caller drains again while envelopes remain.
--
-- Returns {envelopes taken, envelopes left, jobs still open on the agent, last registration body or '',
-- 1 if that agent was new to the registry else 0, {state, count, ...} of the results pushed,
-- {dropped job ids...}, log messages dropped, roles a refused registration claimed or '',
-- envelopes discarded (too big, or cut from an outbox over its bound), jobs adopted, jobs not adopted}.
local agent, ttl, queue_max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[11])
local budget_envelopes, budget_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local gid, nid, max_envelope = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local taken, bytes, registration, new_agent, refused = 0, 0, '', 0, ''
local dropped, pushed, messages_dropped, discarded, adopted, not_adopted = {}, {}, 0, 0, 0, 0

local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'list' and kind ~= 'none' then  -- its agent may write it: it made it something else
  redis.call('DEL', KEYS[1])
  discarded = discarded + 1
end
local excess = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[15])
if excess > 0 then
  redis.call('LTRIM', KEYS[1], excess, -1)
  discarded = discarded + excess
end

local open_jobs = {}  -- job id -> seconds its results are kept while it is open on the agent, false if not open
local function keep_of(id)
  local keep = open_jobs[id]
  if keep == nil then
    local value = redis.call('HGET', KEYS[2], id)
    keep = value and tonumber(value) or false
    if value and not (keep and keep >= 1 and keep <= ttl) then
      keep = ttl
    end
    open_jobs[id] = keep
  end
  return keep
end
local function is_open(id)
  return keep_of(id) ~= false
end

local function take_job(header, body)
  local id = tostring(header.id)
  local results = ARGV[5] .. id
  local keep = keep_of(id)
  if not keep and header.reopen and redis.call('HEXISTS', results, agent) == 1 then
    redis.call('HSET', KEYS[2], id, 0)  -- a long-running job the agent started again
    keep = ttl
  end
  if not keep then
    table.insert(dropped, id)
    return
  end
  redis.call('HSET', results, agent, body)
  redis.call('EXPIRE', results, keep)
  redis.call('PUBLISH', ARGV[8] .. id .. ARGV[9], body)
  if header.push then
    local queue = ARGV[6] .. id
    local length = redis.call('RPUSH', queue, body)
    if length > queue_max then
      local keep = math.max(queue_max, redis.call('HLEN', results))
      if length > keep then
        redis.call('LTRIM', queue, length - keep, -1)
      end
    end
    redis.call('EXPIRE', queue, keep)
    if type(header.state) == 'string' then
      pushed[header.state] = (pushed[header.state] or 0) + 1
    end
  end
  if header.final then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[5], id)
    open_jobs[id] = false
  end
end

local function take_log(body)
  local kept = 0
  for line in string.gmatch(body, '[^\n]+') do
    local decoded, message = pcall(cjson.decode, line)
    if decoded and type(message) == 'table' and type(message.jobid) == 'string' and is_open(message.jobid) then
      message.gid, message.nid = gid, nid
      local stamped = cjson.encode(message)
      redis.call('LPUSH', KEYS[4], stamped)
      redis.call('PUBLISH', ARGV[8] .. message.jobid .. ARGV[10], stamped)
      kept = kept + 1
    else
      messages_dropped = messages_dropped + 1
    end
  end
  if kept > 0 then
    redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
  end
end

local function take_registration(body)
  local granted = redis.call('HGET', KEYS[6], agent)
  if granted then
    local ok, claimed = pcall(cjson.decode, body)
    local allowed = {}
    for _, role in ipairs(cjson.decode(granted)) do
      allowed[role] = true
    end
    local extra = {}
    if not ok or type(claimed) ~= 'table' or type(claimed.roles) ~= 'table' then
      table.insert(extra, '(unreadable roles)')
    else
      for _, role in ipairs(claimed.roles) do
        if not allowed[role] then
          table.insert(extra, tostring(role))
        end
      end
    end
    if #extra > 0 then
      refused = table.concat(extra, ',')
      return
    end
  end
  if redis.call('HSET', KEYS[3], agent, body) == 1 then
    new_agent = 1
  end
  registration = body
end

local function take_adoption(body)
  local recovering = redis.call('EXISTS', KEYS[8]) == 1 or redis.call('EXISTS', KEYS[7]) == 0
  for line in string.gmatch(body, '[^\n]+') do
    local ok, job = pcall(cjson.decode, line)
    local id = ok and type(job) == 'table' and job.gid == gid and job.nid == nid and job.id
    if recovering and type(id) == 'string' and redis.call('EXISTS', ARGV[5] .. id) == 0 then
      redis.call('HSET', KEYS[2], id, 0)
      redis.call('HSET', ARGV[5] .. id, agent, line)
      redis.call('EXPIRE', ARGV[5] .. id, ttl)
      open_jobs[id] = ttl
      adopted = adopted + 1
    else
      not_adopted = not_adopted + 1
    end
  end
end

while taken < budget_envelopes and bytes < budget_bytes do
  local envelope = redis.call('LPOP', KEYS[1])
  if not envelope then
    break
  end
  taken = taken + 1
  bytes = bytes + #envelope
  if #envelope > max_envelope then
    discarded = discarded + 1
  else
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
        take_job(header, body)
      elseif header.kind == 'register' then
        take_registration(body)
      elseif header.kind == 'log' then
        take_log(body)
      elseif header.kind == 'adopt' then
        take_adoption(body)
      elseif header.kind == 'stats' then
        local id = tostring(header.id)
        local keep = keep_of(id)
        if keep then
          redis.call('HSET', KEYS[5], id, body)
          redis.call('EXPIRE', KEYS[5], ttl)
          -- a job that runs reports stats every stats_interval: its results live on
          redis.call('EXPIRE', ARGV[5] .. id, keep)
          redis.call('EXPIRE', ARGV[6] .. id, keep)
        end
      else
        table.insert(dropped, '(unknown envelope kind ' .. tostring(header.kind) .. ')')
      end
    end
  end
end
local counts = {}
for state, count in pairs(pushed) do
  table.insert(counts, state)
  table.insert(counts, count)
end
return {taken, redis.call('LLEN', KEYS[1]), redis.call('HLEN', KEYS[2]), registration, new_agent, counts, dropped,
        messages_dropped, refused, discarded, adopted, not_adopted}
