-- Which parts of a reply have gone out (delivery.send sends each part once). A reply recorded
-- in its conversation counts them in its turn's mark in the conversation's hash: conv_append.lua
-- writes the mark as 1 when the turn is recorded, this makes it 1 + n once the first n parts went
-- out, and the mark goes when the turn is trimmed — a field that already was there, no key of its
-- own. A reply whose turn is not there (none given, or trimmed meanwhile) keeps a key per part
-- sent instead, `sent:<reply>:<part>`, for the retention.
-- A part being sent is taken first: `sending:<reply>:<part>` names the attempt sending it. A take
-- lasts a few seconds until the attempt confirms it, just before the send, for as long as a send
-- and the recording of it can take. Another attempt of the same reply (the task reclaimed from a
-- worker cut off from Redis after it sent, before its mark got through) waits for that mark
-- instead of sending the part again; the key goes with the mark, or with its expiry if the sender
-- died. A take whose answer was lost (a link that held it) is never confirmed, so it holds the
-- part up only briefly.
-- KEYS[1] conversation hash, KEYS[2] the part's own key, KEYS[3] the part's sending key
-- ARGV[1] 'take', 'confirm', 'mark' or 'release', ARGV[2] the reply turn's event id ('' for
-- none), ARGV[3] the part (from 0), ARGV[4] retention of a part's own key (ms), ARGV[5] the
-- attempt's token, ARGV[6] how long a take lasts (ms): unconfirmed for 'take', confirmed for
-- 'confirm'
-- take: -1 when the part went out already; 0 when this attempt may send it (taken); else how
-- long (ms) another attempt's take still lasts. confirm: 0 when the take is still this
-- attempt's (now for long), else -1. mark: records that it went out. release: gives up this
-- attempt's take (the send failed). Both return 0.
local part = tonumber(ARGV[3])
local field = ARGV[2] ~= '' and mark('agent', ARGV[2])
local count = field and tonumber(redis.call('HGET', KEYS[1], field))
local op = ARGV[1]
if op == 'take' then
  if (count and part < count - 1) or redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
  if redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[6]) then return 0 end
  if redis.call('GET', KEYS[3]) == ARGV[5] then return 0 end
  return math.max(redis.call('PTTL', KEYS[3]), 1)
end
if op == 'confirm' then
  if redis.call('GET', KEYS[3]) ~= ARGV[5] then return -1 end
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
  return 0
end
if op == 'release' then
  if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
  return 0
end
if count then
  if count < part + 2 then redis.call('HSET', KEYS[1], field, part + 2) end
else
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[4])
end
redis.call('DEL', KEYS[3])
return 0
