-- rankflow commit_version: the one atomic step that makes a fully written version visible.
--
-- KEYS[1] = current pointer, KEYS[2] = previous pointer,
-- KEYS[3] = the new version's meta hash, KEYS[4] = a key the version must have (a list
-- version's fallback list, a feature version's schema)
-- ARGV[1] = version id, ARGV[2] = namespace {prefix}:{surface},
-- ARGV[3] = user count (checked by the caller), ARGV[4] = publication time (ISO 8601, UTC)
--
-- Returns {status, current, previous} after the call. Status is one of:
--   switched       the version is now current; the old current became previous
--   unchanged      the version already was current (a repeated commit)
--   skipped_older  refused: its ds is older than the current version's ds (a backfill)
--   missing_meta / missing_fallback (KEYS[4]) / state_<state>   refused: not committable
local version = ARGV[1]
local cur = redis.call('GET', KEYS[1])
local prev = redis.call('GET', KEYS[2])
if cur == version then
  return {'unchanged', cur, prev}
end
local state = redis.call('HGET', KEYS[3], 'state')
if not state then
  return {'missing_meta', cur, prev}
end
if state ~= 'writing' and state ~= 'refused' then
  return {'state_' .. state, cur, prev}
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  return {'missing_fallback', cur, prev}
end
if cur then
  local cur_ds = redis.call('HGET', ARGV[2] .. ':v:' .. cur .. ':meta', 'ds')
  local new_ds = redis.call('HGET', KEYS[3], 'ds')
  -- ds is ISO YYYY-MM-DD, so string order is date order; an equal ds (a retry) replaces
  if cur_ds and new_ds and new_ds < cur_ds then
    redis.call('HSET', KEYS[3], 'state', 'refused', 'refused', 'skipped_older')
    return {'skipped_older', cur, prev}
  end
  redis.call('SET', KEYS[2], cur)
end
redis.call('SET', KEYS[1], version)
redis.call('HSET', KEYS[3], 'state', 'published', 'users', ARGV[3], 'published_at', ARGV[4])
return {'switched', version, cur}
