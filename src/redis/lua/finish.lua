-- Record a batch of successful attempts. XACK is the fence: only the attempt whose ack removes
-- the entry from the pending list writes SUCCESS, so a task reclaimed from a slow worker ends
-- with exactly one SUCCESS. The entry is deleted once acknowledged so streams stay short.
-- KEYS: per attempt, the lane stream
-- ARGV[1] key root, ARGV[2] group, ARGV[3] now (ms), ARGV[4] retention (ms);
-- then per attempt: task id, entry id, attempt number, result JSON, attempt JSON, started (ms)
-- Returns per attempt: 'SUCCESS', 'REVOKED' (cancelled meanwhile) or 'STALE' (someone else acked).
local root, group, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i = 1, #KEYS do
  local a = 5 + (i - 1) * 6
  local stream, key, entry = KEYS[i], root .. 'task:' .. ARGV[a], ARGV[a + 1]
  local n, result, attempt, started = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  if redis.call('XACK', stream, group, entry) == 1 then
    redis.call('XDEL', stream, entry)
    local state = redis.call('HGET', key, 'state')
    if state == 'REVOKED' then
      redis.call('HSET', key, 'a:' .. n, attempt, 'attempts', n)
      out[i] = 'REVOKED'
    else
      redis.call('HSET', key, 'state', 'SUCCESS', 'result', result, 'finished_at', now,
        'started_at', started, 'attempts', n, 'progress', 100, 'a:' .. n, attempt)
      out[i] = 'SUCCESS'
    end
    redis.call('PEXPIRE', key, ttl)
  else
    out[i] = 'STALE'
  end
end
return out
