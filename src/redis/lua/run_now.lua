-- Make a task queued for later due now (an operator's "run now"): its time in the lane's `later`
-- set and in its record become now; a worker's next claim moves it onto the lane. Nothing
-- happens to a task no longer in the set (moved, run or cancelled meanwhile).
-- KEYS[1] the lane's tasks queued for later, KEYS[2] the task's record
-- ARGV[1] now (ms), ARGV[2] task id
-- Returns 1 when the task was waiting, else 0.
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'run_at', ARGV[1])
return 1
