// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script.hpp: the account's decision as a Redis script (an EVAL /
// EVALSHA body), on the layout of redis/layout.hpp. It is a second
// implementation of the decisions of account/policy.hpp for strict windows
// (Lua cannot run the C++); what it shares with the in-process account is the
// state's meaning, the constants and the tests that keep the two equal
// (tests/redis/test_redis.cpp: the differential test).
//
// Contract. One call decides every dimension all-or-nothing: it reads and
// checks every key first, writes nothing when it refuses (but the clock it
// has seen, the lease deadlines that passed and the queued settlements it
// carries), and answers integers only:
//   {code, refused_bits, wait_us, lease_id, tpm_slot, tpd_slot, now_us}
//   code: 0 admitted, 1 wait (wait_us > 0, rounded up), 2 busy (a lease must
//   end first), 3 never (a request above a limit), 4 stopped (quota error,
//   until resume), 5 held (state was lost, or one key of it: wait_us until
//   the hold ends, see layout.hpp),
//   6 budget held (state was lost: until restore_budget), 7 corrupt (a key
//   of the account holds what the script never writes: refused, never
//   admitted, nothing written), 8 bad call (version, arguments, or a
//   supplied `now` to an account not in test mode, or none to one that is).
//   refused_bits are those of tollgate::dimension; now_us is the time the
//   call decided at (the server's, or the supplied one in test mode).
// Time is the server's TIME, never a client's; it never goes back: a call
// decides at the later of TIME and the latest time a call used (a step
// back frees nothing). Only an account created in test mode takes `now`
// from the call, and then no key gets an expiry (expiry runs on the real
// clock).
// The body runs as an EVAL script or, unchanged, inside a Functions library
// (function_library below).
// Policies here: strict sliding windows for RPM, TPM and a rolling 24 h TPD
// (the server models fixed_window, sliding_log, token_bucket), concurrency
// leases with deadlines, a budget, pause and stop. Not (yet) here: the
// spaced policies of window_counter, gcra and unknown, and calendar days;
// redis::make_layout refuses them.
#ifndef TOLLGATE_REDIS_SCRIPT_HPP
#define TOLLGATE_REDIS_SCRIPT_HPP

#include <tollgate/config.hpp>

#include <string>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {

// KEYS: epoch, leases, rpm, tpm, tpd.
// ARGV: 1 layout version, 2 op (admit, peek, flush, waits, control, init),
//   3 now_us ("" = TIME), 4 concurrency (0 off), 5 lease_us (0: keep no
//   lease record),
//   6-14 limit, period_us, width_us of rpm, tpm, tpd (limit 0 off),
//   15 budget nanos (-1 off), 16 hold_us, 17 tokens, 18 worst-case nanos,
//   19 count of queued settlements P, then P x 8:
//     kind (1 settle, 2 settle_rejected, 3 drop), lease id, reserved nanos,
//     actual nanos, tokens to charge, tokens to refund, tpm slot, tpd slot
//     (slot -1: none)
//   then for control: what (pause_us, stop, resume, clear_pause,
//   restore_budget), value[, value]; for init: fresh (0/1), test (0/1).
// The whole body is one chunk; `TOLLGATE_REDIS_SCRIPT` names it so a test
// can check it is the one the client sends.
inline constexpr std::string_view script = R"tglua(
local K = 15
local TOP = 4503599627370496 -- 2^52: sums saturate here (they only refuse)
if ARGV[1] ~= '1' then return {8, 0, 0, 0, -1, -1, 0} end
local op = ARGV[2]
local function num(i)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= math.floor(v) or v < -1 or v >= 9007199254740992 then error('tollgate: bad argument ' .. i) end
  return v
end
local function S(x) return string.format('%.0f', x) end
local function fdiv(a, b) -- floor(a / b), exact for a, b below 2^53
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function ival(v) -- a stored integer, or nil when it is not one
  local n = tonumber(v)
  if n == nil or n ~= math.floor(n) or n < 0 or n >= 9007199254740992 then return nil end
  return n
end
local CORRUPT = {7, 0, 0, 0, -1, -1, 0}
-- A read of a key of the wrong type answers nil (the call is refused as corrupt).
local function read(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return nil end
  return r
end

-- The clock.
local test_now = ARGV[3]
local now
if test_now == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = num(3)
end

local conc, lease_us = num(4), num(5)
local W = {}
for k = 1, 3 do
  local b = 6 + (k - 1) * 3
  W[k] = {limit = num(b), period = num(b + 1), width = num(b + 2), key = KEYS[2 + k], units = {}, head = 0,
          dirty = false, changed = {}}
  if W[k].limit > 0 and W[k].width < 1 then error('tollgate: bad width') end
end
-- Epoch fields a call keeps up to date but that an older epoch may lack (0).
local ENDS = {'rpm_end', 'tpm_end', 'tpd_end'}
local optional = {'rpm_end', 'tpm_end', 'tpd_end', 'lease_end'}
local budget, hold_us = num(15), num(16)

-- The epoch.
local E = {}
local raw = read('HGETALL', KEYS[1])
if raw == nil then return CORRUPT end
for i = 1, #raw, 2 do E[raw[i]] = raw[i + 1] end
local fields = {'origin', 'last', 'next', 'hold', 'bhold', 'committed', 'spent', 'pause', 'stop', 'started', 'test'}
local have_epoch = #raw > 0
for _, f in ipairs(fields) do
  if have_epoch then
    local v = ival(E[f])
    if v == nil then return CORRUPT end
    E[f] = v
  end
end
for _, f in ipairs(optional) do
  local v = 0
  if E[f] ~= nil then
    v = ival(E[f])
    if v == nil then return CORRUPT end
  end
  E[f] = v
end
if op == 'init' then
  local fresh, test = num(20 + num(19) * 8), num(21 + num(19) * 8)
  if have_epoch then return {0, 0, 0, 0, -1, -1, E.origin} end
  if (test == 1) ~= (test_now ~= '') then return {8, 0, 0, 0, -1, -1, 0} end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  local hold = fresh == 1 and 0 or now + hold_us
  redis.call('HSET', KEYS[1], 'origin', S(now), 'last', S(now), 'next', '0', 'hold', S(hold),
             'bhold', (fresh == 1 or budget < 0) and '0' or '1', 'committed', '0', 'spent', '0', 'pause', '0',
             'stop', '0', 'started', '0', 'test', S(test))
  return {0, 0, 0, 0, -1, -1, now}
end
if not have_epoch then
  -- Lost: a new epoch that holds for the longest window (the call goes on
  -- against it, so an admission is held and a control call still acts).
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  E = {origin = now, last = now, next = 0, hold = now + hold_us, bhold = budget >= 0 and 1 or 0, committed = 0,
       spent = 0, pause = 0, stop = 0, started = 0, test = test_now ~= '' and 1 or 0, rpm_end = 0, tpm_end = 0,
       tpd_end = 0, lease_end = 0}
  local a = {}
  for _, f in ipairs(fields) do a[#a + 1] = f; a[#a + 1] = S(E[f]) end
  redis.call('HSET', KEYS[1], unpack(a))
end
if (E.test == 1) ~= (test_now ~= '') then return {8, 0, 0, 0, -1, -1, 0} end
if now < E.last then now = E.last end
local t = now - E.origin

-- The windows: slot j counts in [j - K, j].
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 then
    local r = read('HGETALL', w.key)
    if r == nil then return CORRUPT end
    w.fresh = #r == 0
    for i = 1, #r, 2 do
      local v = ival(r[i + 1])
      if v == nil then return CORRUPT end
      if r[i] == 'h' then w.head = v else
        local j = ival(r[i])
        if j == nil then return CORRUPT end
        w.units[j] = v
      end
    end
  end
end
-- Lease scores must be times.
local top = read('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top == nil or (#top > 0 and ival(top[2]) == nil) then return CORRUPT end
for k = 1, 3 do W[k].head0 = W[k].head end

local function units_in(w, j)
  if j > w.head or j < 0 then return 0 end
  return w.units[j] or 0
end
local function sum(w, s)
  local total = 0
  local lo = s - K
  if lo < 0 then lo = 0 end
  for j = lo, s do
    total = total + units_in(w, j)
    if total > TOP then total = TOP end
  end
  return total
end
local function slot_at(w, x) return fdiv(x, w.width) end
local function slot_start(w, j) return j * w.width end
local function put(w, s, n)
  if s > w.head then w.head = s end
  local u = (w.units[s] or 0) + n
  if u > TOP then u = TOP end
  w.units[s] = u
  w.changed[s] = true
  w.dirty = true
end
-- {verdict, wait}: verdict 0 admit, 1 wait, 3 never, 9 stale.
local function answer(w, n, x)
  if n == 0 then return 0, 0 end
  if n > w.limit then return 3, 0 end
  local s = slot_at(w, x)
  if s < w.head then
    local d = slot_start(w, w.head) - x
    return 9, d > 0 and d or 1
  end
  if sum(w, s) + n > w.limit then
    local room = w.limit - n
    local target = s + 1
    while sum(w, target) > room and target <= w.head + K do target = target + 1 end
    local d = slot_start(w, target) - x
    return 1, d > 0 and d or 1
  end
  return 0, 0
end
local function give_back(w, slot, n)
  if slot < 0 or slot > w.head or slot + K < w.head then return end
  local u = w.units[slot]
  if u == nil then return end
  if n < u then w.units[slot] = u - n else w.units[slot] = 0 end
  w.changed[slot] = true
  w.dirty = true
end
local function charge(w, n, x)
  local s = slot_at(w, x)
  if s < w.head then s = w.head end
  put(w, s, n)
end

local edirty = {}
local function eset(f, v) E[f] = v; edirty[f] = true end
local function committed_add(d)
  local c = E.committed + d
  if c < 0 then c = 0 elseif c > TOP then c = TOP end
  eset('committed', c)
end
if now > E.last then eset('last', now) end
-- A key lost on its own (an eviction: the volatile-* policies take exactly
-- the keys with an expiry) while the epoch says it still counts: what it
-- held is unknown but ends by its end time, so admissions hold until then.
local lost_until = 0
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and w.fresh and E[ENDS[k]] > now and E[ENDS[k]] > lost_until then lost_until = E[ENDS[k]] end
end
if #top == 0 and E.lease_end > now and E.lease_end > lost_until then lost_until = E.lease_end end
if lost_until > E.hold then eset('hold', lost_until) end
local function save()
  for k = 1, 3 do
    local w = W[k]
    -- The end of the window key moves with its head (as its expiry).
    if w.limit > 0 and w.dirty and (w.fresh or w.head ~= w.head0) then
      local e = E.origin + slot_start(w, w.head + K + 1)
      if e ~= E[ENDS[k]] then eset(ENDS[k], e) end
    end
  end
  local lt = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  local le = #lt > 0 and tonumber(lt[2]) or 0
  if le ~= E.lease_end then eset('lease_end', le) end
  local args = {}
  for f, _ in pairs(edirty) do args[#args + 1] = f; args[#args + 1] = S(E[f]) end
  if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
  for k = 1, 3 do
    local w = W[k]
    if w.limit > 0 and w.dirty then
      -- Only what changed: the slots written, the head, and the slots that
      -- left the window (or came back to zero) deleted.
      local a, gone = {'h', S(w.head)}, {}
      for j, u in pairs(w.units) do
        if j + K < w.head or u <= 0 then gone[#gone + 1] = S(j)
        elseif w.changed[j] then a[#a + 1] = S(j); a[#a + 1] = S(u) end
      end
      redis.call('HSET', w.key, unpack(a))
      if #gone > 0 then redis.call('HDEL', w.key, unpack(gone)) end
      -- The expiry moves with the head only (HSET keeps a key's expiry).
      if E.test == 0 and (w.fresh or w.head ~= w.head0) then
        -- One ms more: the server's expiry clock is the script's start, in
        -- ms, which may be up to 1 ms behind TIME.
        local ms = math.ceil((slot_start(w, w.head + K + 1) - t) / 1000) + 1
        redis.call('PEXPIRE', w.key, ms > 1 and ms or 2)
      end
    end
  end
end

-- Leases whose deadline has passed give their slot back (their money stays
-- committed, as a dropped lease's).
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', S(now))

-- The queued settlements, applied at this call's time (later than they
-- happened: what they free comes back late, never early).
local P = num(19)
for p = 0, P - 1 do
  local b = 20 + p * 8
  local kind, id, reserved, actual = num(b), num(b + 1), num(b + 2), num(b + 3)
  local more, back, s1, s2 = num(b + 4), num(b + 5), num(b + 6), num(b + 7)
  local held = redis.call('ZREM', KEYS[2], S(id)) == 1
  if kind == 1 then
    if more > 0 then
      for k = 2, 3 do if W[k].limit > 0 then charge(W[k], more, t) end end
    end
    if back > 0 and held then
      if W[2].limit > 0 then give_back(W[2], s1, back) end
      if W[3].limit > 0 then give_back(W[3], s2, back) end
    end
    if budget >= 0 then
      if held then committed_add(actual - reserved)
      elseif actual > reserved then committed_add(actual - reserved) end
      local sp = E.spent + actual
      eset('spent', sp > TOP and TOP or sp)
    end
  elseif kind == 2 then
    if held and budget >= 0 then committed_add(-reserved) end
  end
end
local in_use = redis.call('ZCARD', KEYS[2])

local function available(w)
  local s = slot_at(w, t)
  if s < w.head then s = w.head end
  local used = sum(w, s)
  return used >= w.limit and 0 or w.limit - used
end

if op == 'flush' then save(); return {0, 0, 0, 0, -1, -1, now} end
if op == 'peek' then
  save()
  local out = {0, in_use, E.committed, E.spent, now}
  for k = 1, 3 do out[#out + 1] = W[k].limit > 0 and available(W[k]) or -1 end
  out[#out + 1] = E.pause > now and E.pause - now or 0
  out[#out + 1] = E.stop
  out[#out + 1] = E.bhold
  out[#out + 1] = E.hold > now and E.hold - now or 0
  return out
end
if op == 'waits' then
  -- What the limiters say now, for the pause after a 429 (account/pause.hpp).
  local out = {0, 0, 0}
  for k = 1, 2 do
    local w = W[k]
    if w.limit > 0 then
      local e = math.ceil(w.period / w.limit)
      local v, d = answer(w, 1, t)
      local own = v == 1 and d or 0
      out[k] = e > own and e or own
    end
  end
  local w = W[3]
  if w.limit > 0 then
    local newest = w.head
    local empty = false
    while units_in(w, newest) == 0 do
      if newest == 0 or newest + K == w.head then empty = true; break end
      newest = newest - 1
    end
    if not empty then out[3] = slot_start(w, newest + K + 1) - t end
  end
  save()
  return out
end
if op == 'control' then
  local b = 20 + P * 8
  local what = ARGV[b]
  if what == 'pause_us' then
    local u = now + num(b + 1)
    if u > E.pause then eset('pause', u) end
  elseif what == 'stop' then eset('stop', 1)
  elseif what == 'resume' then eset('stop', 0)
  elseif what == 'clear_pause' then eset('pause', 0)
  elseif what == 'restore_budget' then
    eset('committed', num(b + 1)); eset('spent', num(b + 2)); eset('bhold', 0)
  else error('tollgate: bad control') end
  save()
  return {0, 0, 0, 0, -1, -1, now}
end
if op ~= 'admit' then error('tollgate: bad op') end

-- The admission.
local n, worst = num(17), num(18)
local function refuse(paused_for)
  local bits, wait, never = 0, 0, false
  if paused_for > 0 then bits = 128; wait = paused_for end
  if conc > 0 and in_use >= conc then bits = bits + 1 end
  local need = {1, n, n}
  for k = 1, 3 do
    local w = W[k]
    if w.limit > 0 then
      local v, d = answer(w, need[k], t)
      if v ~= 0 then
        bits = bits + 2 ^ k
        if v == 3 then never = true end
        if d > wait then wait = d end
      end
    end
  end
  if budget >= 0 then
    local left = E.committed >= budget and 0 or budget - E.committed
    if left < worst then bits = bits + 16 end
  end
  if bits == 0 then bits = 1 end
  save()
  if never then return {3, bits, 0, 0, -1, -1, now} end
  if wait > 0 then return {1, bits, wait, 0, -1, -1, now} end
  return {2, bits, 0, 0, -1, -1, now}
end

if now < E.hold then save(); return {5, 0, E.hold - now, 0, -1, -1, now} end
if budget >= 0 and E.bhold == 1 then save(); return {6, 16, 0, 0, -1, -1, now} end
if E.stop == 1 then save(); return {4, 256, 0, 0, -1, -1, now} end
if now < E.pause then
  if E.started == 1 then return refuse(E.pause - now) end
  save()
  return {1, 128, E.pause - now, 0, -1, -1, now}
end
if E.started == 0 then eset('started', 1) end
if conc > 0 and in_use >= conc then return refuse(0) end
local need = {1, n, n}
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and need[k] > 0 then
    local v = answer(w, need[k], t)
    if v ~= 0 then return refuse(0) end
  end
end
if budget >= 0 and worst > budget - E.committed then return refuse(0) end
local slots = {-1, -1, -1}
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and need[k] > 0 then
    slots[k] = slot_at(w, t)
    put(w, slots[k], need[k])
  end
end
if budget >= 0 then committed_add(worst) end
local id = E.next + 1
eset('next', id)
if lease_us > 0 then
  redis.call('ZADD', KEYS[2], S(now + lease_us), S(id))
  if E.test == 0 then
    -- The set lives to its latest deadline (a shorter lease timeout after a
    -- change of configuration must not cut the older leases' life short).
    local ms = math.ceil(lease_us / 1000) + 1  -- + 1: as the windows' expiry
    local p = redis.call('PTTL', KEYS[2])
    if p < ms then redis.call('PEXPIRE', KEYS[2], ms) end
  end
end
save()
return {0, 0, 0, id, slots[2], slots[3], now}
)tglua";

// The same body as a Redis Functions library (Redis 7): loaded once with
// FUNCTION LOAD REPLACE, kept with the dataset (it survives a restart that
// keeps the data, and is lost with it), called with FCALL. The name carries
// the layout version, so two versions can be loaded side by side while a
// fleet upgrades.
inline constexpr std::string_view function_name = "tollgate_v1";
inline std::string function_library() {
  std::string lib = "#!lua name=tollgate_v1\nredis.register_function('tollgate_v1', function(KEYS, ARGV)\n";
  lib += script;
  lib += "\nend)\n";
  return lib;
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_HPP
