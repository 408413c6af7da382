-- Append a batch of tasks to one lane, honouring idempotency keys and the lane's depth limit.
-- A queued task is its entry and nothing else: no record, no place in an order key's sequence.
-- Its id is named after the entry (task_id.lua); the worker that reads an ordered task numbers
-- it and writes its record (fetch.lua), any other task's record is written when it first starts
-- (start.lua). So an enqueue writes at most two keys: the
-- idempotency marker and the entry. A task queued for later is no entry yet: its record holds
-- it (PENDING, with the time it is due) and the lane's `later` set its id, until a worker's
-- claim moves it onto the lane when it is due (claim.lua); its id, made by the caller, names
-- its place like an entry's, with a sequence number no entry has (2^48 or more). Only new tasks count against the depth limit: a repeated
-- idempotency key is answered with the earlier task even when the lane is full.
-- KEYS[1] lane stream, KEYS[2] the lane's set of tasks queued for later
-- ARGV[1] key root, ARGV[2] the place task ids name (`id_place`), ARGV[3] idempotency window (ms), ARGV[4] depth limit
-- (0: none), ARGV[5] now (µs, kept in the entry to measure waits), ARGV[6] consumer group, ARGV[7] lane name;
-- then per task: kind, payload, max attempts, idempotency key's hash (16 bytes of its SHA-256;
-- '' for none), the key as earlier builds kept their markers ('' unless they may still hold
-- some), the fingerprint of its kind and payload ('' when a repeat is only told apart: the
-- marker then holds no id, as for webhooks' message ids), order key ('' for none), the time (ms)
-- it is due ('' for now), when it is due later, its id, and the W3C trace context of the
-- enqueue ('' when traces are off; kept as the entry's `tp`, or the record's when due later)
-- The depth that counts is the lane's outstanding work (entries not yet read plus entries
-- delivered and not acked), not XLEN: acked entries wait behind the oldest pending one to be
-- trimmed, and must not make a lane look full), and the tasks queued for later.
-- Markers are fields, not keys: the window is cut into slices of its length, and a slice's
-- markers are fields of 256 hashes, `idem:<slice>:<shard>`, the shard the hash's first byte, the
-- field the hash. A key is looked for in its shard of this slice and of the one before, so it is
-- remembered at least the window and at most twice as long; a slice's hashes expire when the
-- slice after it ends (each shard a second after the one before, so they are not all freed at
-- once). A field costs a fraction of a key of its own (no key, no expiry entry, no object).
-- Earlier builds kept a key per marker, `idem:<key>`: looked at too when given.
-- A marker holds '1' (no id kept) or the task's id, a space and its fingerprint (markers of
-- earlier builds: the id alone).
-- Returns per task: 'n' .. the new entry's id; 'e' .. the earlier task's id when the
-- idempotency key was seen with the same kind and payload; 'x' .. the earlier task's id when it
-- was seen with another kind or payload (nothing is queued); 'd' when it was seen and no id was
-- kept; false when the lane is full (nothing was stored for it, its idempotency key included);
-- 's' .. its id for a task queued for later, 'S' .. its id when it is the first due of them.
local stream, later, root, place = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local window, limit, now_us, group, lane = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local per, head = 10, 7
local n = (#ARGV - head) / per
local slice_ms = tonumber(window)
local slice = math.floor(math.floor(tonumber(now_us) / 1000) / slice_ms)
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
  depth = (depth or redis.call('XLEN', stream)) + redis.call('ZCARD', later)
  room = math.max(limit - depth, 0)
end
-- Every key the batch may use is looked at before anything is written: while the partition's
-- slot moves to another master, a key already moved fails the script here, with nothing
-- written, instead of after a marker was set for an entry never added (the caller is answered
-- "try again", and a slot moves in seconds).
for i = 0, n - 1 do
  local a = head + 1 + i * per
  local idem, legacy = ARGV[a + 3], ARGV[a + 4]
  if idem ~= '' then
    local shard = string.byte(idem, 1)
    redis.call('EXISTS', key_idem(root, slice, shard), key_idem(root, slice - 1, shard))
    if legacy ~= '' then redis.call('EXISTS', key_idem_legacy(root, legacy)) end
  end
  if ARGV[a + 7] ~= '' then redis.call('EXISTS', key_task(root, ARGV[a + 8])) end
end
local out = {}
for i = 0, n - 1 do
  local a = head + 1 + i * per
  local kind, payload, max, idem, legacy = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local fp, okey, due, later_id, tp = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
  local marker, earlier
  if idem ~= '' then
    local shard = string.byte(idem, 1)
    marker = key_idem(root, slice, shard)
    -- set only if absent, and learn of an earlier owner
    if redis.call('HSETNX', marker, idem, '1') == 0 then
      earlier = redis.call('HGET', marker, idem)
    else
      redis.call('PEXPIREAT', marker, string.format('%d', (slice + 2) * slice_ms + shard * math.min(1000, math.floor(slice_ms / 256))))
      earlier = redis.call('HGET', key_idem(root, slice - 1, shard), idem)
      if not earlier and legacy ~= '' then earlier = redis.call('GET', key_idem_legacy(root, legacy)) end
      if earlier then redis.call('HDEL', marker, idem) end
    end
  end
  if earlier then
    if fp == '' or earlier == '1' then
      out[#out + 1] = 'd'
    else
      local id, efp = string.match(earlier, '^(%S+) (%S+)$')
      if id and efp ~= fp then
        out[#out + 1] = 'x' .. id
      else
        out[#out + 1] = 'e' .. (id or earlier)
      end
    end
  elseif room == 0 then
    if marker then redis.call('HDEL', marker, idem) end
    out[#out + 1] = false
  else
    if room > 0 then room = room - 1 end
    local entry
    if due ~= '' then
      local key = key_task(root, later_id)
      redis.call('HSET', key, 'kind', kind, 'lane', lane, 'state', 'PENDING', 'max_attempts', max, 'payload', payload,
        'created_at', string.sub(now_us, 1, -4), 'run_at', due)
      if okey ~= '' then redis.call('HSET', key, 'order_key', okey) end
      if tp ~= '' then redis.call('HSET', key, 'tp', tp) end
      redis.call('ZADD', later, due, later_id)
      if marker and fp ~= '' then redis.call('HSET', marker, idem, later_id .. ' ' .. fp) end
      local first = redis.call('ZRANGE', later, 0, 0)[1]
      out[#out + 1] = (first == later_id and 'S' or 's') .. later_id
    else
      if tp ~= '' then
        local f = {'kind', kind, 'payload', payload, 'at', now_us, 'max', max}
        if okey ~= '' then f[9] = 'okey'; f[10] = okey end
        f[#f + 1] = 'tp'; f[#f + 1] = tp
        entry = redis.call('XADD', stream, '*', unpack(f))
      elseif okey == '' then
        entry = redis.call('XADD', stream, '*', 'kind', kind, 'payload', payload, 'at', now_us, 'max', max)
      else
        entry = redis.call('XADD', stream, '*', 'kind', kind, 'payload', payload, 'at', now_us, 'max', max, 'okey', okey)
      end
      if marker and fp ~= '' then redis.call('HSET', marker, idem, task_id(entry, place) .. ' ' .. fp) end
      out[#out + 1] = 'n' .. entry
    end
  end
end
return out
