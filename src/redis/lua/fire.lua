-- Record that a schedule's tick was fired, only for the lease holder with the current fencing
-- token: a process that lost the lease (stalled, partitioned) cannot move a schedule's state.
-- The task itself was queued just before under the idempotency key of (schedule, tick), so even
-- two processes that both believed they held the lease queue it once.
-- KEYS[1] lease, KEYS[2] fencing counter, KEYS[3] the schedule's hash
-- ARGV[1] this process's name, ARGV[2] its token, ARGV[3] the tick (ms), ARGV[4] now (ms),
-- ARGV[5] the task id ('' to record only where a new schedule's ticks start), ARGV[6] the next
-- tick (ms; 0 for none)
-- Returns 1 when recorded, 0 when this process no longer holds the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local last = tonumber(redis.call('HGET', KEYS[3], 'last_tick') or '0')
if tonumber(ARGV[3]) > last then
  if ARGV[5] == '' then
    -- a schedule seen for the first time: where its ticks start, nothing ran
    redis.call('HSET', KEYS[3], 'last_tick', ARGV[3])
  else
    redis.call('HSET', KEYS[3], 'last_tick', ARGV[3], 'last_run', ARGV[4], 'last_task', ARGV[5])
  end
end
redis.call('HSET', KEYS[3], 'next_run', ARGV[6], 'fired_by', ARGV[1])
return 1
