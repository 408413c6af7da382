-- Read new entries of one lane for a worker, and number ordered tasks in the same step: the
-- entry of a new ordered task (enqueue.lua writes nothing else) gets its id, its PENDING record
-- and the next number of its order key's sequence, listed under the key (see turn.lua). Reading
-- and numbering are one step, so the numbers follow the lane's order — the order of enqueue —
-- however many workers read: when a task is delivered, every earlier task of its key has been
-- delivered and listed. Other new tasks get their record when their attempt starts (start.lua;
-- the worker names them after their entries), and entries that already name their task (a
-- redriven task, which keeps its id, record and number) are passed on as they are — but for an
-- ordered task queued for later (claim.lua moved it here when it was due, with no number yet):
-- it is numbered now, under the id it has.
-- KEYS[1] lane stream
-- ARGV[1] key root, ARGV[2] group, ARGV[3] consumer, ARGV[4] most entries, ARGV[5] lane name,
-- ARGV[6] the place task ids name (`id_place`), ARGV[7] how long an order key's sequence is kept (ms)
-- Returns the entries read, `{{entry id, {field, value, ...}}, ...}`, each new ordered task's
-- fields followed by its `id` and `seq`; or, when there was nothing to read, the
-- group's read position as a string: an `XREAD BLOCK` from there wakes when the next entry
-- arrives, and cannot miss one that came in meanwhile.
local stream, root, group, me, count = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lane, place, order_ttl = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local read = redis.pcall('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', stream, '>')
if type(read) == 'table' and read.err then return read end
if not read or not read[1] or #read[1][2] == 0 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
    if f['name'] == group then return f['last-delivered-id'] end
  end
  return '0-0'
end
local entries = read[1][2]
-- What each entry is: an ordered task to number, or one passed on as it is.
local todo = {}
for i, e in ipairs(entries) do
  local entry, fields = e[1], e[2]
  local kind, max, okey, named, numbered
  if fields[1] == 'kind' and fields[7] == 'max' and (#fields == 8 or fields[9] == 'okey' or fields[9] == 'tp') then
    -- as enqueue.lua writes them: kind, payload, at, max[, okey][, tp]
    kind, max = fields[2], fields[8]
    if fields[9] == 'okey' then okey = fields[10] end
  else
    for j = 1, #fields, 2 do
      local k = fields[j]
      if k == 'kind' then kind = fields[j + 1]
      elseif k == 'max' then max = fields[j + 1]
      elseif k == 'okey' then okey = fields[j + 1]
      elseif k == 'id' then named = fields[j + 1]
      elseif k == 'seq' then numbered = true end
    end
  end
  -- an entry without a kind is no task: the worker sets it aside (quarantine.lua)
  if kind and not numbered and okey and okey ~= '' then
    todo[#todo + 1] = {i, named or task_id(entry, place), kind, max, okey, named}
  end
end
-- Every key the numbering writes is looked at before anything is: while the partition's slot
-- moves to another master, one already moved fails the look. The entries are then handed back
-- (unacked, the group's position put back just before the first of them) and the read answered
-- TRYAGAIN, so the next read, once the slot has moved, finds them and numbers them in order.
for _, t in ipairs(todo) do
  local seen = redis.pcall('EXISTS', key_order(root, t[5]), key_task(root, t[2]))
  if type(seen) == 'table' and seen.err then
    local ids = {}
    for _, e in ipairs(entries) do ids[#ids + 1] = e[1] end
    redis.call('XACK', stream, group, unpack(ids))
    local ms, seq = string.match(ids[1], '^(%d+)-(%d+)$')
    local before
    if tonumber(seq) > 0 then
      before = ms .. '-' .. string.format('%d', tonumber(seq) - 1)
    else
      before = string.format('%d', tonumber(ms) - 1) .. '-18446744073709551615'
    end
    redis.call('XGROUP', 'SETID', stream, group, before)
    return redis.error_reply('TRYAGAIN a key of this partition is moving to another master: ' .. seen.err)
  end
end
for _, t in ipairs(todo) do
  local i, id, kind, max, okey, named = t[1], t[2], t[3], t[4], t[5], t[6]
  local entry, fields = entries[i][1], entries[i][2]
  local order = key_order(root, okey)
  -- as text once: Lua would format the number for every command it is passed to
  local seq = tostring(redis.call('HINCRBY', order, 'next', 1))
  redis.call('HSET', order, seq, id)
  redis.call('PEXPIRE', order, order_ttl)
  if named then
    -- its record was written when it was queued
    redis.call('HSET', key_task(root, id), 'entry', entry, 'order_key', okey, 'seq', seq)
  else
    -- queued when it was appended: the entry's own millisecond
    redis.call('HSET', key_task(root, id), 'kind', kind, 'lane', lane, 'state', 'PENDING', 'created_at', string.match(entry, '^(%d+)'),
      'entry', entry, 'max_attempts', max or '1', 'order_key', okey, 'seq', seq)
    fields[#fields + 1] = 'id'; fields[#fields + 1] = id
  end
  fields[#fields + 1] = 'seq'; fields[#fields + 1] = seq
end
return entries
