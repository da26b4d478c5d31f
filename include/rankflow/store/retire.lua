-- rankflow retire: mark one old version as expiring, unless it is current or previous.
--
-- KEYS[1] = current pointer, KEYS[2] = previous pointer,
-- KEYS[3] = the version's meta hash, KEYS[4] = the version's fallback key
-- ARGV[1] = version id, ARGV[2] = expiry time to use if none is recorded yet (unix seconds)
--
-- Returns 'protected' (current or previous: never expired), 'gone' (meta already expired), or
-- the version's expiry time (unix seconds). The time is recorded once in the meta hash, so
-- re-running the retirement never pushes it back; the caller then EXPIREATs the user keys.
if redis.call('GET', KEYS[1]) == ARGV[1] or redis.call('GET', KEYS[2]) == ARGV[1] then
  return 'protected'
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'gone'
end
redis.call('HSETNX', KEYS[3], 'expire_at', ARGV[2])
redis.call('HSET', KEYS[3], 'state', 'retired')
local at = redis.call('HGET', KEYS[3], 'expire_at')
redis.call('EXPIREAT', KEYS[3], at)
redis.call('EXPIREAT', KEYS[4], at)
return at
