-- A new task's id, named after its lane entry (the same as `task_id_for_entry` in
-- src/engine/task.rs): a UUIDv7 whose time is the entry's millisecond, whose 12 bits after the
-- version say the lane (its index in priority order) and whose last 62 bits are the entry's
-- sequence number. A queued task is its entry until a worker takes it; the id finds the entry.
-- Entries read together mostly share their millisecond: its part of the id is made once.
local p48 = 281474976710656
local id_ms, id_lane, id_prefix
local function task_id(entry, lane_index)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  if ms ~= id_ms or lane_index ~= id_lane then
    local m = tonumber(ms)
    id_ms, id_lane = ms, lane_index
    id_prefix = string.format('%08x-%04x-7%03x-', math.floor(m / 65536), m % 65536, lane_index)
  end
  seq = tonumber(seq)
  if seq < p48 then return id_prefix .. '8000-' .. string.format('%012x', seq) end
  return id_prefix .. string.format('%04x-%012x', 32768 + math.floor(seq / p48) % 16384, seq % p48)
end
