-- Append a batch of tasks to one lane and write their PENDING records, honouring idempotency
-- keys and the lane's depth limit. The payload goes into the entry only: a queued task's record
-- stays small (a compact hash of short fields), and the worker that runs it copies the payload
-- into the record. Only new tasks count against the limit: a repeated
-- idempotency key is answered with the earlier task even when the lane is full.
-- KEYS[1] lane stream
-- ARGV[1] key root, ARGV[2] now (ms), ARGV[3] lane, ARGV[4] idempotency window (ms),
-- ARGV[5] depth limit (0: none), ARGV[6] now (µs, kept in the entry to measure waits),
-- ARGV[7] consumer group, ARGV[8] how long an order key's sequence is kept (ms);
-- then per task: id, kind, payload, max attempts, idempotency key ('' for none), order key ('' for none)
-- Tasks with an order key get the next number of that key's sequence (in the entry and the record)
-- and are listed under it, so workers can run them one after the other (see turn.lua).
-- The depth that counts is the lane's outstanding work (entries not yet read plus entries
-- delivered and not acked), not XLEN: acked entries wait behind the oldest pending one to be
-- trimmed, and must not make a lane look full.
-- Returns per task: its own id, the earlier task's id when the idempotency key was seen, or
-- false when the lane is full (nothing was stored for it, its idempotency key included).
local stream, root, now, lane = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local window, limit = ARGV[4], tonumber(ARGV[5])
local now_us, group, order_ttl = ARGV[6], ARGV[7], ARGV[8]
local per = 6
local n = (#ARGV - 8) / per
local room = -1
if limit > 0 then
  local depth
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local f = {}
      for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
      if f['name'] == group and type(f['lag']) == 'number' then depth = f['lag'] + f['pending'] end
    end
  end
  -- Redis cannot tell the lag after a deletion past the group's position: count the stream.
  depth = depth or redis.call('XLEN', stream)
  room = math.max(limit - depth, 0)
end
local out = {}
for i = 0, n - 1 do
  local a = 9 + i * per
  local id, kind, payload, max, idem, okey = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local earlier = false
  if idem ~= '' then
    -- set only if absent, and learn the earlier owner in the same call
    earlier = redis.call('SET', root .. 'idem:' .. idem, id, 'NX', 'PX', window, 'GET')
  end
  if earlier then
    out[#out + 1] = earlier
  elseif room == 0 then
    if idem ~= '' then redis.call('DEL', root .. 'idem:' .. idem) end
    out[#out + 1] = false
  else
    if room > 0 then room = room - 1 end
    if okey == '' then
      local entry = redis.call('XADD', stream, '*', 'id', id, 'kind', kind, 'payload', payload, 'at', now_us, 'max', max)
      redis.call('HSET', root .. 'task:' .. id, 'kind', kind, 'lane', lane, 'state', 'PENDING', 'created_at', now,
        'entry', entry, 'max_attempts', max)
    else
      local order = root .. 'order:' .. okey
      -- as text once: Lua would format the number for every command it is passed to
      local seq = tostring(redis.call('HINCRBY', order, 'next', 1))
      redis.call('HSET', order, seq, id)
      redis.call('PEXPIRE', order, order_ttl)
      local entry = redis.call('XADD', stream, '*', 'id', id, 'kind', kind, 'payload', payload, 'at', now_us, 'max', max,
        'okey', okey, 'seq', seq)
      redis.call('HSET', root .. 'task:' .. id, 'kind', kind, 'lane', lane, 'state', 'PENDING', 'created_at', now,
        'entry', entry, 'max_attempts', max, 'order_key', okey, 'seq', seq)
    end
    out[#out + 1] = id
  end
end
return out
