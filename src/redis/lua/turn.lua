-- May the task numbered `seq` in an order key's sequence run now? Only once every task before it
-- has settled: succeeded, failed for good (dead-lettered), been cancelled (and, if it was running,
-- stopped: until its worker records it, it is in the revoked set), or expired. Settled
-- predecessors are passed lazily, here: the sequence keeps `done`, the number up to which all
-- have settled, and moves it on as far as it can. Nothing else has to advance it, so a task
-- cancelled while queued, dead-lettered or lost with its record cannot block the ones behind it.
-- With `park`, a task that may not run yet is parked in the same step: handed back at no attempt
-- cost (its delivery count restored), listed under the key, and due again only when a task of
-- the key settles (wake.lua) or, as a safety net, at `due`.
-- KEYS[1] the order key's hash (`next`, `done`, and sequence number → task id),
-- KEYS[2] its parked tasks (sequence number → lane TAB entry), KEYS[3] lane stream, KEYS[4] lane retry set
-- ARGV[1] key root, ARGV[2] seq, ARGV[3] park ('1' or ''); with park: ARGV[4] lane, ARGV[5] entry,
-- ARGV[6] worker, ARGV[7] group, ARGV[8] deliveries before this one, ARGV[9] due (ms), ARGV[10] ttl (ms)
-- Returns {1} when the task may run; {0, retry_at} while the one before it is still queued,
-- running or waiting out a retry (retry_at, in ms, when it waits for a retry; 0 otherwise);
-- {2} parked; {3} not parked: this worker no longer holds the entry.
local order, root, seq = KEYS[1], ARGV[1], tonumber(ARGV[2])
local done = tonumber(redis.call('HGET', order, 'done') or '0')
local start = done
local waiting_at = 0
while done < seq - 1 do
  local id = redis.call('HGET', order, done + 1)
  local blocked = false
  if id then
    local f = redis.call('HMGET', key_task(root, id), 'state', 'retry_at')
    if f[1] == 'PENDING' or f[1] == 'STARTED' or f[1] == 'RETRY' then
      blocked = true
      if f[1] == 'RETRY' then waiting_at = tonumber(f[2] or '0') or 0 end
    elseif f[1] == 'REVOKED' and redis.call('SISMEMBER', key_revoked(root), id) == 1 then
      blocked = true
    end
  end
  if blocked then break end
  done = done + 1
  redis.call('HDEL', order, done)
end
if done > start then redis.call('HSET', order, 'done', done) end
if done >= seq - 1 then return {1} end
if ARGV[3] ~= '1' then return {0, waiting_at} end

local parked, stream, retry = KEYS[2], KEYS[3], KEYS[4]
local lane, entry, worker, group, before = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local p = redis.call('XPENDING', stream, group, entry, entry, 1)
if #p == 0 or p[1][2] ~= worker then return {3} end
redis.call('XCLAIM', stream, group, worker, 0, entry, 'RETRYCOUNT', before, 'JUSTID')
redis.call('ZADD', retry, math.max(tonumber(ARGV[9]), waiting_at), entry)
redis.call('HSET', parked, seq, lane .. '\t' .. entry)
redis.call('PEXPIRE', parked, ARGV[10])
return {2}
