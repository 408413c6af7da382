-- Record a batch of successful attempts. XACK is the fence: only an attempt whose entry is
-- still pending may write SUCCESS, so a task reclaimed from a slow worker ends with exactly one
-- SUCCESS. The common case acks the whole batch in one call per lane; only when some entry was
-- already acked elsewhere does it look at each task's record. Tasks cancelled while running
-- (the revoked set) keep REVOKED. Acknowledged entries are then trimmed from the head of each
-- lane, never past the oldest pending or undelivered entry.
-- KEYS[1] revoked set; then per attempt: the lane stream
-- ARGV[1] key root, ARGV[2] group, ARGV[3] now (ms), ARGV[4] retention (ms), ARGV[5] worker,
-- ARGV[6] retention of a task that succeeded (ms), ARGV[7] tasks the history keeps (history.lua);
-- then per attempt: task id, entry id, attempt number, result JSON, attempt JSON, base
-- (attempts before this entry: numbers between it and this attempt that left no record were
-- lost with a dead worker and are recorded as such), order key ('' for none: tasks parked
-- behind it are woken), payload (copied into the record when this attempt's start was not
-- recorded, as a queued task's payload is in its entry only; '' otherwise), kind, lane, entry
-- and max attempts when that start would have written the record's first fields (a new task
-- without an order key has no record until it starts; '' otherwise); then the kind, and the lane as the finished
-- record keeps it ('' when the task id names it)
-- A task that succeeds leaves its record for a finished one (done.lua says where; kept the
-- retention): one line of tab-separated fields and nothing twice — no payload (the entry held
-- it), nothing the task id says (when it was created; its lane, when it names an entry there):
--   kind, lane ('' when the id names it), started (ms after the time a UUIDv7 id starts with;
--   '@' and the time for other ids), finished - started (ms), worker,
--   attempts, max attempts, result JSON ('' for null), the earlier attempts' log as a JSON array
--   ('' when this was the first)
-- Results and logs are JSON, which never holds a raw tab.
-- A task that succeeds is noted in the history (one cancelled was noted by cancel.lua).
-- Returns per attempt: 'SUCCESS', 'REVOKED' (cancelled meanwhile) or 'STALE' (someone else acked).
local revoked = KEYS[1]
local root, group, now, ttl, worker, success_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local cap = tonumber(ARGV[7])
local n = #KEYS - 1
local per = 14
local head = 7
local lane_at = #key_lane(root, '') + 1
local settled = {}
local out = {}

-- the fields a start writes into a record that does not exist yet (see start.lua)
local function first_fields(fields, kind, lane, entry, max)
  if kind == '' then return end
  local n = #fields
  fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4] = 'kind', kind, 'lane', lane
  fields[n + 5], fields[n + 6], fields[n + 7] = 'entry', entry, 'created_at'
  fields[n + 8], fields[n + 9], fields[n + 10] = string.match(entry, '^(%d+)'), 'max_attempts', max
end

-- group the entries by lane and ack each lane's in one call
local lanes, order = {}, {}
for i = 1, n do
  local stream = KEYS[i + 1]
  if not lanes[stream] then lanes[stream] = {}; order[#order + 1] = stream end
  local l = lanes[stream]
  l[#l + 1] = ARGV[head + (i - 1) * per + 2]
end
local all_acked = true
for _, stream in ipairs(order) do
  local ids = lanes[stream]
  if redis.call('XACK', stream, group, unpack(ids)) ~= #ids then all_acked = false end
end

local ids = {}
for i = 1, n do ids[i] = ARGV[head + (i - 1) * per + 1] end
local is_revoked = redis.call('SMISMEMBER', revoked, unpack(ids))

for i = 1, n do
  local a = head + 1 + (i - 1) * per
  local id, entry, attempt_no, result, attempt, base = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5])
  local okey, payload, first = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local key = key_task(root, id)
  local stale = false
  if not all_acked then
    -- Some entry of this batch was acked elsewhere first. Those attempts lost the race: their
    -- task finished, was cancelled while waiting, dead-lettered or redriven (a new entry).
    local f = redis.call('HMGET', key, 'state', 'entry')
    -- (a task with no record yet was acked by no one else: whatever settles a task writes one)
    stale = f[1] == 'SUCCESS' or f[1] == 'FAILURE' or (f[2] and f[2] ~= entry) or (f[1] == 'REVOKED' and is_revoked[i] == 0)
      or done_exists(root, id)
  end
  if not stale then
    for j = base + 1, tonumber(attempt_no) - 1 do
      if redis.call('HEXISTS', key, 'a:' .. j) == 0 then
        redis.call('HSET', key, 'a:' .. j, cjson.encode({attempt = j, outcome = 'lost',
          error = 'worker stopped responding; reclaimed after the visibility timeout'}))
      end
    end
  end
  if stale then
    out[i] = 'STALE'
  elseif is_revoked[i] == 1 then
    redis.call('SREM', revoked, id)
    local fields = {'a:' .. attempt_no, attempt, 'attempts', attempt_no}
    if payload ~= '' then fields[#fields + 1] = 'payload'; fields[#fields + 1] = payload end
    first_fields(fields, first, ARGV[a + 9], entry, ARGV[a + 11])
    redis.call('HSET', key, unpack(fields))
    redis.call('PEXPIRE', key, ttl)
    wake_parked(root, okey, now)
    out[i] = 'REVOKED'
  else
    local max = redis.call('HGET', key, 'max_attempts') or ARGV[a + 11]
    local ok, this = pcall(cjson.decode, attempt)
    if not ok or type(this) ~= 'table' then this = {} end
    local started = tonumber(this.started_at) or tonumber(now)
    local earlier = {}
    for j = 1, tonumber(attempt_no) - 1 do
      local h = redis.call('HGET', key, 'a:' .. j)
      if h then earlier[#earlier + 1] = h end
    end
    -- a UUIDv7 task id starts with its creation time in ms: the start is kept from it
    local hi, lo = string.match(id, '^(%x%x%x%x%x%x%x%x)%-(%x%x%x%x)%-7')
    local since = hi and string.format('%d', started - tonumber(hi .. lo, 16)) or '@' .. string.format('%d', started)
    local line = table.concat({ARGV[a + 12], ARGV[a + 13], since,
      string.format('%d', tonumber(now) - started), worker, attempt_no, max,
      result == 'null' and '' or result, #earlier > 0 and '[' .. table.concat(earlier, ',') .. ']' or ''}, '\t')
    local seq = okey ~= '' and redis.call('HGET', key, 'seq') or nil
    done_write(root, id, line, success_ttl)
    redis.call('DEL', key)
    noted(settled, id, ARGV[a + 12], string.sub(KEYS[i + 1], lane_at), 'SUCCESS',
      string.format('%d', tonumber(now) - started))
    settle_order(root, okey, seq, now)
    out[i] = 'SUCCESS'
  end
end

note_finished(root, cap, settled)

-- trim acknowledged entries: everything older than the oldest pending entry and the group's
-- read position
for _, stream in ipairs(order) do
  local p = redis.call('XPENDING', stream, group)
  local floor
  if p[1] > 0 then
    floor = p[2]
  else
    local groups = redis.call('XINFO', 'GROUPS', stream)
    for _, g in ipairs(groups) do
      local f = {}
      for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
      if f['name'] == group then
        local ms, seq = string.match(f['last-delivered-id'], '^(%d+)-(%d+)$')
        if ms then floor = ms .. '-' .. (tonumber(seq) + 1) end
      end
    end
  end
  if floor then redis.call('XTRIM', stream, 'MINID', floor) end
end
return out
