-- After a Sentinel failover: give the bus a new epoch (once, whichever controller comes first), and let
-- agents' adopt envelopes reopen the jobs they still hold for a while.
--
-- The new master may lack the last writes made on the old one (Redis replicates asynchronously): a
-- command a client had queued, a job an agent had taken. A new epoch makes clients waiting on a command
-- look whether the bus still knows it (a command it does not know is lost: CommandLost). Several
-- controllers notice the same failover: only one that still sees the epoch it knew (or none) sets it.
--
-- KEYS[1]  the bus epoch    KEYS[2]  the adoption flag
-- ARGV[1]  the epoch this controller knew ('' for none)    ARGV[2]  the new epoch    ARGV[3]  adoption window (ms)
-- Returns the epoch now in force.
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  current = ARGV[2]
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return current
