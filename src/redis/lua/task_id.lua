-- A new task's id, named after its lane entry (the same as `task_id_for_entry` in
-- src/engine/task.rs): a UUIDv7 whose time is the entry's millisecond, whose 12 bits after the
-- version say the lane (its index in priority order) and whose last 62 bits are the entry's
-- sequence number. A queued task is its entry until a worker takes it; the id finds the entry.
local function task_id(entry, lane_index)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  local p48 = 281474976710656
  return string.format('%08x-%04x-7%03x-%04x-%012x', math.floor(ms / 65536), ms % 65536, lane_index,
    32768 + math.floor(seq / p48) % 16384, seq % p48)
end
