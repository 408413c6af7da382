-- Append a batch of tasks to one lane and write their PENDING records, honouring idempotency
-- keys and the lane's depth limit. All or nothing for the depth check.
-- KEYS[1] lane stream
-- ARGV[1] key root, ARGV[2] now (ms), ARGV[3] lane, ARGV[4] idempotency window (ms),
-- ARGV[5] depth limit (0: none), ARGV[6] now (µs, kept in the entry to measure waits); then per task: id, kind, payload, max attempts, idempotency key ('' for none)
-- Returns one task id per task: its own, or the earlier task's when the idempotency key was seen.
local stream, root, now, lane = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local window, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local now_us = ARGV[6]
local n = (#ARGV - 6) / 5
if limit > 0 and redis.call('XLEN', stream) + n > limit then
  return redis.error_reply('LANEFULL lane ' .. lane .. ' is over its depth limit')
end
local out = {}
for i = 0, n - 1 do
  local a = 7 + i * 5
  local id, kind, payload, max, idem = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local earlier = false
  if idem ~= '' then
    local ikey = root .. 'idem:' .. idem
    earlier = redis.call('GET', ikey)
    if not earlier then
      redis.call('SET', ikey, id, 'PX', window)
    end
  end
  if earlier then
    out[#out + 1] = earlier
  else
    local entry = redis.call('XADD', stream, '*', 'id', id, 'kind', kind, 'payload', payload, 'at', now_us, 'max', max, 'base', 0)
    redis.call('HSET', root .. 'task:' .. id, 'id', id, 'kind', kind, 'lane', lane, 'state', 'PENDING',
      'payload', payload, 'created_at', now, 'entry', entry, 'max_attempts', max, 'attempts', 0)
    if idem ~= '' then
      redis.call('HSET', root .. 'task:' .. id, 'idempotency_key', idem)
    end
    out[#out + 1] = id
  end
end
return out
