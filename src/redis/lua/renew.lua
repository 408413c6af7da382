-- Keep a live worker's claims: reset the idle time of the entries it still owns so no other
-- worker reclaims them. Entries it no longer owns (reclaimed, acked elsewhere) are returned so
-- the worker can stop the work it holds for them.
-- KEYS[1] lane stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == me then
    redis.call('XCLAIM', stream, group, me, 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
