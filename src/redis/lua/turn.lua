-- May the task numbered `seq` in an order key's sequence run now? Only once every task before it
-- has settled: succeeded, failed for good (dead-lettered), been cancelled (and, if it was running,
-- stopped: until its worker records it, it is in the revoked set), or expired. Settled
-- predecessors are passed lazily, here: the sequence keeps `done`, the number up to which all
-- have settled, and this walks back from the task just before this one (each task's record
-- names the one before it, `prev`) until it reaches `done`, then moves `done` on. Nothing else
-- has to advance it, so a task cancelled while queued, dead-lettered or lost with its record
-- cannot block the ones behind it. A task whose turn is checked runs after the one before it
-- ran, so the walk is usually one step. A record that has expired (its task settled longer
-- than the task retention ago) ends the walk: what came before it settled before it did, or was
-- cancelled before it ran, as long ago.
-- With `park`, a task that may not run yet is parked in the same step: handed back at no attempt
-- cost (its delivery count restored), listed under the key, and due again only when a task of
-- the key settles (wake.lua) or, as a safety net, at `due`.
-- KEYS[1] the order key's hash (`next`, `last`, `done`), KEYS[2] its parked tasks (sequence
-- number → lane TAB entry), KEYS[3] lane stream, KEYS[4] lane retry set
-- ARGV[1] key root, ARGV[2] seq, ARGV[3] the id of the task numbered seq - 1 ('' for none; '*'
-- for a task queued by an older build, whose predecessors are listed by number in KEYS[1]),
-- ARGV[4] park ('1' or ''); with park: ARGV[5] lane, ARGV[6] entry, ARGV[7] worker,
-- ARGV[8] group, ARGV[9] deliveries before this one, ARGV[10] due (ms), ARGV[11] ttl (ms)
-- Returns {1} when the task may run; {0, retry_at} while the one before it is still queued,
-- running or waiting out a retry (retry_at, in ms, when it waits for a retry; 0 otherwise);
-- {2} parked; {3} not parked: this worker no longer holds the entry.
local order, root, seq = KEYS[1], ARGV[1], tonumber(ARGV[2])
local done = tonumber(redis.call('HGET', order, 'done') or '0')
local waiting_at = 0
local blocked = false
local id = ARGV[3]
if id == '*' then id = false end
local n = seq - 1
while n > done do
  -- older builds numbered their tasks in the hash instead of naming the one before
  if id == false then id = redis.call('HGET', order, tostring(n)) end
  if not id or id == '' then break end
  local f = redis.call('HMGET', root .. 'task:' .. id, 'state', 'retry_at', 'prev')
  if not f[1] then break end
  if f[1] == 'PENDING' or f[1] == 'STARTED' or f[1] == 'RETRY' then
    blocked = true
    if f[1] == 'RETRY' then waiting_at = tonumber(f[2] or '0') or 0 end
  elseif f[1] == 'REVOKED' and redis.call('SISMEMBER', root .. 'revoked', id) == 1 then
    blocked = true
  end
  if blocked then break end
  id = f[3]
  n = n - 1
end
if not blocked then
  if seq - 1 > done then redis.call('HSET', order, 'done', seq - 1) end
  return {1}
end
if ARGV[4] ~= '1' then return {0, waiting_at} end

local parked, stream, retry = KEYS[2], KEYS[3], KEYS[4]
local lane, entry, worker, group, before = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local p = redis.call('XPENDING', stream, group, entry, entry, 1)
if #p == 0 or p[1][2] ~= worker then return {3} end
redis.call('XCLAIM', stream, group, worker, 0, entry, 'RETRYCOUNT', before, 'JUSTID')
redis.call('ZADD', retry, math.max(tonumber(ARGV[10]), waiting_at), entry)
redis.call('HSET', parked, seq, lane .. '\t' .. entry)
redis.call('PEXPIRE', parked, ARGV[11])
return {2}
