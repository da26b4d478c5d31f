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
-- The user and fallback key names are derived from the pointer inside the script, so this
-- script needs a standalone (or replicated) Redis: in Redis Cluster they may live in other slots;
-- use the cached-version GET path there. Flagged no-writes, so EVAL_RO/EVALSHA_RO on a replica work.
local version = redis.call('GET', KEYS[1])
if not version then
  return nil
end
local base = ARGV[1] .. ':v:' .. version
local value = redis.call('GET', base .. ':u:' .. ARGV[2])
if value then
  return {version, 0, value}
end
return {version, 1, redis.call('GET', base .. ':fallback')}
