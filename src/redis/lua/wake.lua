-- Shared by the scripts that settle a task (finish, fail, cancel; prepended to each): wake the
-- tasks parked behind an order key (turn.lua parks them), so each looks at its turn again now.
-- A parked entry claimed meanwhile is left alone (ZADD XX).
local function wake_parked(root, okey, now)
  if not okey or okey == '' then return end
  local parked = root .. 'order:' .. okey .. ':parked'
  local all = redis.call('HGETALL', parked)
  for j = 2, #all, 2 do
    local lane, entry = string.match(all[j], '^([^\t]+)\t(.+)$')
    if lane then redis.call('ZADD', root .. 'retry:' .. lane, 'XX', now, entry) end
  end
  if #all > 0 then redis.call('DEL', parked) end
end
