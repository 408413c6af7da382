-- Append one turn to a conversation, once: a turn carrying an event id already recorded (by the
-- same side: customer, agent or system) is ignored, so a redelivered webhook or a retried task never writes a turn twice. Keeps the
-- summary (times, counts) and the retention of both keys.
-- KEYS[1] conversation hash, KEYS[2] conversation log, KEYS[3] the index of conversations by
-- last turn (for the dashboard's list; entries older than the retention are dropped here, and
-- the index itself goes a retention after the last turn of any conversation)
-- ARGV[1] the turn's line, ARGV[2] event id ('' for none), ARGV[3] now (ms), ARGV[4] retention (ms),
-- ARGV[5] platform, ARGV[6] account, ARGV[7] customer, ARGV[8] who ('customer', 'agent' or 'system'),
-- ARGV[9] the conversation's id, ARGV[10] turns kept (the oldest go, and with them their event
-- ids' marks, so a conversation that never goes quiet stays bounded)
-- Returns 1 when appended, 0 when the event was already there.
local conv, log = KEYS[1], KEYS[2]
-- (an event's mark: conv_mark.lua; a reply's mark counts its parts delivered too: sent.lua)
if ARGV[2] ~= '' and redis.call('HSETNX', conv, mark(ARGV[8], ARGV[2]), 1) == 0 then return 0 end
local over = redis.call('RPUSH', log, ARGV[1]) - tonumber(ARGV[10])
if over > 0 then
  for _, old in ipairs(redis.call('LPOP', log, over)) do
    -- a turn's line: `who[:kind] at intent event text` (StoredTurn::encode), or JSON
    local who, event = string.match(old, '^(%a)[^\t]*\t[^\t]*\t[^\t]*\t([^\t]+)\t')
    if not who and string.sub(old, 1, 1) == '{' then
      local ok, turn = pcall(cjson.decode, old)
      if ok and type(turn) == 'table' and type(turn.event_id) == 'string' and type(turn.who) == 'string' then
        who, event = turn.who, turn.event_id
      end
    end
    if who then redis.call('HDEL', conv, mark(who, event)) end
  end
end
if redis.call('HSETNX', conv, 'created_at', ARGV[3]) == 1 then
  redis.call('HSET', conv, 'platform', ARGV[5], 'account', ARGV[6], 'customer', ARGV[7])
end
redis.call('HSET', conv, 'updated_at', ARGV[3])
redis.call('HINCRBY', conv, 'turns:' .. ARGV[8], 1)
redis.call('PEXPIRE', conv, ARGV[4])
redis.call('PEXPIRE', log, ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[9])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
