-- Move the tasks queued for later whose time has come onto the lane, as new entries that name
-- their task (read in turn by fetch.lua, which numbers an ordered one then: it takes its place
-- in its order key's sequence when it is due). Removing one from the `later` set and adding its
-- entry happen together, so however many workers look, each moves once; the entry's `at` is
-- the time it was due, so the wait a worker measures is how late it started.
-- Then hand a worker the entries it should run next that are not new: first those whose retry
-- backoff has passed, then those whose worker stopped renewing its claim (idle longer than the
-- visibility timeout) and that are not waiting out a backoff. Removing a due entry from the
-- retry set and claiming it happen together, so exactly one worker gets it. Entries of tasks
-- cancelled or finished meanwhile are acked and deleted instead of handed out.
-- The worker's own entries idle past the timeout are included: it lost track of them (a read
-- whose reply was lost) and would otherwise hold them until it restarts under another name.
-- KEYS[1] lane stream, KEYS[2] lane retry set, KEYS[3] the lane's tasks queued for later
-- ARGV[1] key root, ARGV[2] group, ARGV[3] consumer, ARGV[4] now (ms), ARGV[5] visibility timeout (ms; 0: skip the scan for dead workers),
-- ARGV[6] most entries to hand out, ARGV[7] the place task ids name (partition and lane: `id_place`)
-- Returns {entry id, fields, deliveries, reason} per entry, then the time (ms) the earliest
-- retry still waiting in the set is due and the time the earliest task queued for later is due
-- (-1: none), so the worker knows when to look again. The fields of an ordered task's entry
-- that does not name its task (a task is named after its entry: task_id.lua) are followed by its
-- `id` and `seq`, as fetch.lua gave them (kept in the record).
local stream, retry, later = KEYS[1], KEYS[2], KEYS[3]
local root, group, me = ARGV[1], ARGV[2], ARGV[3]
local now, vt, budget, place = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {}

local function field(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then return fields[j + 1] end
  end
end

-- claim one entry; returns true when it was handed out
local function take(entry, deliveries, min_idle, reason)
  local got = redis.call('XCLAIM', stream, group, me, min_idle, entry)
  local e = got[1]
  if not e or type(e) ~= 'table' or not e[2] then return false end
  local id = field(e[2], 'id')
  local named = id ~= nil
  if not named and field(e[2], 'kind') then id = task_id(entry, place) end
  local f = id and redis.call('HMGET', key_task(root, id), 'state', 'seq') or {}
  local state = f[1]
  if state == 'REVOKED' or state == 'SUCCESS' or state == 'FAILURE' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    redis.call('SREM', key_revoked(root), id)
    -- settled here (its worker died before recording it): tasks parked behind it may go
    wake_parked(root, field(e[2], 'okey'), now)
    return false
  end
  if id and not named and f[2] then
    e[2][#e[2] + 1] = 'id'; e[2][#e[2] + 1] = id
    e[2][#e[2] + 1] = 'seq'; e[2][#e[2] + 1] = f[2]
  end
  out[#out + 1] = {entry, e[2], deliveries + 1, reason}
  return true
end

-- at most this many moved a call: a backlog of due ones moves over the next calls (an idle
-- place costs one look at the first)
local first_later = redis.call('ZRANGE', later, 0, 0, 'WITHSCORES')
local move = {}
if first_later[2] and tonumber(first_later[2]) <= now then
  move = redis.call('ZRANGEBYSCORE', later, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
end
for j = 1, #move, 2 do
  local id = move[j]
  redis.call('ZREM', later, id)
  local key = key_task(root, id)
  local f = redis.call('HMGET', key, 'state', 'kind', 'payload', 'max_attempts', 'order_key', 'tp')
  -- one cancelled meanwhile is REVOKED already (cancel.lua takes it out of the set too)
  if f[1] == 'PENDING' and f[2] then
    local fields = {'id', id, 'kind', f[2], 'payload', f[3] or 'null', 'at', move[j + 1] .. '000', 'max', f[4] or '1'}
    if f[5] and f[5] ~= '' then fields[#fields + 1] = 'okey'; fields[#fields + 1] = f[5] end
    if f[6] and f[6] ~= '' then fields[#fields + 1] = 'tp'; fields[#fields + 1] = f[6] end
    local entry = redis.call('XADD', stream, '*', unpack(fields))
    -- a queued task's payload is in its entry (as for any other)
    redis.call('HSET', key, 'entry', entry)
    redis.call('HDEL', key, 'payload', 'run_at', 'tp')
  end
end

local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, budget)
for _, entry in ipairs(due) do
  redis.call('ZREM', retry, entry)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #p > 0 then
    take(entry, tonumber(p[1][4]), 0, 'retry')
  end
end

-- Entries waiting out a backoff or parked behind an order key are idle too, and skipped; page
-- on past them (a bounded number of pages) so they cannot hide a dead worker's entries.
local from = '-'
for _ = 1, 8 do
  if #out >= budget or vt <= 0 then break end
  local page = (budget - #out) * 4
  local idle = redis.call('XPENDING', stream, group, 'IDLE', vt, from, '+', page)
  for _, p in ipairs(idle) do
    if #out >= budget then break end
    local entry = p[1]
    -- Our own entries count too: one idle that long is one whose read reply never reached us
    -- (we renew every entry we know of well inside the timeout); the worker skips any it holds.
    if not redis.call('ZSCORE', retry, entry) then
      take(entry, tonumber(p[4]), vt, 'reclaim')
    end
  end
  if #idle < page then break end
  from = '(' .. idle[#idle][1]
end
local first = redis.call('ZRANGE', retry, 0, 0, 'WITHSCORES')
out[#out + 1] = first[2] and math.floor(tonumber(first[2])) or -1
if #move > 0 then first_later = redis.call('ZRANGE', later, 0, 0, 'WITHSCORES') end
out[#out + 1] = first_later[2] and math.floor(tonumber(first_later[2])) or -1
return out
