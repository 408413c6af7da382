-- Read new entries of one lane for a worker, and make each a task in the same step: the entry
-- of a new task (enqueue.lua writes nothing else) gets its id and its PENDING record here, and,
-- when it carries an order key, the next number of that key's sequence, listed under the key
-- (see turn.lua). Reading and numbering are one step, so the numbers follow the lane's order —
-- the order of enqueue — however many workers read: when a task is delivered, every earlier
-- task of its key has been delivered and listed. Entries that already name their task (a
-- redriven task, which keeps its id, record and number) are passed on as they are.
-- KEYS[1] lane stream
-- ARGV[1] key root, ARGV[2] group, ARGV[3] consumer, ARGV[4] most entries, ARGV[5] lane name,
-- ARGV[6] lane index, ARGV[7] how long an order key's sequence is kept (ms)
-- Returns the entries read, `{{entry id, {field, value, ...}}, ...}`, each new task's fields
-- followed by `id` (and `seq` for ordered ones); or, when there was nothing to read, the
-- group's read position as a string: an `XREAD BLOCK` from there wakes when the next entry
-- arrives, and cannot miss one that came in meanwhile.
local stream, root, group, me, count = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lane, lane_index, order_ttl = ARGV[5], tonumber(ARGV[6]), ARGV[7]
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
for _, e in ipairs(entries) do
  local entry, fields = e[1], e[2]
  local f = {}
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  -- an entry without a kind is no task: the worker sets it aside (quarantine.lua)
  if not f.id and f.kind then
    local id = task_id(entry, lane_index)
    local at_us = tonumber(f.at)
    local at_ms = at_us and math.floor(at_us / 1000) or tonumber(string.match(entry, '^(%d+)'))
    local record = {'kind', f.kind, 'lane', lane, 'state', 'PENDING', 'created_at', at_ms, 'entry', entry,
      'max_attempts', f.max or '1'}
    fields[#fields + 1] = 'id'; fields[#fields + 1] = id
    if f.okey and f.okey ~= '' then
      local order = root .. 'order:' .. f.okey
      -- as text once: Lua would format the number for every command it is passed to
      local seq = tostring(redis.call('HINCRBY', order, 'next', 1))
      redis.call('HSET', order, seq, id)
      redis.call('PEXPIRE', order, order_ttl)
      record[#record + 1] = 'order_key'; record[#record + 1] = f.okey
      record[#record + 1] = 'seq'; record[#record + 1] = seq
      fields[#fields + 1] = 'seq'; fields[#fields + 1] = seq
    end
    redis.call('HSET', root .. 'task:' .. id, unpack(record))
  end
end
return entries
