-- rankflow rollback: swap current and previous atomically, or change nothing.
--
-- KEYS[1] = current pointer, KEYS[2] = previous pointer
-- ARGV[1] = namespace {prefix}:{surface}, ARGV[2] = the previous version the caller checked
--
-- Returns {status, current, previous} after the call. Status is one of:
--   rolled_back        previous is now current and current is now previous
--   no_previous        refused: there is no previous version
--   conflict           refused: previous changed since the caller checked it
--   previous_missing   refused: its meta or fallback key is gone
--   previous_expiring  refused: its keys carry a TTL (it is being retired)
local cur = redis.call('GET', KEYS[1])
local prev = redis.call('GET', KEYS[2])
if not prev then
  return {'no_previous', cur, prev}
end
if prev ~= ARGV[2] then
  return {'conflict', cur, prev}
end
local base = ARGV[1] .. ':v:' .. prev
local meta_ttl = redis.call('PTTL', base .. ':meta')
local fallback_ttl = redis.call('PTTL', base .. ':fallback')
if meta_ttl == -2 or fallback_ttl == -2 then
  return {'previous_missing', cur, prev}
end
if meta_ttl ~= -1 or fallback_ttl ~= -1 or redis.call('HGET', base .. ':meta', 'state') ~= 'published' then
  return {'previous_expiring', cur, prev}
end
redis.call('SET', KEYS[1], prev)
if cur then
  redis.call('SET', KEYS[2], cur)
else
  redis.call('DEL', KEYS[2])
end
return {'rolled_back', prev, cur}
