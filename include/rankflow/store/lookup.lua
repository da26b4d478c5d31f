#!lua flags=no-writes
-- rankflow lookup: one round trip, atomic read of the current version and one user's list.
--
-- KEYS[1] = {prefix}:{surface}:current
-- ARGV[1] = {prefix}:{surface}              (the namespace)
-- ARGV[2] = user id as text                 (integers in decimal, no padding)
--
-- Returns nil when the surface has no current version, otherwise a 3-element array:
--   [1] version id (string)
--   [2] 0 = the user's own list, 1 = the fallback list (user unknown in this version)
--   [3] the list: item ids as little-endian uint32 concatenated in rank order (nil only if the
--       version's fallback key is missing, which a committed version never allows)
--
-- Layout 2 keeps the lists in hash buckets: the version's meta names their count
-- (user_buckets), the user's bucket is {version}:b:{user id mod count} and its field is the
-- user id. A version without user_buckets (layout 1) has a key per user, {version}:u:{user id}.
-- The key names are derived from the pointer inside the script, so this script needs a
-- standalone (or replicated) Redis: in Redis Cluster they may live in other slots; use the
-- cached-version path there. Flagged no-writes, so EVAL_RO/EVALSHA_RO on a replica work.
local version = redis.call('GET', KEYS[1])
if not version then
  return nil
end
local base = ARGV[1] .. ':v:' .. version
local buckets = redis.call('HGET', base .. ':meta', 'user_buckets')
local value
if buckets then
  local id = tonumber(ARGV[2])
  if id and id >= 0 and id == math.floor(id) then
    value = redis.call('HGET', base .. ':b:' .. string.format('%d', id % tonumber(buckets)), ARGV[2])
  end
else
  value = redis.call('GET', base .. ':u:' .. ARGV[2])
end
if value then
  return {version, 0, value}
end
return {version, 1, redis.call('GET', base .. ':fallback')}
