-- Shared by the scripts that settle tasks for good (finish: SUCCESS, fail: FAILURE, cancel:
-- REVOKED; prepended to each): the partition's `history` stream, the index of the tasks that
-- finished lately which `GET /tasks` and the Tasks page list newest first. One entry a call,
-- holding every task the call settled, so a batch of hundreds costs one entry: the entry's id is
-- when they finished (Redis's clock); its fields are, per task in the order they settled, the
-- task id and `kind TAB lane TAB state TAB run ms` (run '' when it never ran).
-- Beside it, `history:sizes` lists the entries oldest first as `<entry id> <tasks> <tasks noted
-- ever, this entry's included>`, so that neither the length nor the oldest entry's size needs an
-- entry read. Entries go from the head while what is left still holds `cap` tasks (the
-- partition's share of TASK_HISTORY; 0 keeps none).

-- What one task adds to a call's entry (a list of field, value, …).
local function noted(list, id, kind, lane, state, run)
  list[#list + 1] = id
  list[#list + 1] = table.concat({kind, lane, state, run}, '\t')
end

local function note_finished(root, cap, list)
  if cap <= 0 or #list == 0 then return end
  local key, sizes = key_history(root), key_history_sizes(root)
  local n = #list / 2
  local function size(item)
    local id, count, ever = string.match(item or '', '^(%S+) (%d+) (%d+)$')
    return id, tonumber(count), tonumber(ever)
  end
  local _, _, ever = size(redis.call('LINDEX', sizes, -1))
  ever = (ever or 0) + n
  local head_id, head_count, head_ever = size(redis.call('LINDEX', sizes, 0))
  while head_id and ever - head_ever >= cap do
    -- what is left after the head holds the cap
    redis.call('XDEL', key, head_id)
    redis.call('LPOP', sizes)
    head_id, head_count, head_ever = size(redis.call('LINDEX', sizes, 0))
  end
  local entry = redis.call('XADD', key, '*', unpack(list))
  redis.call('RPUSH', sizes, entry .. ' ' .. n .. ' ' .. ever)
end
