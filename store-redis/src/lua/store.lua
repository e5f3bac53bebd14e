-- weir's store, as one Redis Lua script. Every operation of the reference
-- model (weir_core::store::model) is one atomic call of this script; the
-- differential test in weir-verification demands equal replies.
--
-- Call: EVALSHA sha 1 KEY op at_ms args...  (or sha 2 KEY FENCE: below)
--   KEY  a conversation's meta key "P:{TAG}:conv" (conversation ops) or a
--        user's presence entries key "P:{TAG}:e" (presence ops), named by
--        store-redis/src/keys.rs (ids escaped there). Every other key the
--        call touches is KEY's name with another suffix, so it shares the
--        hash tag and Redis Cluster keeps them on one shard. The script
--        never reads ids out of a name: channel names come as ARGV.
--   op   snapshot | start | append | cancel | settle | renew | reap | read |
--        reap_live | delete | p_join | p_leave | p_refresh | p_check
--
-- Times are the caller's wall-clock milliseconds (ARGV), never Redis's own
-- clock, so Redis decides leases and windows exactly as the model does.
-- Each record also carries a Redis TTL (relative, with SLACK_MS to spare) so
-- nothing outlives its window if no node ever looks at it again.

local KEY = KEYS[1]
local OP = ARGV[1]
local AT = tonumber(ARGV[2])

local function fmt(n)
  return string.format('%d', n)
end

local function extend(key, ms)
  -- Give `key` a TTL of at least `ms` (never shorten one).
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', key, ms, 'NX')
  redis.call('PEXPIRE', key, ms, 'GT')
end

-- ===================================================================
-- Conversations
-- ===================================================================
-- ARGV: op at conv_json lease_ttl cancel_deadline grace history_limit
--       retention_ms slack_ms epoch ...op args (from ARGV[11])

local function conv_op()
  local P = string.sub(KEY, 1, -6) -- strip ":conv"
  local META = KEY
  local HIST = P .. ':hist'
  local STREAMS = P .. ':streams'
  local CHANNEL = P .. ':ch'
  local CONV = ARGV[3]
  local LEASE_TTL = tonumber(ARGV[4])
  local CANCEL_DEADLINE = tonumber(ARGV[5])
  local GRACE = tonumber(ARGV[6])
  local HISTORY_LIMIT = tonumber(ARGV[7])
  local RETENTION = tonumber(ARGV[8])
  local SLACK = tonumber(ARGV[9])
  local EPOCH = ARGV[10]
  -- The longest a live record may stay untouched before only a reap can end it.
  local LIVE_TTL = LEASE_TTL + CANCEL_DEADLINE + GRACE + SLACK

  local function rkey(id) return P .. ':r:' .. id end
  local function lkey(id) return P .. ':log:' .. id end
  local function ikey(k) return P .. ':idem:' .. k end

  -- KEYS[2], given with a settle or cancel that waits for its replicas
  -- (store-redis/src/replicas.rs): the conversation's fence key, written
  -- first so that the call replicates even when it changes nothing, and a
  -- WAIT after it counts it.
  -- Its settled notice is then the caller's to publish, once the replicas
  -- confirmed the settle: no client hears of an end a failover could lose.
  local FENCED = KEYS[2] ~= nil
  if FENCED then redis.call('SET', KEYS[2], ARGV[2], 'PX', 60000) end

  -- Drop the records whose grace window has passed.
  local function purge()
    local ids = redis.call('ZRANGEBYSCORE', STREAMS, '-inf', AT)
    for _, id in ipairs(ids) do
      redis.call('DEL', rkey(id), lkey(id))
      redis.call('ZREM', STREAMS, id)
    end
  end

  local function load(id)
    if not id then return nil end
    local f = redis.call('HGETALL', rkey(id))
    if #f == 0 then return nil end
    local r = { id = id }
    for i = 1, #f, 2 do r[f[i]] = f[i + 1] end
    r.last = tonumber(r.last)
    r.lease = tonumber(r.lease)
    r.created = tonumber(r.created)
    if r.final then r.final = tonumber(r.final) end
    if r.deadline then r.deadline = tonumber(r.deadline) end
    if r.expires then r.expires = tonumber(r.expires) end
    return r
  end

  -- Write the record's state back, with its TTL.
  local function save(r)
    local k = rkey(r.id)
    local ttl
    if r.st == 's' then
      redis.call('HSET', k, 'st', 's', 'final', fmt(r.final), 'expires', fmt(r.expires),
        'outcome', r.outcome, 'reason', r.reason or '', 'last', fmt(r.last))
      redis.call('HDEL', k, 'lease', 'deadline')
      if r.usage then redis.call('HSET', k, 'usage', r.usage) end
      redis.call('ZADD', STREAMS, r.expires, r.id)
      ttl = r.expires - AT + SLACK
      redis.call('PEXPIRE', k, ttl)
      redis.call('PEXPIRE', lkey(r.id), ttl)
    else
      redis.call('HSET', k, 'st', r.st, 'lease', fmt(r.lease), 'last', fmt(r.last))
      if r.st == 'c' then
        redis.call('HSET', k, 'final', fmt(r.final), 'deadline', fmt(r.deadline))
      end
      ttl = LIVE_TTL
      redis.call('PEXPIRE', k, ttl)
      redis.call('PEXPIRE', lkey(r.id), ttl)
    end
    extend(META, ttl)
    extend(STREAMS, ttl)
  end

  -- ----- the stream state machine (weir_core::stream) -----

  local function recv_cancel(r)
    if r.st == 'a' then
      r.st = 'c'
      r.final = r.last
      r.deadline = AT + CANCEL_DEADLINE
      return 'cancelled'
    elseif r.st == 'c' then
      return 'cancelled'
    end
    return r.outcome -- completed | cancelled | failed
  end

  local function settle_to(r, outcome, reason, final)
    r.st = 's'
    r.outcome = outcome
    r.reason = reason
    r.final = final
    r.expires = AT + GRACE
    return outcome
  end

  local function recv_settle(r, req, reason)
    if r.st == 'a' then
      if req == 'completed' then return settle_to(r, 'completed', nil, r.last) end
      if req == 'failed' then return settle_to(r, 'failed', reason, r.last) end
      return settle_to(r, 'failed', 'aborted', r.last)
    elseif r.st == 'c' then
      return settle_to(r, 'cancelled', nil, r.final)
    end
    return nil
  end

  local function recv_renew(r)
    if r.st == 's' then return false end
    r.lease = math.max(r.lease, AT + LEASE_TTL)
    return true
  end

  local function recv_reap(r)
    if r.st == 'a' and AT >= r.lease then
      return settle_to(r, 'failed', 'owner_lost', r.last)
    elseif r.st == 'c' and (AT >= r.lease or AT >= r.deadline) then
      return settle_to(r, 'cancelled', nil, r.final)
    end
    return nil
  end

  local function reap_due(r)
    if r.st == 'a' then return r.lease end
    if r.st == 'c' then return math.min(r.lease, r.deadline) end
    return nil
  end

  -- ----- history -----

  local function msg_json(id, role, content, status, created, seq)
    return '{"message_id":' .. cjson.encode(id) .. ',"role":"' .. role ..
      '","content":' .. cjson.encode(content) .. ',"status":"' .. status ..
      '","created_at_ms":' .. fmt(created) .. ',"seq":' .. fmt(seq) .. '}'
  end

  local function push_history(json)
    if HISTORY_LIMIT <= 0 then
      redis.call('DEL', HIST)
      return
    end
    redis.call('RPUSH', HIST, json)
    redis.call('LTRIM', HIST, -HISTORY_LIMIT, -1)
    if RETENTION > 0 then redis.call('PEXPIRE', HIST, RETENTION) end
  end

  local function newest(limit)
    if limit <= 0 then return {} end
    return redis.call('LRANGE', HIST, -limit, -1)
  end

  local function find_history(id)
    local prefix = '{"message_id":' .. cjson.encode(id) .. ','
    for _, m in ipairs(redis.call('LRANGE', HIST, 0, -1)) do
      if string.sub(m, 1, #prefix) == prefix then return m end
    end
    return false
  end

  local function log_text(id, upto)
    if upto < 1 then return '' end
    local parts = {}
    for _, e in ipairs(redis.call('XRANGE', lkey(id), '-', fmt(upto) .. '-0')) do
      parts[#parts + 1] = e[2][2]
    end
    return table.concat(parts)
  end

  -- The deltas of chunks from..to, and their append times ('t', written
  -- with chunk timestamps on: '0' for a chunk without one), or false for
  -- the times when no chunk of the range has one.
  local function log_range(id, from, to)
    local out, ts, stamped = {}, {}, false
    if from > to then return out, false end
    for _, e in ipairs(redis.call('XRANGE', lkey(id), fmt(from) .. '-0', fmt(to) .. '-0')) do
      out[#out + 1] = e[2][2]
      local t = e[2][4] or '0'
      if t ~= '0' then stamped = true end
      ts[#ts + 1] = t
    end
    if not stamped then ts = false end
    return out, ts
  end

  local function outcome_json(outcome, reason)
    if outcome == 'failed' then
      return '{"status":"failed","reason":' .. cjson.encode(reason or '') .. '}'
    end
    return '{"status":"' .. outcome .. '"}'
  end

  local function missing(id)
    return { 'missing', find_history(id) }
  end

  -- After a transition to Settled: history, the live slot, the notice.
  local function publish_settled(r)
    save(r)
    local status = r.outcome
    push_history(msg_json(r.id, 'assistant', log_text(r.id, r.final), status, r.created, r.final))
    if redis.call('HGET', META, 'live') == r.id then redis.call('HDEL', META, 'live') end
    if not FENCED then
      redis.call('SPUBLISH', CHANNEL, '{"notice":"settled","conv":' .. CONV .. ',"message_id":' ..
        cjson.encode(r.id) .. ',"outcome":' .. outcome_json(r.outcome, r.reason) ..
        ',"final_seq":' .. fmt(r.final) .. ',"usage":' .. (r.usage or 'null') .. '}')
    end
    return { 'settled', r.outcome, r.reason or false, r.final, 1 }
  end

  local function settled_reply(r)
    if r.st == 's' then
      local reason = false
      if r.outcome == 'failed' then reason = r.reason end
      return { 'settled', r.outcome, reason, r.final, 0 }
    end
    return { 'fenced' }
  end

  local function state_of(r)
    -- st lease final deadline outcome reason expires
    if r.st == 'a' then return { 'a', r.lease, false, false, false, false, false } end
    if r.st == 'c' then return { 'c', r.lease, r.final, r.deadline, false, false, false } end
    local reason = false
    if r.outcome == 'failed' then reason = r.reason end
    return { 's', false, r.final, false, r.outcome, reason, r.expires }
  end

  local function live_record()
    local id = redis.call('HGET', META, 'live')
    if not id then return nil end
    local r = load(id)
    if not r then redis.call('HDEL', META, 'live') end
    return r
  end

  purge()

  -- ----- operations -----

  if OP == 'snapshot' then
    local limit = tonumber(ARGV[11])
    local history = newest(limit)
    local r = live_record()
    local live = false
    if r then
      local deltas, ts = log_range(r.id, 1, r.last)
      live = { r.id, r.reply_to, state_of(r), deltas, r.created, r.owner, ts }
    end
    return { 'snapshot', history, live }

  elseif OP == 'start' then
    local user_json, user_id, message_id, owner, cmid = ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15]
    local context_limit, idem_ttl = tonumber(ARGV[16]), tonumber(ARGV[17])
    if cmid ~= '' then
      local v = redis.call('GET', ikey(cmid))
      if v then
        local u, m, exp = string.match(v, '^(%S+) (%S+) (%S+)$')
        if tonumber(exp) > AT then return { 'duplicate', u, m } end
      end
    end
    local live = live_record()
    if live then
      -- A live reply whose owner is gone does not block the conversation.
      if recv_reap(live) then
        publish_settled(live)
      else
        return { 'busy', live.id }
      end
    end
    if redis.call('EXISTS', rkey(message_id)) == 1 or find_history(user_id) then
      -- A repeated nonce: refuse rather than overwrite.
      return { 'busy', message_id }
    end
    local token = redis.call('HINCRBY', META, 'next_token', 1)
    push_history(user_json)
    local context = newest(context_limit)
    redis.call('HSET', rkey(message_id), 'reply_to', user_id, 'owner', owner, 'token', fmt(token),
      'created', fmt(AT), 'epoch', EPOCH)
    redis.call('ZADD', STREAMS, '+inf', message_id)
    save({ id = message_id, st = 'a', lease = AT + LEASE_TTL, last = 0 })
    redis.call('HSET', META, 'live', message_id, 'latest', message_id)
    if cmid ~= '' then
      redis.call('SET', ikey(cmid), user_id .. ' ' .. message_id .. ' ' .. fmt(AT + idem_ttl),
        'PX', idem_ttl + SLACK)
    end
    redis.call('SPUBLISH', CHANNEL, '{"notice":"started","conv":' .. CONV .. ',"user_message":' ..
      user_json .. ',"message_id":' .. cjson.encode(message_id) .. ',"owner":' ..
      cjson.encode(owner) .. '}')
    return { 'started', token, context }

  elseif OP == 'append' then
    -- ARGV[14]: the chunks' append time in ns ('' without chunk timestamps).
    local id, token, first, ts = ARGV[11], ARGV[12], tonumber(ARGV[13]), ARGV[14]
    local r = load(id)
    if not r then return missing(id) end
    if r.token ~= token then return { 'fenced' } end
    if r.st == 'c' or (r.st == 's' and r.outcome == 'cancelled') then
      return { 'cancel_requested', r.final }
    end
    if r.st == 's' then return { 'fenced' } end
    local last = r.last
    if first == 0 or first > last + 1 then return { 'gap', last } end
    -- Explicit seqs: the part of a retried batch that is already stored is
    -- skipped, never stored twice (and XADD refuses an id it already has).
    local skip = last + 1 - first
    recv_renew(r)
    local parts = {}
    for i = 15 + skip, #ARGV do
      local seq = r.last + 1
      if ts == '' then
        redis.call('XADD', lkey(id), fmt(seq) .. '-0', 'd', ARGV[i])
      else
        redis.call('XADD', lkey(id), fmt(seq) .. '-0', 'd', ARGV[i], 't', ts)
      end
      r.last = seq
      parts[#parts + 1] = cjson.encode(ARGV[i])
    end
    save(r)
    if #parts > 0 then
      redis.call('SPUBLISH', CHANNEL, '{"notice":"chunks","conv":' .. CONV .. ',"message_id":' ..
        cjson.encode(id) .. ',"first_seq":' .. fmt(last + 1) .. ',"deltas":[' ..
        table.concat(parts, ',') .. ']' .. (ts ~= '' and (',"ts_ns":' .. ts) or '') .. '}')
    end
    return { 'ok', r.last }

  elseif OP == 'cancel' then
    -- The owner's cancel request goes on its node's channel, which is in
    -- another slot: the caller publishes it (the reply's last field names
    -- the owner when there is one to tell).
    local id = ARGV[11]
    local target = id
    if target == '' then
      target = redis.call('HGET', META, 'live') or redis.call('HGET', META, 'latest')
    end
    local r = load(target or nil)
    if not r then return { 'cancel', false, false, false } end
    local was_active = r.st == 'a'
    local answer = recv_cancel(r)
    if was_active then
      save(r)
      local body = ',"conv":' .. CONV .. ',"message_id":' .. cjson.encode(r.id) ..
        ',"final_seq":' .. fmt(r.final) .. '}'
      redis.call('SPUBLISH', CHANNEL, '{"notice":"cancelling"' .. body)
      return { 'cancel', r.id, answer, r.final, r.owner }
    end
    return { 'cancel', r.id, answer, r.final or false, false }

  elseif OP == 'settle' then
    -- ARGV[16]: the last seq the store acknowledged to the producer. A log
    -- that ends before it lost writes (a failover): 'gap', nothing changed.
    local id, token, req, reason, usage = ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15]
    local r = load(id)
    if not r then return missing(id) end
    if r.token ~= token then return { 'fenced' } end
    if r.st == 'a' and r.last < tonumber(ARGV[16]) then return { 'gap', r.last } end
    if recv_settle(r, req, reason) then
      if usage ~= '' then r.usage = usage end
      return publish_settled(r)
    end
    return settled_reply(r)

  elseif OP == 'renew' then
    local id, token = ARGV[11], ARGV[12]
    local r = load(id)
    if not r then return missing(id) end
    if r.token ~= token or not recv_renew(r) then return { 'fenced' } end
    save(r)
    if r.st == 'c' then return { 'cancel_requested', r.final } end
    return { 'ok', r.last }

  elseif OP == 'reap' then
    local id = ARGV[11]
    local r = load(id)
    if not r then return missing(id) end
    local due = reap_due(r)
    if due and AT < due then return { 'not_due', due } end
    if recv_reap(r) then return publish_settled(r) end
    return settled_reply(r)

  elseif OP == 'read' then
    local id, after = ARGV[11], tonumber(ARGV[12])
    local r = load(id)
    if not r then return missing(id) end
    local upto = r.last
    if r.final and r.final < upto then upto = r.final end
    local deltas, ts = log_range(r.id, after + 1, upto)
    return { 'read', state_of(r), deltas, r.usage or false, ts }

  elseif OP == 'delete' then
    -- Refused while a reply is live (one whose owner is gone is reaped
    -- first, as start does); else history, every record and the meta key
    -- go (no record is left, so the fencing tokens may start again).
    local r = live_record()
    if r then
      if recv_reap(r) then
        publish_settled(r)
      else
        return { 'busy', r.id }
      end
    end
    local count = redis.call('LLEN', HIST)
    for _, id in ipairs(redis.call('ZRANGE', STREAMS, 0, -1)) do
      redis.call('DEL', rkey(id), lkey(id))
    end
    redis.call('DEL', HIST, STREAMS, META)
    return { 'deleted', count }

  elseif OP == 'reap_live' then
    -- One conversation's part of a sweep.
    local r = live_record()
    if not r then return { 'none' } end
    if recv_reap(r) then
      publish_settled(r)
      local reason = false
      if r.outcome == 'failed' then reason = r.reason end
      return { 'reaped', r.id, r.outcome, reason }
    end
    return { 'live', reap_due(r) }
  end
  return redis.error_reply('weir: unknown conversation op ' .. tostring(OP))
end

-- ===================================================================
-- Presence (weir_core::presence)
-- ===================================================================
-- ARGV: op at user debounce entry_ttl slack user_channel ...op args (from
--       ARGV[8])

local function presence_op()
  local E = KEY
  local S = string.sub(KEY, 1, -3) .. ':s'
  local USER = ARGV[3]
  local DEBOUNCE = tonumber(ARGV[4])
  local ENTRY_TTL = tonumber(ARGV[5])
  local SLACK = tonumber(ARGV[6])
  local USER_CHANNEL = ARGV[7]

  -- state: 'off' | 'on' | 'ling' (with until)
  local state, until_ms = 'off', nil
  do
    local s = redis.call('GET', S)
    if s == 'on' then
      state = 'on'
    elseif s then
      state = 'ling'
      until_ms = tonumber(string.match(s, '^ling:(%d+)$'))
    end
  end
  local entries = {}
  do
    local f = redis.call('HGETALL', E)
    for i = 1, #f, 2 do entries[f[i]] = tonumber(f[i + 1]) end
  end

  local function status() if state == 'off' then return 'offline' end return 'online' end
  local function count()
    local n = 0
    for _ in pairs(entries) do n = n + 1 end
    return n
  end

  local function expire()
    local before = status()
    local had_expired = false
    for k, exp in pairs(entries) do
      if exp <= AT then
        entries[k] = nil
        had_expired = true
      end
    end
    if count() == 0 then
      if state == 'on' then
        if had_expired then
          -- Entries that expired belong to a dead node: its debounce was the
          -- expiry itself.
          state = 'off'
        else
          state, until_ms = 'ling', AT + DEBOUNCE
        end
      elseif state == 'ling' and AT >= until_ms then
        state = 'off'
      end
    end
    local after = status()
    if after ~= before then return after end
    return nil
  end

  local function next_due()
    local due = nil
    for _, exp in pairs(entries) do
      if not due or exp < due then due = exp end
    end
    if state == 'ling' and (not due or until_ms < due) then due = until_ms end
    return due
  end

  local function save()
    redis.call('DEL', E)
    local ttl = 0
    for k, exp in pairs(entries) do
      redis.call('HSET', E, k, fmt(exp))
      ttl = math.max(ttl, exp - AT)
    end
    if count() > 0 then redis.call('PEXPIRE', E, math.max(ttl, 1) + SLACK) end
    if state == 'off' then
      redis.call('DEL', S)
    else
      local v = 'on'
      if state == 'ling' then
        v = 'ling:' .. fmt(until_ms)
        ttl = math.max(ttl, until_ms - AT)
      end
      redis.call('SET', S, v, 'PX', math.max(ttl, 1) + SLACK)
    end
  end

  local function notify(changed)
    if changed then
      redis.call('SPUBLISH', USER_CHANNEL, '{"notice":"presence","user":' ..
        cjson.encode(USER) .. ',"status":"' .. changed .. '"}')
    end
  end

  local function reply()
    return { 'presence', status(), count(), next_due() or false }
  end

  if OP == 'p_join' then
    local field = ARGV[8]
    local _ = expire()
    local before = status()
    entries[field] = AT + ENTRY_TTL
    state = 'on'
    save()
    if before ~= 'online' then notify('online') end
    return reply()
  elseif OP == 'p_leave' then
    entries[ARGV[8]] = nil
    local changed = expire()
    save()
    notify(changed)
    return reply()
  elseif OP == 'p_refresh' then
    local prefix = ARGV[8] .. '|'
    for k, exp in pairs(entries) do
      if string.sub(k, 1, #prefix) == prefix and exp > AT then entries[k] = AT + ENTRY_TTL end
    end
    save()
    return { 'refreshed' }
  elseif OP == 'p_check' then
    local changed = expire()
    save()
    notify(changed)
    return reply()
  end
  return redis.error_reply('weir: unknown presence op ' .. tostring(OP))
end

if string.sub(OP, 1, 2) == 'p_' then
  return presence_op()
end
return conv_op()
