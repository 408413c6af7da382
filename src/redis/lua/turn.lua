-- May the task numbered `seq` in an order key's sequence run now? Only once every task before it
-- has settled: succeeded, failed for good (dead-lettered), been cancelled, or expired. Settled
-- predecessors are passed lazily, here: the sequence keeps `done`, the number up to which all
-- have settled, and moves it on as far as it can. Nothing else has to advance it, so a task
-- cancelled while queued, dead-lettered or lost with its record cannot block the ones behind it.
-- KEYS[1] the order key's hash (`next`, `done`, and sequence number → task id)
-- ARGV[1] key root, ARGV[2] seq
-- Returns {1} when the task may run, {0, retry_at} while the one before it is still queued,
-- running or waiting out a retry (retry_at, in ms, when it waits for a retry; 0 otherwise).
local order, root, seq = KEYS[1], ARGV[1], tonumber(ARGV[2])
local done = tonumber(redis.call('HGET', order, 'done') or '0')
local start = done
local waiting_at = 0
while done < seq - 1 do
  local id = redis.call('HGET', order, done + 1)
  local blocked = false
  if id then
    local f = redis.call('HMGET', root .. 'task:' .. id, 'state', 'retry_at')
    if f[1] == 'PENDING' or f[1] == 'STARTED' or f[1] == 'RETRY' then
      blocked = true
      if f[1] == 'RETRY' then waiting_at = tonumber(f[2] or '0') or 0 end
    end
  end
  if blocked then break end
  done = done + 1
  redis.call('HDEL', order, done)
end
if done > start then redis.call('HSET', order, 'done', done) end
if done >= seq - 1 then return {1} end
return {0, waiting_at}
