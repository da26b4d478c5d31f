-- Take or renew a lease: KEYS[1] the lease, ARGV[1] the holder, ARGV[2] its time to live (ms).
-- Returns {1} when the caller holds it now, else {0, holder, ms left}.
local held = redis.call('GET', KEYS[1])
if not held or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, held, redis.call('PTTL', KEYS[1])}
