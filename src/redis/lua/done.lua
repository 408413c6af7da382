-- Shared by the scripts that read or write a finished task's record (finish, start, cancel;
-- prepended to each). A task that succeeded leaves one line (finish.lua says what it holds).
-- Tasks whose id is a UUIDv7 (every id made from a lane entry) keep it in a hash shared by the
-- tasks created in the same 256 ms: key `done:` and the id's first 11 characters (its first 40
-- bits of time); field the rest of the id without what every such id has there (the dashes and
-- the version) and without the leading zeros of its last group — `82-7001-8000-00000000000f`
-- is kept as `820018000f`. A hash field costs far less than a key of its own (no key, no expiry
-- entry, no object header), and a bucket of 256 ms stays small enough to free at once when it
-- expires. Other ids (the ULIDs of older tasks) keep a key of their own, `done:<id>`, as every
-- finished record did before; a bucket's key is shorter than any such key, so the two never
-- meet. A bucket expires the retention after the last of its tasks finished.
local function done_at(root, id)
  if string.match(id, '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$') then
    local last = string.gsub(string.sub(id, 25), '^0+', '')
    return key_done(root, string.sub(id, 1, 11)),
      string.sub(id, 12, 13) .. string.sub(id, 16, 18) .. string.sub(id, 20, 23) .. last
  end
  return key_done(root, id), nil
end

local function done_exists(root, id)
  local key, field = done_at(root, id)
  if field and redis.call('HEXISTS', key, field) == 1 then return true end
  -- a record written before records were kept in buckets
  return redis.call('EXISTS', key_done(root, id)) == 1
end

-- ttl: the retention (ms, a string or number)
local function done_write(root, id, line, ttl)
  local key, field = done_at(root, id)
  if not field then
    redis.call('SET', key, line, 'PX', ttl)
    return
  end
  redis.call('HSET', key, field, line)
  -- extended a second past the retention, so the next second's records into this bucket need
  -- not extend it again
  if redis.call('PTTL', key) < tonumber(ttl) then redis.call('PEXPIRE', key, tonumber(ttl) + 1000) end
end
