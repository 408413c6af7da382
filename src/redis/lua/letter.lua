-- Shared by the scripts that take a dead letter out of the DLQ (fail, when DLQ_MAX drops the
-- oldest; redrive; dlq_delete; prepended to each). A dead task's record does not copy what its
-- dead letter holds — the payload and the attempt log (fail.lua) — so when the letter goes,
-- they go back into the record, which outlives it.

-- A stream entry's flat field list as a table.
local function letter_fields(raw)
  local f = {}
  for j = 1, #raw, 2 do f[raw[j]] = raw[j + 1] end
  return f
end

-- Put letter `f`'s attempt log (and, unless `no_payload`, its payload) back into record `key`,
-- if the record is still there.
local function letter_back(key, f, no_payload)
  if redis.call('EXISTS', key) == 0 then return end
  local back = {}
  if f.payload and not no_payload then back = {'payload', f.payload} end
  local ok, attempts = pcall(cjson.decode, f.attempts or '[]')
  if ok and type(attempts) == 'table' then
    for _, a in ipairs(attempts) do
      if type(a) == 'table' and tonumber(a.attempt) then
        back[#back + 1] = 'a:' .. string.format('%d', a.attempt)
        back[#back + 1] = cjson.encode(a)
      end
    end
  end
  if #back > 0 then redis.call('HSET', key, unpack(back)) end
end
