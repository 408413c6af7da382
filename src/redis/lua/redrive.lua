-- Send dead letters back to their lanes: each becomes a new stream entry of the same task id,
-- its record PENDING again with its attempt history kept; the dead letter is deleted in the
-- same step, so a task is never both dead and queued. An ordered task keeps its order key and
-- number: it runs once every task before it has settled, and wakes those parked behind it.
-- KEYS[1] dlq stream, KEYS[2] dlq per-lane counts
-- ARGV[1] key root, ARGV[2] now (ms), ARGV[3..] dead-letter entry ids
-- Returns the task ids sent back.
local dlq, counts, root, now = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local got = redis.call('XRANGE', dlq, ARGV[i], ARGV[i])
  if #got > 0 then
    local f = letter_fields(got[1][2])
    local key = key_task(root, f.task_id)
    -- the attempt log, kept in the letter only while it was dead (the payload goes into the
    -- record below)
    letter_back(key, f, true)
    local base = tonumber(redis.call('HGET', key, 'attempts') or '0') or 0
    local max = redis.call('HGET', key, 'max_attempts') or '4'
    local fields = {'id', f.task_id, 'kind', f.kind, 'payload', f.payload, 'at', now, 'max', max, 'base', base}
    local order = redis.call('HMGET', key, 'order_key', 'seq')
    if order[1] and order[2] then
      fields[#fields + 1] = 'okey'; fields[#fields + 1] = order[1]
      fields[#fields + 1] = 'seq'; fields[#fields + 1] = order[2]
    end
    local entry = redis.call('XADD', key_lane(root, f.lane), '*', unpack(fields))
    redis.call('HSET', key, 'id', f.task_id, 'kind', f.kind, 'lane', f.lane, 'payload', f.payload,
      'state', 'PENDING', 'entry', entry, 'max_attempts', max, 'attempts', base,
      'created_at', f.created_at or now, 'redriven_at', now)
    redis.call('HDEL', key, 'dead_letter', 'finished_at', 'result', 'retry_at')
    redis.call('PERSIST', key)
    redis.call('XDEL', dlq, ARGV[i])
    redis.call('HINCRBY', counts, f.lane, -1)
    out[#out + 1] = f.task_id
  end
end
return out
