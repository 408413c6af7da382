-- Shared by the scripts that keep a conversation's event marks (conv_append, sent; prepended to
-- each): an event's mark names who wrote the turn too, so a customer's message id cannot pass
-- for the id of a reply or of a receipt; the id is kept as 64 bits of its SHA-1 (a conversation
-- holds a few hundred marks at most)
local function mark(who, id) return 'e:' .. string.sub(who, 1, 1) .. string.sub(redis.sha1hex(id), 1, 16) end
