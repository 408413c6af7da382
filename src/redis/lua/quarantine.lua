-- Move a stream entry that is not a task (no id or kind: written by hand or by a foreign
-- producer) to the dead-letter queue with its raw fields, so it neither passes from worker to
-- worker forever nor holds back trimming, and nothing is dropped silently.
-- KEYS[1] dlq stream, KEYS[2] dlq per-lane counts, KEYS[3] lane stream
-- ARGV[1] group, ARGV[2] now (ms), ARGV[3] lane, ARGV[4] entry id, ARGV[5] the entry's fields as JSON
-- Returns the dead letter's id, or false when the entry was no longer pending.
if redis.call('XACK', KEYS[3], ARGV[1], ARGV[4]) == 0 then return false end
local dead = redis.call('XADD', KEYS[1], '*', 'task_id', '', 'kind', '', 'lane', ARGV[3], 'payload', ARGV[5],
  'error', 'malformed stream entry ' .. ARGV[4] .. ': no task id or kind', 'attempts', '[]',
  'failed_at', ARGV[2], 'created_at', ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('XDEL', KEYS[3], ARGV[4])
return dead
