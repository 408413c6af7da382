-- Cancel one task. Queued for later: taken out of the lane's `later` set, so it is never moved
-- onto the lane. Queued: its entry is deleted before any worker reads it. Waiting out a retry:
-- removed from the retry set, acked and deleted. Running: marked REVOKED and announced, so the
-- worker running it stops; its ack follows when it does.
-- KEYS[1] task record, KEYS[2] lane stream, KEYS[3] lane retry set, KEYS[4] revoked set,
-- KEYS[5] the lane's tasks queued for later
-- ARGV[1] group, ARGV[2] now (ms), ARGV[3] retention (ms), ARGV[4] cancel channel, ARGV[5] task id,
-- ARGV[6] the lane entry the id is named after ('' when it names none), ARGV[7] lane name,
-- ARGV[8] tasks the history keeps (history.lua: the task is noted there as it is cancelled,
-- a running one too, with how long it had run)
-- A task no worker has started yet may have no record, only its entry (enqueue.lua): its record
-- is written here from the entry, and the task cancelled as a queued one — or as a running one
-- when a worker has read it.
-- Returns {'MISSING'} | {'FINISHED', state} | {'REVOKED', 'later'|'queued'|'retry'|'running', kind}
local key, stream, retry = KEYS[1], KEYS[2], KEYS[3]
local group, now, ttl, channel, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local state = redis.call('HGET', key, 'state')
-- a task that succeeded keeps a finished record of its own (finish.lua)
if not state and done_exists(string.sub(key, 1, #key - #key_task('', id)), id) then
  return {'FINISHED', 'SUCCESS'}
end
if not state then
  local named = ARGV[6]
  local e = named ~= '' and redis.call('XRANGE', stream, named, named)[1]
  if not e then return {'MISSING'} end
  -- an entry a worker has read and not acknowledged is a task about to start (start.lua writes
  -- its record), cancelled below as a running one; one acknowledged whose record is gone
  -- (expired before the entry was trimmed) is no task any more
  local function parts(s)
    local ms, seq = string.match(s, '^(%d+)-(%d+)$')
    return tonumber(ms) or 0, tonumber(seq) or 0
  end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
    if f['name'] == group then
      local ems, eseq = parts(named)
      local rms, rseq = parts(f['last-delivered-id'])
      if (ems < rms or (ems == rms and eseq <= rseq)) and #redis.call('XPENDING', stream, group, named, named, 1) == 0 then
        return {'MISSING'}
      end
    end
  end
  local f = {}
  for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
  -- an entry that names a task of its own is that task's (a redrive), not this id's
  if f.id or not f.kind then return {'MISSING'} end
  redis.call('HSET', key, 'kind', f.kind, 'lane', ARGV[7], 'state', 'PENDING', 'entry', named,
    'created_at', string.match(named, '^(%d+)'), 'max_attempts', f.max or '1', 'payload', f.payload or 'null')
  if f.okey and f.okey ~= '' then redis.call('HSET', key, 'order_key', f.okey) end
  state = 'PENDING'
end
if state == 'SUCCESS' or state == 'FAILURE' or state == 'REVOKED' then return {'FINISHED', state} end
local entry = redis.call('HGET', key, 'entry')
local where
local p = entry and redis.call('XPENDING', stream, group, entry, entry, 1) or {}
if redis.call('ZREM', KEYS[5], id) == 1 then
  -- queued for later: its record holds it all (enqueue.lua)
  where = 'later'
  p, entry = {}, nil
end
-- the entry goes away below: keep its payload (a queued task's record does not hold one)
if entry and redis.call('HEXISTS', key, 'payload') == 0 then
  local payload = entry_payload(stream, entry)
  if payload then redis.call('HSET', key, 'payload', payload) end
end
if where == 'later' then
  -- nothing queued or running to undo
elseif #p == 0 then
  if entry then redis.call('XDEL', stream, entry) end
  where = 'queued'
elseif redis.call('ZREM', retry, entry) == 1 then
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  where = 'retry'
else
  where = 'running'
end
redis.call('HSET', key, 'state', 'REVOKED', 'finished_at', now, 'error', 'cancelled')
redis.call('HDEL', key, 'retry_at', 'run_at')
-- a queued or retrying task has settled here; tasks parked behind it look at their turn again
local root = string.sub(key, 1, #key - #key_task('', id))
if where ~= 'running' then
  wake_parked(root, redis.call('HGET', key, 'order_key'), now)
end
local f = redis.call('HMGET', key, 'kind', 'started_at')
local started = where == 'running' and tonumber(f[2])
local settled = {}
noted(settled, id, f[1] or '', ARGV[7], 'REVOKED', started and string.format('%d', tonumber(now) - started) or '')
note_finished(root, tonumber(ARGV[8]), settled)
if where == 'running' then
  redis.call('SADD', KEYS[4], id)
  redis.call('PUBLISH', channel, id)
else
  redis.call('PEXPIRE', key, ttl)
end
return {'REVOKED', where, f[1] or ''}
