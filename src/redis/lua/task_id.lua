-- A new task's id, named after its lane entry (the same as `task_id_for_entry` in
-- src/model/task.rs): a UUIDv7 whose time is the entry's millisecond, whose 12 bits after the
-- version say its place (`id_place`: the partition, then the lane's index in priority order in
-- the two low bits) and whose last 62 bits are the entry's
-- sequence number. A queued task is its entry until a worker takes it; the id finds the entry.
-- Entries read together mostly share their millisecond: its part of the id is made once.
local p48 = 281474976710656
local id_ms, id_place, id_prefix
local function task_id(entry, place)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  if ms ~= id_ms or place ~= id_place then
    local m = tonumber(ms)
    id_ms, id_place = ms, place
    id_prefix = string.format('%08x-%04x-7%03x-', math.floor(m / 65536), m % 65536, place)
  end
  seq = tonumber(seq)
  if seq < p48 then return id_prefix .. '8000-' .. string.format('%012x', seq) end
  return id_prefix .. string.format('%04x-%012x', 32768 + math.floor(seq / p48) % 16384, seq % p48)
end
