-- Give the scheduler's lease up, only if this process still holds it: read and delete in one
-- step, so a lease another process took meanwhile is never deleted.
-- KEYS[1] lease (holder's name); ARGV[1] this process's name
-- Returns 1 when it was given up, 0 when another process (or none) held it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
