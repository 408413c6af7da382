-- Remove acknowledged entries from a lane, never one that is pending or not yet delivered:
-- first everything older than the oldest pending entry (or, with nothing pending, up to the
-- group's read position), then — bounded per call — acknowledged entries stuck between pending
-- ones (an entry held by a slow or dead worker keeps XTRIM from reaching past it).
-- KEYS[1] lane stream; ARGV[1] group, ARGV[2] most pending entries to look at in one call
-- Returns {entries removed, 1 when there may be more to remove between pending entries}.
local stream, group, max = KEYS[1], ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', stream) == 0 then return {0, 0} end
local before = redis.call('XLEN', stream)
local last
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local f = {}
  for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
  if f['name'] == group then last = f['last-delivered-id'] end
end
if not last then return {0, 0} end
local summary = redis.call('XPENDING', stream, group)
local more = 0
if summary[1] == 0 then
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  if ms then redis.call('XTRIM', stream, 'MINID', ms .. '-' .. (tonumber(seq) + 1)) end
else
  redis.call('XTRIM', stream, 'MINID', summary[2])
  local pend = redis.call('XPENDING', stream, group, '-', '+', max)
  local pending = {}
  for _, p in ipairs(pend) do pending[p[1]] = true end
  -- Only up to the last pending entry looked at (beyond it others may be pending), or, when
  -- every pending entry was looked at, up to the read position.
  local upto = (#pend < max) and last or pend[#pend][1]
  if #pend >= max then more = 1 end
  local entries = redis.call('XRANGE', stream, summary[2], upto, 'COUNT', max * 4)
  local acked = {}
  for _, e in ipairs(entries) do
    if not pending[e[1]] then acked[#acked + 1] = e[1] end
  end
  if #entries >= max * 4 then more = 1 end
  if #acked > 0 then redis.call('XDEL', stream, unpack(acked)) end
end
return {before - redis.call('XLEN', stream), more}
