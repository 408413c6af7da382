-- Delete dead letters for good; their task records expire after the retention.
-- KEYS[1] dlq stream, KEYS[2] dlq per-lane counts; ARGV[1] key root, ARGV[2] retention (ms), ARGV[3..] entry ids
-- Returns the number deleted.
local dlq, counts, root, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local got = redis.call('XRANGE', dlq, ARGV[i], ARGV[i])
  if #got > 0 then
    local raw, id, lane = got[1][2], nil, nil
    for j = 1, #raw, 2 do
      if raw[j] == 'task_id' then id = raw[j + 1] elseif raw[j] == 'lane' then lane = raw[j + 1] end
    end
    redis.call('XDEL', dlq, ARGV[i])
    if lane then redis.call('HINCRBY', counts, lane, -1) end
    if id then redis.call('PEXPIRE', root .. 'task:' .. id, ttl) end
    n = n + 1
  end
end
return n
