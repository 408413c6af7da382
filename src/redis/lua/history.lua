-- Shared by the scripts that settle a task for good (finish: SUCCESS, fail: FAILURE, cancel:
-- REVOKED; prepended to each): one entry in the partition's `history` stream, the index of the
-- tasks that finished lately which `GET /tasks` and the Tasks page list newest first. The
-- entry's id is when the task finished (Redis's clock); its fields are always these five in this
-- order, so Redis keeps their names once per block of entries and an entry holds its values
-- alone (about 70 bytes). Capped at `cap` entries (the partition's share of TASK_HISTORY; 0
-- keeps none): Redis trims whole blocks of 100, so a few more may be kept for a while.
-- run: ms the last attempt ran ('' when the task never ran)
local function note_finished(root, cap, id, kind, lane, state, run)
  if cap <= 0 then return end
  redis.call('XADD', key_history(root), 'MAXLEN', '~', cap, '*',
    'id', id, 'kind', kind, 'lane', lane, 'state', state, 'run', run)
end
