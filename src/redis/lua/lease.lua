-- Take or keep the scheduler's lease. The holder renews it well inside its length; anyone else
-- may take it once it has lapsed (its holder died or stalled). Every taking hands out a new
-- fencing token (a counter), so a holder that stalled past its lease and woke up finds its
-- token stale and fires nothing (fire.lua checks it).
-- KEYS[1] lease (holder's name), KEYS[2] fencing counter
-- ARGV[1] this process's name, ARGV[2] lease length (ms), ARGV[3] the token it holds ('' for none)
-- Returns the token now held, or 0 when another process holds the lease.
local lease, fence, me, ttl, held = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', lease)
if holder == me then
  redis.call('PEXPIRE', lease, ttl)
  if held ~= '' and redis.call('GET', fence) == held then return tonumber(held) end
  return redis.call('INCR', fence)
end
if holder then return 0 end
redis.call('SET', lease, me, 'PX', ttl)
return redis.call('INCR', fence)
