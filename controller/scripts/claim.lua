-- Move up to ARGV[1] items from the head of one list to the tail of another,
-- in order, in one step; return them. A controller claims a batch of commands
-- this way, so that what it holds is always in its inflight list.
--
-- KEYS[1]  source list    KEYS[2]  destination list
local items = {}
for i = 1, tonumber(ARGV[1]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not item then
    break
  end
  items[i] = item
end
return items
