-- Move a batch from the head of one list to the tail of another, in order, in
-- one step; return it. A controller claims commands this way, right after the
-- BLMOVE that waited for the first one, so that what it holds is always in its
-- inflight list. The batch is at most ARGV[1] items (none when ARGV[1] is 0),
-- and stops after the item that reaches ARGV[2] bytes (so a batch of huge
-- commands stays small); it holds at least one item if any is waiting.
-- The claimer is also (re)entered in the set of controllers, so that peers
-- check its heartbeat and take its batch over if it dies.
--
-- KEYS[1]  source list    KEYS[2]  destination list    KEYS[3]  set of controllers
-- ARGV[1]  max items      ARGV[2]  max bytes           ARGV[3]  controller id
local limit = tonumber(ARGV[1])
if limit < 1 then
  return {}
end
local items = redis.call('LRANGE', KEYS[1], 0, limit - 1)
if #items == 0 then
  return items
end
local budget, taken = tonumber(ARGV[2]), 0
for i = 1, #items do
  taken = i
  budget = budget - #items[i]
  if budget <= 0 then
    break
  end
end
for i = #items, taken + 1, -1 do
  items[i] = nil
end
redis.call('LTRIM', KEYS[1], taken, -1)
redis.call('RPUSH', KEYS[2], unpack(items))
redis.call('SADD', KEYS[3], ARGV[3])
return items
