-- rankflow begin_version: register a version for writing (idempotent for a retried writer).
--
-- KEYS[1] = version meta hash, KEYS[2] = current pointer, KEYS[3] = previous pointer,
-- KEYS[4] = versions sorted set
-- ARGV[1] = version id, ARGV[2] = creation time in ms (sorted-set score),
-- ARGV[3..] = meta field/value pairs (including state=writing)
--
-- Returns 'writing' when the version may be written, otherwise the state that forbids it.
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'writing' then
  return state
end
if redis.call('GET', KEYS[2]) == ARGV[1] or redis.call('GET', KEYS[3]) == ARGV[1] then
  return 'published'
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 'writing'
