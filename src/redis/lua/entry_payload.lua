-- The payload a lane entry carries (a queued task's record does not hold it), or nil.
local function entry_payload(stream, entry)
  local e = redis.call('XRANGE', stream, entry, entry)[1]
  if not e then return nil end
  for j = 1, #e[2], 2 do
    if e[2][j] == 'payload' then return e[2][j + 1] end
  end
end
