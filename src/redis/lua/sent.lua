-- Which parts of a reply have gone out (delivery.send sends each part once). A reply recorded
-- in its conversation counts them in its turn's mark in the conversation's hash: conv_append.lua
-- writes the mark as 1 when the turn is recorded, this makes it 1 + n once the first n parts went
-- out, and the mark goes when the turn is trimmed — a field that already was there, no key of its
-- own. A reply whose turn is not there (none given, or trimmed meanwhile) keeps a key per part
-- sent instead, `sent:<reply>:<part>`, for the retention.
-- KEYS[1] conversation hash, KEYS[2] the part's own key
-- ARGV[1] 'check' or 'mark', ARGV[2] the reply turn's event id ('' for none), ARGV[3] the part
-- (from 0), ARGV[4] retention of a part's own key (ms)
-- check: returns 1 when the part went out already, else 0; mark: records that it went out.
local part = tonumber(ARGV[3])
local field = ARGV[2] ~= '' and mark('agent', ARGV[2])
local count = field and tonumber(redis.call('HGET', KEYS[1], field))
if ARGV[1] == 'check' then
  if count and part < count - 1 then return 1 end
  return redis.call('EXISTS', KEYS[2])
end
if count then
  if count < part + 2 then redis.call('HSET', KEYS[1], field, part + 2) end
else
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[4])
end
return 0
