-- Notice that the bus's master is not the one its books were written on (a Sentinel failover promoted a
-- replica): give the bus a new epoch, once, and let agents' adopt envelopes reopen the jobs they still hold.
--
-- The new master may lack the last writes made on the old one (Redis replicates asynchronously): a
-- command a client had queued, a job an agent had taken. A new epoch makes clients waiting on a command
-- look whether the bus still knows it (a command it does not know is lost: CommandLost). The master is
-- known by its replication id (INFO replication's master_replid, which a promoted replica changes), kept
-- in KEYS[3]: whichever controller looks first after a failover, connected during it or started after it,
-- sees a replication id other than the one kept, and only that one sets a new epoch.
--
-- KEYS[1]  the bus epoch    KEYS[2]  the adoption flag    KEYS[3]  the replication id the books were written on
-- ARGV[1]  this master's replication id    ARGV[2]  a new epoch    ARGV[3]  adoption window (ms)
-- Returns {the epoch now in force (or false), 1 if this call found a new master, else 0}.
local kept = redis.call('GET', KEYS[3])
if kept == ARGV[1] then
  return {redis.call('GET', KEYS[1]), 0}
end
redis.call('SET', KEYS[3], ARGV[1])
if kept == false then  -- the first look at this bus (or it lost its data, which the epoch says)
  return {redis.call('GET', KEYS[1]), 0}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return {ARGV[2], 1}
