-- Record a batch of failed attempts: either schedule the retry (the entry stays pending and its
-- id goes into the lane's retry set, due at the given time), or move the task to the DLQ with its
-- whole attempt history, ack and delete the entry — atomically, so a task is always in exactly
-- one place. A task cancelled meanwhile is acked and stays REVOKED.
-- Only the worker that holds the entry may record a failure: a worker whose claim was taken
-- over (it stalled past the visibility timeout) gets 'STALE' and changes nothing, so it cannot
-- re-arm a retry under the live owner; and a batch replayed after a lost reply finds the entry
-- moved on, or applies the same values again.
-- KEYS[1] dlq stream, KEYS[2] dlq per-lane counts; then per attempt: lane stream, lane retry set
-- ARGV[1] key root, ARGV[2] group, ARGV[3] now (ms), ARGV[4] retention (ms), ARGV[5] dlq cap (0: none),
-- ARGV[6] the recording worker (consumer name), ARGV[7] tasks the history keeps (history.lua);
-- then per attempt: task id, entry id, attempt number, attempt JSON, error, retry at (ms; 0: dead),
-- next state ('RETRY', or 'PENDING' for work handed back at shutdown, which costs no attempt),
-- deliveries before this one (the count a hand-back restores), order key ('' for none: tasks
-- parked behind it are woken once it settles)
-- A task that dies is noted in the history (one cancelled was noted by cancel.lua).
-- Returns per attempt: 'RETRY', 'PENDING', 'FAILURE', 'REVOKED' or 'STALE'.
local dlq, counts = KEYS[1], KEYS[2]
local root, group, now, ttl, cap, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local history_cap = tonumber(ARGV[7])
local settled = {}
local out = {}
local per = 9
for i = 1, (#KEYS - 2) / 2 do
  local stream, retry = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local a = 8 + (i - 1) * per
  local id, entry, n, attempt, err, at, next_state, before =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 6], ARGV[a + 7]
  local okey = ARGV[a + 8]
  local key = key_task(root, id)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
  -- a task handed back before it started may have no record yet (start.lua writes it)
  local recorded = redis.call('HGET', key, 'entry')
  if #pending == 0 or pending[1][2] ~= worker or (recorded and recorded ~= entry) then
    out[i] = 'STALE'
  else
    local state = redis.call('HGET', key, 'state')
    if state == 'REVOKED' then
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
      redis.call('SREM', key_revoked(root), id)
      redis.call('HSET', key, 'a:' .. n, attempt, 'attempts', n)
      redis.call('PEXPIRE', key, ttl)
      wake_parked(root, okey, now)
      out[i] = 'REVOKED'
    elseif next_state == 'PENDING' then
      -- handed back, not failed: restore the count from before this delivery so it costs no
      -- attempt (an absolute value, so a replay cannot lower it twice)
      redis.call('XCLAIM', stream, group, worker, 0, entry, 'RETRYCOUNT', before, 'JUSTID')
      if recorded then redis.call('HSET', key, 'state', 'PENDING') end
      redis.call('ZADD', retry, ARGV[a + 5], entry)
      out[i] = 'PENDING'
    elseif at > 0 then
      redis.call('HSET', key, 'state', next_state, 'error', err, 'attempts', n, 'a:' .. n, attempt, 'retry_at', ARGV[a + 5])
      redis.call('ZADD', retry, ARGV[a + 5], entry)
      out[i] = next_state
    else
      -- the payload and the attempt log go into the dead letter, and out of the record: a dead
      -- task keeps them once (letter.lua puts them back when the letter goes)
      local history, copies = {}, {'payload'}
      for j = 1, tonumber(n) - 1 do
        local h = redis.call('HGET', key, 'a:' .. j)
        if h then history[#history + 1] = h end
        copies[#copies + 1] = 'a:' .. j
      end
      history[#history + 1] = attempt
      local f = redis.call('HMGET', key, 'kind', 'lane', 'payload', 'created_at')
      local payload = f[3] or entry_payload(stream, entry) or 'null'
      local fields = {'task_id', id, 'kind', f[1] or '', 'lane', f[2] or '', 'payload', payload,
        'error', err, 'attempts', '[' .. table.concat(history, ',') .. ']', 'failed_at', now,
        'created_at', f[4] or now}
      if cap > 0 then
        -- DLQ_MAX drops the oldest dead letters to make room: keep the per-lane counts true and
        -- let the dropped tasks' records expire.
        while redis.call('XLEN', dlq) >= cap do
          local oldest = redis.call('XRANGE', dlq, '-', '+', 'COUNT', 1)[1]
          if not oldest then break end
          local of = letter_fields(oldest[2])
          if of.lane then redis.call('HINCRBY', counts, of.lane, -1) end
          if of.task_id and of.task_id ~= '' then
            letter_back(key_task(root, of.task_id), of)
            redis.call('PEXPIRE', key_task(root, of.task_id), ttl)
          end
          redis.call('XDEL', dlq, oldest[1])
        end
      end
      local dead = redis.call('XADD', dlq, '*', unpack(fields))
      redis.call('HINCRBY', counts, f[2] or '', 1)
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
      redis.call('HSET', key, 'state', 'FAILURE', 'error', err, 'finished_at', now, 'attempts', n, 'dead_letter', dead)
      copies[#copies + 1] = 'retry_at'
      redis.call('HDEL', key, unpack(copies))
      redis.call('PERSIST', key)
      wake_parked(root, okey, now)
      local ok, this = pcall(cjson.decode, attempt)
      local started = ok and type(this) == 'table' and tonumber(this.started_at)
      noted(settled, id, f[1] or '', f[2] or '', 'FAILURE',
        started and string.format('%d', tonumber(now) - started) or '')
      out[i] = 'FAILURE'
    end
  end
end
note_finished(root, history_cap, settled)
return out
