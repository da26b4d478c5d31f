-- rankflow relist: replace or remove one user's list in a bucketed version (the sold-item repair).
--
-- KEYS[1] = the user's bucket, {prefix}:{surface}:v:{version}:b:{user id mod user_buckets}
-- ARGV[1] = user id as text
-- ARGV[2] = the new list (u32le), or the empty string to remove the user's list (the reader then
--           serves the fallback list, as for an unknown user)
--
-- Only a list that exists is touched, like SET XX KEEPTTL on a key of its own: a bucket that
-- expired is never re-created without its TTL. Returns 1 when changed, 0 when not there.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
if ARGV[2] == '' then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
