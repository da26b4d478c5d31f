-- Apply one batch of event-log entries to the fresh online state, atomically (store/fresh.py).
--
-- ARGV[1] prefix, ARGV[2] partition, ARGV[3] now (ms, wall clock), ARGV[4] how far back a
-- user's recent events are kept (ms), ARGV[5] a user's recent events' TTL (ms), ARGV[6] the item
-- counters' and applied ids' TTL (ms), ARGV[7] the most recent events kept per user, ARGV[8]
-- '1' when the batch reaches the end of the log (the partition is caught up at ARGV[3]),
-- ARGV[9] the most live sales kept (older ones are in the next nightly snapshot), ARGV[10] the
-- most live listings kept (likewise), then one record of 11 arguments per log entry, in log
-- order:
--   'e', position hi, position lo, event id, id bucket, user id, item id, event type, ts ms,
--        day (yyyymmdd), second of the day
--   'l', position hi, position lo, item id, listing record, then six empty arguments
--   'x', position hi, position lo, then eight empty arguments (quarantined: only the position)
-- An entry at or before the partition's applied position was applied by an earlier call (a
-- batch re-read after a crash) and is skipped; an event id applied before on its day is counted
-- once. Returns {applied, duplicate ids, replayed entries, listings, flags, newly sold item
-- ids...}: flags has a character per event record in order, 1 if applied now, 0 if skipped.

local prefix, partition = ARGV[1], ARGV[2]
local keep_ms, user_ttl, day_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local max_entries = tonumber(ARGV[7])
local caught_up = ARGV[8] == '1'
local max_sales = tonumber(ARGV[9])
local max_listings = tonumber(ARGV[10])
local base = prefix .. ':fresh'
local ENTRY = 16
local SLOTS = 4
local ITEM_DAY_BYTES = 16 + 16 * SLOTS
local now_ms = tonumber(ARGV[3])
local ITEM_DAY = '<I4I4I4i4' .. string.rep('i4I4I4I4', SLOTS)

local applied_hi, applied_lo = -1, -1
local stored = redis.call('HGET', base .. ':applied', partition)
if stored then
  local dash = string.find(stored, '-', 1, true)
  applied_hi = tonumber(string.sub(stored, 1, dash - 1))
  applied_lo = tonumber(string.sub(stored, dash + 1))
end

local function after_applied(hi, lo)
  return hi > applied_hi or (hi == applied_hi and lo > applied_lo)
end

-- a value of ours, or false: a key of another type or a value of a wrong size is started afresh
-- (never an error half way through a batch: Redis keeps a failed script's earlier writes)
local function our_value(key, multiple)
  local ok, value = pcall(redis.call, 'GET', key)
  if not ok or not value or string.len(value) % multiple ~= 0 then
    return false
  end
  return value
end

-- a user's recent events grow by APPEND (amortised O(1)); the value is rewritten only when its
-- oldest entry is more than PRUNE_SLACK_MS past keeping, or it holds twice the most kept: then
-- the entries older than the window and beyond the most kept are dropped at once
local PRUNE_SLACK_MS = 60000
local function remember_user_event(user, item, kind, ts)
  local key = base .. ':u:' .. user
  local entry = struct.pack('<i8I4B', ts, item, kind) .. '\0\0\0'
  local ok, size = pcall(redis.call, 'STRLEN', key)
  if not ok or size == 0 or size % ENTRY ~= 0 then -- none yet, or not ours: start afresh
    redis.call('SET', key, entry, 'PX', user_ttl)
    return
  end
  -- an event stamped ahead of the clock must not push out events still in the window
  local keep_from = math.min(ts, now_ms) - keep_ms
  local oldest = struct.unpack('<i8', redis.call('GETRANGE', key, 0, 7))
  if oldest >= keep_from - PRUNE_SLACK_MS and size / ENTRY < 2 * max_entries then
    redis.call('APPEND', key, entry)
    redis.call('PEXPIRE', key, user_ttl)
    return
  end
  local value = redis.call('GET', key)
  local offset = 0
  while offset < size and struct.unpack('<i8', value, offset + 1) < keep_from do
    offset = offset + ENTRY
  end
  local entries = (size - offset) / ENTRY + 1
  if entries > max_entries then
    offset = offset + (entries - max_entries) * ENTRY
  end
  redis.call('SET', key, string.sub(value, offset + 1) .. entry, 'PX', user_ttl)
end

-- counter index of an event type: impression 1, click 2, like and save 3 (bags, purchases: none)
local COUNTER = {[0] = 1, [1] = 2, [2] = 3, [3] = 3}

local function count_item_event(day, item, kind, second)
  local counter = COUNTER[kind]
  if not counter then
    return
  end
  local key = base .. ':i:' .. day .. ':' .. item
  local value = our_value(key, ITEM_DAY_BYTES)
  if value and string.len(value) ~= ITEM_DAY_BYTES then
    value = false
  end
  local f
  if value then
    f = {struct.unpack(ITEM_DAY, value)}
    f[#f] = nil -- struct.unpack's last result is the next position
  else
    f = {0, 0, 0, -1}
    for s = 0, SLOTS - 1 do
      f[5 + 4 * s], f[6 + 4 * s], f[7 + 4 * s], f[8 + 4 * s] = -1, 0, 0, 0
    end
  end
  local slot, free, oldest = nil, nil, nil
  for s = 0, SLOTS - 1 do
    local at = 5 + 4 * s
    if f[at] == second then
      slot = at
    elseif f[at] < 0 then
      free = free or at
    elseif not oldest or f[at] < f[oldest] then
      oldest = at
    end
  end
  if not slot and free then
    slot = free
    f[slot], f[slot + 1], f[slot + 2], f[slot + 3] = second, 0, 0, 0
  elseif not slot and oldest and second > f[oldest] then
    for c = 1, 3 do
      f[c] = f[c] + f[oldest + c]
    end
    if f[oldest] > f[4] then
      f[4] = f[oldest]
    end
    slot = oldest
    f[slot], f[slot + 1], f[slot + 2], f[slot + 3] = second, 0, 0, 0
  end
  if slot then
    f[slot + counter] = f[slot + counter] + 1
  else -- older than every slot: into the base
    f[counter] = f[counter] + 1
    if second > f[4] then
      f[4] = second
    end
  end
  redis.call('SET', key, struct.pack(ITEM_DAY, unpack(f)), 'PX', day_ttl)
end

-- add an item to a live set (sold, listed) scored by the arrival sequence, once; now and then
-- keep only the latest ``most`` (older ones are in the next nightly snapshot). True when added.
local function add_latest(key, item, most)
  local seq = redis.call('INCR', base .. ':seq')
  if redis.call('ZADD', key, 'NX', seq, item) == 0 then
    return false
  end
  if seq % 1000 == 0 then
    local kept = redis.call('ZCARD', key)
    if kept > most then
      redis.call('ZREMRANGEBYRANK', key, 0, kept - most - 1)
    end
  end
  return true
end

local applied, duplicates, replayed, listings = 0, 0, 0, 0
local sold, flags = {}, {}
local last_position, last_event_ts = nil, nil
for i = 11, #ARGV, 11 do
  local kind = ARGV[i]
  local hi, lo = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if not after_applied(hi, lo) then
    replayed = replayed + 1
    if kind == 'e' then
      flags[#flags + 1] = '0'
    end
  else
    last_position = ARGV[i + 1] .. '-' .. ARGV[i + 2]
    if kind == 'e' then
      local event_id, bucket = ARGV[i + 3], ARGV[i + 4]
      local user, item = ARGV[i + 5], ARGV[i + 6]
      local event_type, ts = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
      local day, second = ARGV[i + 9], tonumber(ARGV[i + 10])
      local ids = base .. ':ids:' .. day .. ':' .. bucket
      local kind_of = redis.call('TYPE', ids).ok
      if kind_of ~= 'hash' and kind_of ~= 'none' then
        redis.call('DEL', ids) -- not ours: a hash from here on
      end
      if redis.call('HSETNX', ids, event_id, '1') == 0 then
        duplicates = duplicates + 1
        flags[#flags + 1] = '0'
      else
        redis.call('PEXPIRE', ids, day_ttl)
        remember_user_event(user, tonumber(item), event_type, ts)
        count_item_event(day, item, event_type, second)
        if event_type == 5 then -- a purchase: the item is sold from now on
          if add_latest(base .. ':sold', item, max_sales) then
            sold[#sold + 1] = item
          end
        end
        applied = applied + 1
        flags[#flags + 1] = '1'
        last_event_ts = ARGV[i + 8]
      end
    elseif kind == 'l' then
      local item = ARGV[i + 3]
      -- the first record of a listing stays, as the listed set and the landing keep the first
      redis.call('SET', base .. ':listing:' .. item, ARGV[i + 4], 'NX', 'PX', day_ttl)
      add_latest(base .. ':listed', item, max_listings)
      listings = listings + 1
    end
  end
end
if last_position then
  redis.call('HSET', base .. ':applied', partition, last_position)
end
if caught_up or last_event_ts then
  -- progress: when the partition was last caught up (ms) and the last applied event's time
  local was = redis.call('HGET', base .. ':progress', partition)
  local was_caught, was_ts = '0', '0'
  if was then
    local comma = string.find(was, ',', 1, true)
    was_caught, was_ts = string.sub(was, 1, comma - 1), string.sub(was, comma + 1)
  end
  redis.call('HSET', base .. ':progress', partition,
    (caught_up and ARGV[3] or was_caught) .. ',' .. (last_event_ts or was_ts))
end
local result = {applied, duplicates, replayed, listings, table.concat(flags)}
for _, item in ipairs(sold) do
  result[#result + 1] = item
end
return result
