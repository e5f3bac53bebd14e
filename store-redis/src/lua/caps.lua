-- weir's caps (weir_core::caps): one scope's slots and chat bucket, one
-- call per operation, keys of one hash tag ({u:USER} or {ip:ADDR}).
--
-- KEYS[1]: the scope's slots of one kind (sorted set: holder -> expiry ms)
-- KEYS[2]: the scope's chat bucket (hash: u = units, t = as of ms)
-- ARGV[1]: op (admit | release | keep); ARGV[2]: at_ms (the caller's
-- clock, never Redis's); ARGV[3]: slack ms (how much longer than its
-- logical window a key lives).
--
-- Integers are written with %.0f (Lua's default %.14g would round ms
-- timestamps); every value here stays far below 2^53.

local op = ARGV[1]
local at = tonumber(ARGV[2])
local slack = tonumber(ARGV[3])
local UNIT = 60000

local function int(x)
  return string.format('%.0f', x)
end

local function purge()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(at))
end

if op == 'admit' then
  -- ARGV[4] holder, [5] limit (0: no slot), [6] ttl ms, [7] chats per
  -- minute (0: no bucket), [8] burst, [9] retry_after_ms of a slot refusal
  local holder, limit, ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
  local per_min, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
  if limit > 0 then
    purge()
    if not redis.call('ZSCORE', KEYS[1], holder)
        and redis.call('ZCARD', KEYS[1]) >= limit then
      return {'limited', 'slots', ARGV[9]}
    end
  end
  if per_min > 0 then
    local cap = math.max(burst, 1) * UNIT
    local b = redis.call('HMGET', KEYS[2], 'u', 't')
    local units, last = cap, at
    if b[1] then
      units, last = tonumber(b[1]), tonumber(b[2])
    end
    local elapsed = math.max(at - last, 0)
    units = math.min(cap, units + elapsed * per_min)
    if at > last then
      last = at
    end
    if units < UNIT then
      return {'limited', 'rate', int(math.ceil((UNIT - units) / per_min))}
    end
    units = units - UNIT
    redis.call('HSET', KEYS[2], 'u', int(units), 't', int(last))
    -- Gone once full again: no bucket is a full one.
    redis.call('PEXPIRE', KEYS[2], int(math.ceil((cap - units) / per_min) + slack))
  end
  if limit > 0 then
    redis.call('ZADD', KEYS[1], int(at + ttl), holder)
    redis.call('PEXPIRE', KEYS[1], int(ttl + slack))
  end
  return {'admitted'}
elseif op == 'release' then
  -- ARGV[4] holder
  purge()
  redis.call('ZREM', KEYS[1], ARGV[4])
  return {'ok'}
elseif op == 'keep' then
  -- ARGV[4] ttl ms, ARGV[5..] holders
  purge()
  local ttl = tonumber(ARGV[4])
  for i = 5, #ARGV do
    redis.call('ZADD', KEYS[1], 'XX', int(at + ttl), ARGV[i])
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], int(ttl + slack))
  end
  return {'ok'}
end
return redis.error_reply('caps: unknown op ' .. tostring(op))
