-- Shared by the scripts that settle a task (finish, fail, cancel, claim; prepended to each): wake
-- the first task parked behind an order key (turn.lua parks them), so it looks at its turn again
-- now. Only the first: when it settles it wakes the next, so a long queue behind one key costs one
-- claim per task, not one per task per settle. A parked entry claimed meanwhile (its safety net
-- fired) is left alone (ZADD XX); it wakes the next when it settles.
local function wake_parked(root, okey, now)
  if not okey or okey == '' then return end
  local parked = key_parked(root, okey)
  local all = redis.call('HGETALL', parked)
  local first, where
  for j = 1, #all, 2 do
    local seq = tonumber(all[j])
    if seq and (not first or seq < first) then first, where = seq, all[j + 1] end
  end
  if not first then return end
  local lane, entry = string.match(where, '^([^\t]+)\t(.+)$')
  if lane then redis.call('ZADD', key_retry(root, lane), 'XX', now, entry) end
  redis.call('HDEL', parked, first)
end

-- A task numbered `seq` under an order key has succeeded: wake the next parked task, and when
-- this was the last task numbered and every one before it has settled too, drop the sequence
-- itself. It holds nothing then that a fresh one would not (the next task starts a new sequence
-- at 1, with nothing before it), so an idle conversation keeps no order key for the retention.
-- A task that died keeps the sequence (until it expires): redriven, it takes its place again
-- ahead of whatever was queued behind it meanwhile.
local function settle_order(root, okey, seq, now)
  if not okey or okey == '' then return end
  wake_parked(root, okey, now)
  if not seq then return end
  local order = key_order(root, okey)
  local f = redis.call('HMGET', order, 'next', 'done')
  if f[1] == seq and tonumber(f[2] or '0') >= tonumber(seq) - 1 then redis.call('DEL', order) end
end
