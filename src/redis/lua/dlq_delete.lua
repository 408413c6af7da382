-- Delete dead letters for good; their task records, given back the payload and attempt log the
-- letters held, expire after the retention.
-- KEYS[1] dlq stream, KEYS[2] dlq per-lane counts; ARGV[1] key root, ARGV[2] retention (ms), ARGV[3..] entry ids
-- Returns the number deleted.
local dlq, counts, root, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local got = redis.call('XRANGE', dlq, ARGV[i], ARGV[i])
  if #got > 0 then
    local f = letter_fields(got[1][2])
    redis.call('XDEL', dlq, ARGV[i])
    if f.lane then redis.call('HINCRBY', counts, f.lane, -1) end
    if f.task_id and f.task_id ~= '' then
      letter_back(key_task(root, f.task_id), f)
      redis.call('PEXPIRE', key_task(root, f.task_id), ttl)
    end
    n = n + 1
  end
end
return n
