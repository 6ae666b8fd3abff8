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
//   {code, refused_bits, wait_us, lease_id, tpm_slot, tpd_slot, now_us, epoch}
//   code: 0 admitted, 1 wait (wait_us > 0, rounded up), 2 busy (a lease must
//   end first), 3 never (a request above a limit), 4 stopped (quota error,
//   until resume), 5 held (state was lost, or one key of it: wait_us until
//   the hold ends, see layout.hpp),
//   6 budget held (state was lost: until restore_budget), 7 corrupt (a key
//   of the account holds what the script never writes: refused, never
//   admitted, nothing written), 8 bad call (version, arguments, or a
//   supplied `now` to an account not in test mode, or none to one that is),
//   9 other configuration (a window's width differs from the one its counts
//   were made with, see layout.hpp: refused, nothing written).
//   refused_bits are those of tollgate::dimension; now_us is the time the
//   call decided at (the server's, or the supplied one in test mode); epoch
//   is the tag of the epoch that decided (0 when none was read).
// Leases. A lease is named by its epoch's tag and its id; a settlement whose
// tag is not the epoch's (its lease was made before a state loss, where ids
// started again at 1) is of a lease this epoch does not hold: it frees no
// slot, returns no money and refunds no tokens (what it charges, tokens used
// beyond the reservation and money spent, still counts: the safe side).
// Time is the server's TIME, never a client's; it never goes back: a call
// decides at the later of TIME and the latest time a call used (a step
// back frees nothing). Only an account created in test mode takes `now`
// from the call, and then no key gets an expiry (expiry runs on the real
// clock).
// The body runs as an EVAL script or, unchanged, inside a Functions library
// (function_library below).
// Cost: an admission that carries one settlement runs 7 commands (TIME, the
// epoch's HMGET, ZCARD, ZMSCORE, ZADD, ZREM, the epoch's HSET); a window's
// ring is read (one HMGET) only at the end of its head sub-window, for a
// refusal's wait or a refund into an older sub-window (docs/redis.md).
// Needs Redis 6.2 or later (ZMSCORE); Functions need 7.
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

// KEYS: epoch, leases.
// ARGV: 1 layout version (2), 2 op (admit, peek, flush, waits, control, init),
//   3 now_us ("" = TIME), 4 concurrency (0 off), 5 lease_us (0: keep no
//   lease record),
//   6-14 limit, period_us, width_us of rpm, tpm, tpd (limit 0 off),
//   15 budget nanos (-1 off), 16 hold_us, 17 tokens, 18 worst-case nanos,
//   19 count of queued settlements P, then P x 9:
//     kind (1 settle, 2 settle_rejected, 3 drop), lease id, reserved nanos,
//     actual nanos, tokens to charge, tokens to refund, tpm slot, tpd slot
//     (slot -1: none), the lease's epoch tag
//   then for control: what (pause_us, stop, resume, clear_pause,
//   restore_budget), value[, value]; for init: fresh (0/1), test (0/1).
// The whole body is one chunk; `TOLLGATE_REDIS_SCRIPT` names it so a test
// can check it is the one the client sends.
inline constexpr std::string_view script = R"tglua(
local K = 15
local R = 16 -- ring positions: sub-window j at position j mod 16
local TOP = 4503599627370496 -- 2^52: sums saturate here (they only refuse)
local BAD = {8, 0, 0, 0, -1, -1, 0, 0}
local CORRUPT = {7, 0, 0, 0, -1, -1, 0, 0}
local OTHER = {9, 0, 0, 0, -1, -1, 0, 0}
if ARGV[1] ~= '2' then return BAD end
local op = ARGV[2]
local function num(i)
  local v = tonumber(ARGV[i])
  if v == nil or v ~= math.floor(v) or v < -1 or v >= 9007199254740992 then error('tollgate: bad argument ' .. i) end
  return v
end
-- An integer's decimal text: tostring is exact below 10^14 (Lua's %.14g)
-- and cheaper than string.format.
local function S(x)
  if x < 100000000000000 and x > -100000000000000 then return tostring(x) end
  return string.format('%.0f', x)
end
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
local PFX = {'r', 't', 'd'}
local W = {}
for k = 1, 3 do
  local b = 6 + (k - 1) * 3
  W[k] = {limit = num(b), period = num(b + 1), width = num(b + 2), p = PFX[k], head = 0, cur = 0, old = 0,
          ring = nil, dirty = {}, sdirty = false, cdirty = false}
  if W[k].limit > 0 and W[k].width < 1 then error('tollgate: bad width') end
end
local budget, hold_us = num(15), num(16)
local P = num(19)
local Q = 9 -- words per queued settlement

-- Phase 1 reads and checks everything a decision needs; nothing is written
-- before phase 3 (save), so a corrupt key leaves the state as it was.
-- The epoch's scalars, one HMGET; a window's ring (its older sub-windows)
-- only when the decision needs it (a sub-window boundary, a refusal's wait,
-- a refund into an older sub-window).
local F = {'lv', 'origin', 'last', 'next', 'hold', 'bhold', 'committed', 'spent', 'pause', 'stop', 'started', 'test',
           'eid', 'lcount', 'llo', 'lease_end', 'lease_exp', 'rh', 'rc', 'rs', 'th', 'tc', 'ts', 'dh', 'dc', 'ds',
           'rw', 'tw', 'dw'}
local REQUIRED = 13 -- the first 13 every epoch has; the others read as 0 when absent
local raw = redis.pcall('HMGET', KEYS[1], unpack(F))
if type(raw) ~= 'table' or raw.err then return CORRUPT end
local E = {}
local have_epoch = false
for i = 1, #F do if raw[i] ~= false then have_epoch = true end end
for i = 1, #F do
  local v = raw[i]
  if v == false then
    if have_epoch and i <= REQUIRED then return CORRUPT end
    v = 0
  else
    v = ival(v)
    if v == nil then return CORRUPT end
  end
  E[F[i]] = v
end
if have_epoch and E.lv ~= 2 then return CORRUPT end -- another layout's epoch
for k = 1, 3 do
  local w = W[k]
  w.head, w.cur, w.old = E[w.p .. 'h'], E[w.p .. 'c'], E[w.p .. 's']
end
local function load(w) -- the ring of the sub-windows head - K .. head - 1
  if w.ring then return true end
  local names = {}
  for j = 0, K do names[j + 1] = w.p .. j end
  local r = redis.pcall('HMGET', KEYS[1], unpack(names))
  if type(r) ~= 'table' or r.err then return false end
  w.ring = {}
  for j = 0, K do
    local v = r[j + 1]
    if v == false then v = 0 else v = ival(v) end
    if v == nil then return false end
    w.ring[j] = v
  end
  return true
end

local fresh_state = false
-- A window's counts are kept by sub-window number, which means something
-- only at the width they were made with: <p>w records it (0: never
-- enforced in this epoch), and a call with another width for it is refused
-- (OTHER), nothing written.
local function same_widths()
  for k = 1, 3 do
    local w = W[k]
    local had = E[w.p .. 'w']
    if w.limit > 0 and had ~= 0 and had ~= w.width then return false end
  end
  return true
end
local function fresh_epoch(hold, bhold, test)
  -- eid tags the epoch's leases: the server's own clock (TIME, also in test
  -- mode) when the epoch began, so an epoch that follows a loss has another
  -- one, and a settlement from before the loss touches none of its leases.
  local tm = redis.call('TIME')
  local eid = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  E = {lv = 2, origin = now, last = now, next = 0, hold = hold, bhold = bhold, committed = 0, spent = 0, pause = 0,
       stop = 0, started = 0, test = test, eid = eid, lcount = 0, llo = 0, lease_end = 0, lease_exp = 0}
  for k = 1, 3 do E[W[k].p .. 'w'] = W[k].limit > 0 and W[k].width or 0 end
  for k = 1, 3 do
    local w = W[k]
    w.head, w.cur, w.old, w.ring = 0, 0, 0, {}
    for j = 0, K do w.ring[j] = 0 end
  end
  fresh_state = true
end
if op == 'init' then
  local fresh, test = num(20 + P * Q), num(21 + P * Q)
  if have_epoch then
    if not same_widths() then return OTHER end
    return {0, 0, 0, 0, -1, -1, E.origin, E.eid}
  end
  if (test == 1) ~= (test_now ~= '') then return BAD end
  fresh_epoch(fresh == 1 and 0 or now + hold_us, (fresh == 1 or budget < 0) and 0 or 1, test)
  redis.call('DEL', KEYS[1], KEYS[2])
  local a = {}
  for i = 1, REQUIRED do a[#a + 1] = F[i]; a[#a + 1] = S(E[F[i]]) end
  for k = 1, 3 do a[#a + 1] = W[k].p .. 'w'; a[#a + 1] = S(E[W[k].p .. 'w']) end
  redis.call('HSET', KEYS[1], unpack(a))
  return {0, 0, 0, 0, -1, -1, now, E.eid}
end
if not have_epoch then
  -- Lost: a new epoch that holds for the longest window (the call goes on
  -- against it, so an admission is held and a control call still acts).
  fresh_epoch(now + hold_us, budget >= 0 and 1 or 0, test_now ~= '' and 1 or 0)
end
if (E.test == 1) ~= (test_now ~= '') then return BAD end
if not same_widths() then return OTHER end
if now < E.last then now = E.last end
local t = now - E.origin

-- The lease set. lcount is its size as the calls left it: a set of another
-- size was changed behind the script's back (expired: no loss at or after
-- lease_end; lost: what it held ends by lease_end; or garbage).
local in_use, changed, expired = 0, false, 0
local held = {}
if not fresh_state and (lease_us > 0 or E.lcount > 0) then
  in_use = redis.pcall('ZCARD', KEYS[2])
  if type(in_use) ~= 'number' then return CORRUPT end
  if in_use ~= E.lcount then
    changed = true
    if in_use > 0 then
      local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
      local lo = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      if ival(top[2]) == nil or ival(lo[2]) == nil then return CORRUPT end
      E.llo = tonumber(lo[2])
      if tonumber(top[2]) > E.lease_end then E.lease_end = tonumber(top[2]) end
    end
  end
  -- Leases whose deadline has passed give their slot back (their money stays
  -- committed, as a dropped lease's); llo is at most the earliest deadline,
  -- so the set is searched only when one may have passed.
  if in_use > 0 and now >= E.llo then expired = redis.call('ZCOUNT', KEYS[2], '-inf', S(now)) end
  -- Which queued settlements' leases are still held (one ZMSCORE).
  if in_use > expired and P > 0 then
    local ids = {}
    for p = 0, P - 1 do ids[p + 1] = S(num(21 + p * Q)) end
    local sc = redis.call('ZMSCORE', KEYS[2], unpack(ids))
    for p = 0, P - 1 do
      local v = sc[p + 1]
      -- Held: present, not past its deadline (those are counted in expired),
      -- and made in this epoch (an id of an epoch lost before is another
      -- lease's, which this settlement must not free).
      if v and tonumber(v) > now and num(28 + p * Q) == E.eid then held[p] = true end
    end
  end
end

-- Phase 2: the decision, in memory.
local edirty = {}
local function eset(f, v) E[f] = v; edirty[f] = true end
for k = 1, 3 do -- a window enforced for the first time in this epoch: its width from now on
  local w = W[k]
  if w.limit > 0 and E[w.p .. 'w'] == 0 then eset(w.p .. 'w', w.width) end
end
local function pos(j) return j % R end
local function units_in(w, j)
  if j > w.head or j < 0 or j + K < w.head then return 0 end
  if j == w.head then return w.cur end
  return w.ring[pos(j)]
end
local function sum(w, s) -- what the window ending at sub-window s counts (s >= head)
  if s == w.head then
    local total = w.old + w.cur
    return total > TOP and TOP or total
  end
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
local function setpos(w, j, u) w.ring[pos(j)] = u; w.dirty[pos(j)] = true end
local function reold(w) -- the sum of the older sub-windows, from the ring
  local total = 0
  for j = w.head - K, w.head - 1 do
    if j >= 0 then
      total = total + w.ring[pos(j)]
      if total > TOP then total = TOP end
    end
  end
  w.old = total
  w.sdirty = true
end
-- Moves the head to sub-window s: the finished head goes into the ring, the
-- positions passed over start empty.
local function advance(w, s)
  if s <= w.head then return end
  if s - w.head <= K then setpos(w, w.head, w.cur) end
  local from = w.head + 1
  if s - K > from then from = s - K end
  for j = from, s do setpos(w, j, 0) end
  w.head, w.cur = s, 0
  reold(w)
end
local function put(w, s, n) -- s >= head
  advance(w, s)
  local u = w.cur + n
  w.cur = u > TOP and TOP or u
  w.cdirty = true
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
  if slot == w.head then
    w.cur = n < w.cur and w.cur - n or 0
    w.cdirty = true
    return
  end
  local u = w.ring[pos(slot)]
  setpos(w, slot, n < u and u - n or 0)
  reold(w)
end
local function charge(w, n, x)
  local s = slot_at(w, x)
  if s < w.head then s = w.head end
  put(w, s, n)
end

-- The rings this call needs, read now (still phase 1: before any write): a
-- window whose head moves, one a refund goes back into, and, for a refusal
-- or the waits, every window (answer's search looks past the head).
local function need(w) return w.ring ~= nil or load(w) end
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and (slot_at(w, t) > w.head or op == 'waits') and not need(w) then return CORRUPT end
end
for p = 0, P - 1 do
  local b = 20 + p * Q
  if held[p] and num(b + 5) > 0 then
    for k = 2, 3 do
      local w, s = W[k], num(b + 4 + k)
      if w.limit > 0 and s >= 0 and s < w.head and s + K >= w.head and not need(w) then return CORRUPT end
    end
  end
end
local function need_all()
  for k = 1, 3 do
    if W[k].limit > 0 and not W[k].ring and not load(W[k]) then return false end
  end
  return true
end

local function committed_add(d)
  local c = E.committed + d
  if c < 0 then c = 0 elseif c > TOP then c = TOP end
  eset('committed', c)
end
if now > E.last then eset('last', now) end
-- The lease set lost on its own (an eviction: the volatile-* policies take
-- exactly the keys with an expiry) while the epoch says it still holds
-- leases: they end by lease_end, so admissions hold until then.
if changed and in_use == 0 and E.lease_end > now and E.lease_end > E.hold then eset('hold', E.lease_end) end
local removed = {}
local count0 = in_use -- the set's size before this call's writes (0: no key)
in_use = in_use - expired

-- The queued settlements, applied at this call's time (later than they
-- happened: what they free comes back late, never early).
for p = 0, P - 1 do
  local b = 20 + p * Q
  local kind, id, reserved, actual = num(b), num(b + 1), num(b + 2), num(b + 3)
  local more, back, s1, s2 = num(b + 4), num(b + 5), num(b + 6), num(b + 7)
  local h = held[p] == true
  if h then
    held[p] = nil -- a lease settled twice in one call gives back once
    removed[#removed + 1] = S(id)
    in_use = in_use - 1
  end
  if kind == 1 then
    if more > 0 then
      for k = 2, 3 do if W[k].limit > 0 then charge(W[k], more, t) end end
    end
    if back > 0 and h then
      if W[2].limit > 0 then give_back(W[2], s1, back) end
      if W[3].limit > 0 then give_back(W[3], s2, back) end
    end
    if budget >= 0 then
      if h then committed_add(actual - reserved)
      elseif actual > reserved then committed_add(actual - reserved) end
      local sp = E.spent + actual
      eset('spent', sp > TOP and TOP or sp)
    end
  elseif kind == 2 then
    if h and budget >= 0 then committed_add(-reserved) end
  end
end

-- Phase 3: the writes. new_lease: the deadline of the lease admitted, or nil.
local function save(new_lease, id)
  if fresh_state then
    redis.call('DEL', KEYS[2])
    for f, _ in pairs(E) do edirty[f] = true end
    for k = 1, 3 do W[k].sdirty = true end
  end
  local lo_gone = expired > 0 or changed
  if new_lease then
    -- Added before the removals, so a set that stays in use keeps its key
    -- and its expiry; a key made now needs one.
    local new_set = count0 == 0
    redis.call('ZADD', KEYS[2], S(new_lease), S(id))
    if new_set or new_lease < E.llo then eset('llo', new_lease); lo_gone = false end
    if new_set or new_lease > E.lease_end then eset('lease_end', new_lease) end
    -- The set's expiry runs ahead of its latest deadline by an eighth of the
    -- lease timeout, so it moves once per that time, not on every lease (and
    -- only forward: a shorter lease timeout after a change of configuration
    -- never cuts the older leases' life short).
    if E.test == 0 and (new_set or new_lease > E.lease_exp) then
      local ahead = math.ceil(lease_us / 8)
      -- One ms more: the server's expiry clock is the script's start, in ms,
      -- which may be up to 1 ms behind TIME.
      redis.call('PEXPIRE', KEYS[2], math.ceil((lease_us + ahead) / 1000) + 1)
      eset('lease_exp', new_lease + ahead)
    end
    in_use = in_use + 1
  end
  if expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', S(now)) end
  if #removed > 0 then redis.call('ZREM', KEYS[2], unpack(removed)) end
  if in_use ~= E.lcount then eset('lcount', in_use) end
  if in_use == 0 then
    if E.lease_end ~= 0 then eset('lease_end', 0) end
    if E.lease_exp ~= 0 then eset('lease_exp', 0) end
    if E.llo ~= 0 then eset('llo', 0) end
  elseif lo_gone then
    local lo = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    eset('llo', ival(lo[2]) or now)
  end
  local args = {}
  for f, _ in pairs(edirty) do args[#args + 1] = f; args[#args + 1] = S(E[f]) end
  for k = 1, 3 do
    local w = W[k]
    if w.sdirty then
      args[#args + 1] = w.p .. 'h'; args[#args + 1] = S(w.head)
      args[#args + 1] = w.p .. 's'; args[#args + 1] = S(w.old)
    end
    if w.sdirty or w.cdirty then args[#args + 1] = w.p .. 'c'; args[#args + 1] = S(w.cur) end
    for j, _ in pairs(w.dirty) do args[#args + 1] = w.p .. j; args[#args + 1] = S(w.ring[j]) end
  end
  if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
end

local function available(w)
  local s = slot_at(w, t)
  if s < w.head then s = w.head end
  local used = sum(w, s)
  return used >= w.limit and 0 or w.limit - used
end

if op == 'flush' then save(); return {0, 0, 0, 0, -1, -1, now, E.eid} end
if op == 'peek' then
  local out = {0, in_use, E.committed, E.spent, now}
  for k = 1, 3 do out[#out + 1] = W[k].limit > 0 and available(W[k]) or -1 end
  out[#out + 1] = E.pause > now and E.pause - now or 0
  out[#out + 1] = E.stop
  out[#out + 1] = E.bhold
  out[#out + 1] = E.hold > now and E.hold - now or 0
  save()
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
  local b = 20 + P * Q
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
  return {0, 0, 0, 0, -1, -1, now, E.eid}
end
if op ~= 'admit' then error('tollgate: bad op') end

-- The admission.
local n, worst = num(17), num(18)
local function refuse(paused_for)
  if not need_all() then return CORRUPT end
  local bits, wait, never = 0, 0, false
  if paused_for > 0 then bits = 128; wait = paused_for end
  if conc > 0 and in_use >= conc then bits = bits + 1 end
  local want = {1, n, n}
  for k = 1, 3 do
    local w = W[k]
    if w.limit > 0 then
      local v, d = answer(w, want[k], t)
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
  if never then return {3, bits, 0, 0, -1, -1, now, E.eid} end
  if wait > 0 then return {1, bits, wait, 0, -1, -1, now, E.eid} end
  return {2, bits, 0, 0, -1, -1, now, E.eid}
end

if now < E.hold then save(); return {5, 0, E.hold - now, 0, -1, -1, now, E.eid} end
if budget >= 0 and E.bhold == 1 then save(); return {6, 16, 0, 0, -1, -1, now, E.eid} end
if E.stop == 1 then save(); return {4, 256, 0, 0, -1, -1, now, E.eid} end
if now < E.pause then
  if E.started == 1 then return refuse(E.pause - now) end
  save()
  return {1, 128, E.pause - now, 0, -1, -1, now, E.eid}
end
if E.started == 0 then eset('started', 1) end
if conc > 0 and in_use >= conc then return refuse(0) end
local want = {1, n, n}
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and want[k] > 0 then
    local s = slot_at(w, t)
    -- The fast path needs no ring: within the head's sub-window the window
    -- holds old + cur; past it the ring was read above.
    if s < w.head or sum(w, s) + want[k] > w.limit then return refuse(0) end
  end
end
if budget >= 0 and worst > budget - E.committed then return refuse(0) end
local slots = {-1, -1, -1}
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and want[k] > 0 then
    slots[k] = slot_at(w, t)
    put(w, slots[k], want[k])
  end
end
if budget >= 0 then committed_add(worst) end
local id = E.next + 1
eset('next', id)
save(lease_us > 0 and now + lease_us or nil, id)
return {0, 0, 0, id, slots[2], slots[3], now, E.eid}
)tglua";

// The same body as a Redis Functions library (Redis 7): loaded once with
// FUNCTION LOAD REPLACE, kept with the dataset (it survives a restart that
// keeps the data, and is lost with it), called with FCALL. The name carries
// the layout version, so two versions can be loaded side by side while a
// fleet upgrades.
inline constexpr std::string_view function_name = "tollgate_v2";
inline std::string function_library() {
  std::string lib = "#!lua name=tollgate_v2\nredis.register_function('tollgate_v2', function(KEYS, ARGV)\n";
  lib += script;
  lib += "\nend)\n";
  return lib;
}

}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_HPP
