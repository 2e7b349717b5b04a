-- Move the chunks of one tunnel connection between the lists of its two agents.
--
-- Chunks move from one end's ``out`` list to the other end's ``in`` list, and
-- only into an empty ``in`` list: the whole ``out`` list is renamed, so not a
-- byte is copied (an LMOVE inside a script copies each chunk into Lua and
-- back: about 0.4 ms per 256 KiB). An ``out`` list holds at most a window of
-- chunks (its writer waits at that length) and a reader takes its whole
-- ``in`` list at once and rings, so chunks flow a window at a time while a
-- slow reader stops its peer instead of filling Redis. The receiving end
-- hears a ``data`` bell; the sending end a ``room`` bell when its list was
-- full (it may be waiting). An empty chunk is an end's FIN, always its last;
-- once both FINs have passed, the connection is over for the controller:
-- its record and leases go.
--
-- KEYS[1] the connection's record   KEYS[2] a's out   KEYS[3] b's in   KEYS[4] b's out   KEYS[5] a's in
-- KEYS[6] a's lease   KEYS[7] b's lease   KEYS[8] the owner's set of connections
-- ARGV[1] stream id   ARGV[2] our controller id   ARGV[3] window   ARGV[4] list ttl (ms)
-- ARGV[5] a's down channel   ARGV[6] b's down channel
--
-- Returns {status, chunks a -> b, chunks b -> a}: status 0 going on, 1 over (both FINs passed),
-- -1 not ours (over already, reset, or adopted by a peer that thought us dead).
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then
  return {-1, 0, 0}
end
local window, ttl = tonumber(ARGV[3]), ARGV[4]

local function move(src, dst, src_channel, dst_channel, fin_field)
  local waiting = redis.call('LLEN', src)
  if waiting == 0 or redis.call('EXISTS', dst) == 1 then
    return 0
  end
  if redis.call('LPOS', src, '', 'RANK', -1, 'MAXLEN', 1) then
    redis.call('HSET', KEYS[1], fin_field, 1)
  end
  redis.call('RENAME', src, dst)
  redis.call('PEXPIRE', dst, ttl)
  redis.call('PUBLISH', dst_channel, 'data ' .. ARGV[1])
  if waiting >= window then
    redis.call('PUBLISH', src_channel, 'room ' .. ARGV[1])
  end
  return waiting
end

local ab = move(KEYS[2], KEYS[3], ARGV[5], ARGV[6], 'fin_a')
local ba = move(KEYS[4], KEYS[5], ARGV[6], ARGV[5], 'fin_b')
if redis.call('HGET', KEYS[1], 'fin_a') == '1' and redis.call('HGET', KEYS[1], 'fin_b') == '1' then
  redis.call('DEL', KEYS[1], KEYS[6], KEYS[7])
  redis.call('SREM', KEYS[8], ARGV[1])
  return {1, ab, ba}
end
return {0, ab, ba}
