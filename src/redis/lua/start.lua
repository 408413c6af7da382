-- Mark a batch of attempts STARTED. A task cancelled or finished meanwhile keeps its state.
-- Attempts lost with a dead worker (numbers between the entry's base and this attempt that left
-- no record) are recorded as lost, so the history shows every delivery.
-- The task's payload is copied into its record (queued tasks keep it in their entry only). The
-- first start of a task that has no record yet (a new task without an order key: enqueue.lua
-- wrote its entry alone) writes the record's fields that come from the entry too.
-- KEYS[1] the revoked set (not read: declared so that the call goes to the node of the key root's
-- slot, and a key outside it fails)
-- ARGV[1] key root, ARGV[2] worker; then per attempt: task id, attempt number, base, started (ms),
-- payload, kind ('' when the record was written before: an ordered or redriven task), lane,
-- entry, max attempts
-- Returns per attempt 1 when it may run, 0 when the task was cancelled or already finished (a
-- task that succeeded has left its record for a finished one, see done.lua).
local root, worker = ARGV[1], ARGV[2]
local out = {}
for a = 3, #ARGV, 9 do
  local key = key_task(root, ARGV[a])
  local n, base, started = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
  local state = redis.call('HGET', key, 'state')
  if state == 'REVOKED' or state == 'SUCCESS' or state == 'FAILURE'
    or (not state and done_exists(root, ARGV[a])) then
    out[#out + 1] = 0
  else
    for j = base + 1, n - 1 do
      if redis.call('HEXISTS', key, 'a:' .. j) == 0 then
        redis.call('HSET', key, 'a:' .. j, cjson.encode({attempt = j, outcome = 'lost',
          error = 'worker stopped responding; reclaimed after the visibility timeout'}))
      end
    end
    local fields = {'state', 'STARTED', 'started_at', started, 'worker', worker, 'attempts', n, 'progress', 0,
      'payload', ARGV[a + 4]}
    if not state and ARGV[a + 5] ~= '' then
      local entry = ARGV[a + 7]
      fields[#fields + 1] = 'kind'; fields[#fields + 1] = ARGV[a + 5]
      fields[#fields + 1] = 'lane'; fields[#fields + 1] = ARGV[a + 6]
      fields[#fields + 1] = 'entry'; fields[#fields + 1] = entry
      fields[#fields + 1] = 'created_at'; fields[#fields + 1] = string.match(entry, '^(%d+)')
      fields[#fields + 1] = 'max_attempts'; fields[#fields + 1] = ARGV[a + 8]
    end
    redis.call('HSET', key, unpack(fields))
    out[#out + 1] = 1
  end
end
return out
