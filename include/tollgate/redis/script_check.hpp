// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script_check.hpp: the first part of the account's script
// (redis/script.hpp, which joins the parts and states the contract): its
// constants, the clock, and phase 1, which reads and checks the epoch and
// the lease set before anything is written (a corrupt key, a lost epoch or
// another window width is found here, with nothing changed). Text only: the
// parts mean something only joined, in order, as redis::script.
#ifndef TOLLGATE_REDIS_SCRIPT_CHECK_HPP
#define TOLLGATE_REDIS_SCRIPT_CHECK_HPP

#include <tollgate/config.hpp>

#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {
namespace detail_script {

inline constexpr std::string_view script_check = R"tglua(
local K = 15
local R = 16 -- ring positions: sub-window j at position j mod 16
local TOP = 4503599627370496 -- 2^52: sums saturate here (they only refuse)
local BAD = {8, 0, 0, 0, -1, -1, 0, 0}
local CORRUPT = {7, 0, 0, 0, -1, -1, 0, 0}
local OTHER = {9, 0, 0, 0, -1, -1, 0, 0}
if ARGV[1] ~= '3' then return BAD end
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
local function sval(v) -- a stored integer (a score, in the server's notation), or nil
  local n = tonumber(v)
  if n == nil or n ~= math.floor(n) or n < 0 or n >= 9007199254740992 then return nil end
  return n
end
-- Hash fields are written as digits only (S): the fields read by one
-- HMGET are checked at once, joined by a digit, with one find (a find per
-- field cost a tenth of a call).
local function digits(texts)
  return #texts == 0 or not string.find(table.concat(texts, '0'), '%D')
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
local DAY = 86400000000 -- µs
for k = 1, 3 do
  local b = 6 + (k - 1) * 3
  W[k] = {limit = num(b), period = num(b + 1), width = num(b + 2), p = PFX[k], head = 0, cur = 0, old = 0,
          ring = nil, dirty = {}, sdirty = false, cdirty = false, kind = 'w'}
end
-- The spaced buckets (rpm, tpm): ticks of 1/m µs (m = 1000 x the in-process
-- bucket's scale, so the ticks are its own), the interval tq µs + tr ticks.
for k = 1, 2 do
  local b = 20 + (k - 1) * 3
  local m = num(b)
  if m > 0 then
    local w = W[k]
    w.kind, w.m, w.tq, w.tr = 'b', m, num(b + 1), num(b + 2)
    if m > 14000 or w.tr >= m or (w.tq == 0 and w.tr == 0) then error('tollgate: bad interval') end
  end
end
-- The calendar day: code = its UTC offset in µs + 2 days (0: none).
local dcode = num(26)
if dcode > 0 then
  W[3].kind, W[3].off = 'c', dcode - 2 * DAY
  if W[3].off > DAY or W[3].off < -DAY then error('tollgate: bad offset') end
end
-- server_model::learn (account/learn.hpp): its margin's level + 1 (0: not
-- learn), the tokens each request's spacing charges, the top level, the
-- dimensions spaced from the start (1 rpm, 2 tpm) and max_request_tokens.
-- A learn dimension ('l') carries both its window and its bucket.
local LV, LX, LTOP, LSP, LM = num(27), num(28), num(29), num(30), num(31)
local level = LV - 1
if LV > 0 then
  for k = 1, 2 do
    local w = W[k]
    if w.limit > 0 then
      if w.kind ~= 'b' or w.width < 1 then error('tollgate: bad learn') end
      w.kind = 'l'
      w.sp = (k == 1 and LSP % 2 == 1) or (k == 2 and LSP >= 2)
    end
  end
end
for k = 1, 3 do
  if W[k].limit > 0 and W[k].kind == 'w' and W[k].width < 1 then error('tollgate: bad width') end
end
local budget, hold_us = num(15), num(16)
local P = num(19)
local B0 = 32 -- the first queued settlement's first word
local Q = 10 -- words per queued settlement

-- Phase 1 reads and checks everything a decision needs; nothing is written
-- before phase 3 (save), so a corrupt key leaves the state as it was.
-- The epoch's scalars, one HMGET; a window's ring (its older sub-windows)
-- only when the decision needs it (a sub-window boundary, a refusal's wait,
-- a refund into an older sub-window).
local F = {'lv', 'origin', 'last', 'next', 'hold', 'bhold', 'committed', 'spent', 'pause', 'stop', 'started', 'test',
           'eid', 'lcount', 'llo', 'lease_end', 'lease_exp', 'rh', 'rc', 'rs', 'th', 'tc', 'ts', 'dh', 'dc', 'ds',
           'rw', 'tw', 'dw', 'rm', 'ra', 'rb', 'rq', 'rf', 'rg', 'tm', 'ta', 'tb', 'tq', 'tf', 'tg', 'co', 'cd', 'cu', 'lgone',
           'lw', 'rv', 'ru', 'rx', 'ry', 'tv', 'tu', 'tx', 'ty'}
local REQUIRED = 13 -- the first 13 every epoch has; the others read as 0 when absent
local raw = redis.pcall('HMGET', KEYS[1], unpack(F))
if type(raw) ~= 'table' or raw.err then return CORRUPT end
local E = {}
local have_epoch = false
for i = 1, #F do if raw[i] ~= false then have_epoch = true end end
local texts = {}
for i = 1, #F do
  local v = raw[i]
  if v == false then
    if have_epoch and i <= REQUIRED then return CORRUPT end
    v = 0
  else
    texts[#texts + 1] = v
    v = sval(v)
    if v == nil then return CORRUPT end
  end
  E[F[i]] = v
end
if not digits(texts) then return CORRUPT end
if have_epoch and E.lv ~= 3 then return CORRUPT end -- another layout's epoch
if E.stop > 1 or E.started > 1 or E.bhold > 1 then return CORRUPT end -- flags the script writes 0 or 1
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
  local ring, texts = {}, {}
  for j = 0, K do
    local v = r[j + 1]
    if v == false then v = 0 else texts[#texts + 1] = v; v = sval(v) end
    if v == nil then return false end
    ring[j] = v
  end
  if not digits(texts) then return false end
  w.ring = ring
  return true
end

local fresh_state = false
-- A window's counts are kept by sub-window number, which means something
-- only at the width they were made with: <p>w records it (0: never
-- enforced in this epoch), and a call with another width for it is refused
-- (OTHER), nothing written.
-- Likewise a dimension counted by one policy (a window, a bucket, a
-- calendar day) is refused to a call that runs another, and a calendar day
-- to a call with another offset (its day numbers would shift).
local function same_widths()
  for k = 1, 3 do
    local w = W[k]
    if w.limit > 0 then
      local had = E[w.p .. 'w']
      local ow = w.kind == 'w' or w.kind == 'l' -- counts a window
      if ow and had ~= 0 and had ~= w.width then return false end
      if not ow and had ~= 0 then return false end
      if k < 3 and w.kind == 'w' and E[w.p .. 'm'] ~= 0 then return false end
      -- learn's epoch records both at once: one without the other is another policy's
      if w.kind == 'l' and (had == 0) ~= (E[w.p .. 'm'] == 0) then return false end
      if k == 3 and w.kind ~= 'c' and E.co ~= 0 then return false end
      if k == 3 and w.kind == 'c' and E.co ~= 0 and E.co ~= dcode then return false end
    end
  end
  return true
end
-- The calendar day of an absolute time x (µs), and where day d starts.
local function day_of(x)
  local l = x + W[3].off
  if l < 0 then return 0 end
  return fdiv(l, DAY)
end
local function day_start(d) return d * DAY - W[3].off end
-- The hold after a loss: the longest window, and with a calendar day at
-- least to the next midnight (the lost day's usage is unknown).
local function lost_hold()
  local h = now + hold_us
  if W[3].limit > 0 and W[3].kind == 'c' then
    local m = day_start(day_of(now) + 1)
    if m > h then h = m end
  end
  return h
end
local function config_fields(e) -- the policies' constants an epoch records as first enforced
  for k = 1, 3 do
    local w = W[k]
    e[w.p .. 'w'] = w.limit > 0 and (w.kind == 'w' or w.kind == 'l') and w.width or 0
  end
  for k = 1, 2 do
    local w = W[k]
    local on = w.limit > 0 and (w.kind == 'b' or w.kind == 'l')
    e[w.p .. 'm'], e[w.p .. 'a'], e[w.p .. 'b'] = on and w.m or 0, on and w.tq or 0, on and w.tr or 0
  end
  e.co = W[3].limit > 0 and W[3].kind == 'c' and dcode or 0
end
local CONFIG = {'rw', 'tw', 'dw', 'rm', 'ra', 'rb', 'tm', 'ta', 'tb', 'co'}
local function fresh_epoch(hold, bhold, test)
  -- eid tags the epoch's leases: the server's own clock (TIME, also in test
  -- mode) when the epoch began, so an epoch that follows a loss has another
  -- one, and a settlement from before the loss touches none of its leases.
  local tm = redis.call('TIME')
  local eid = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  E = {lv = 3, origin = now, last = now, next = 0, hold = hold, bhold = bhold, committed = 0, spent = 0, pause = 0,
       stop = 0, started = 0, test = test, eid = eid, lcount = 0, llo = 0, lease_end = 0, lease_exp = 0,
       rq = 0, rf = 0, rg = 0, tq = 0, tf = 0, tg = 0, cd = 0, cu = 0, lgone = 0, lw = 0, rv = 0, ru = 0, rx = 0,
       ry = 0, tv = 0, tu = 0, tx = 0, ty = 0}
  config_fields(E)
  for k = 1, 3 do
    local w = W[k]
    w.head, w.cur, w.old, w.ring = 0, 0, 0, {}
    for j = 0, K do w.ring[j] = 0 end
  end
  fresh_state = true
end
if op == 'init' then
  local fresh, test = num(B0 + P * Q), num(B0 + 1 + P * Q)
  if have_epoch then
    if not same_widths() then return OTHER end
    return {0, 0, 0, 0, -1, -1, E.origin, E.eid}
  end
  if (test == 1) ~= (test_now ~= '') then return BAD end
  fresh_epoch(fresh == 1 and 0 or lost_hold(), (fresh == 1 or budget < 0) and 0 or 1, test)
  redis.call('DEL', KEYS[1], KEYS[2])
  local a = {}
  for i = 1, REQUIRED do a[#a + 1] = F[i]; a[#a + 1] = S(E[F[i]]) end
  for _, f in ipairs(CONFIG) do a[#a + 1] = f; a[#a + 1] = S(E[f]) end
  redis.call('HSET', KEYS[1], unpack(a))
  return {0, 0, 0, 0, -1, -1, now, E.eid}
end
if not have_epoch then
  -- Lost: a new epoch that holds for the longest window (the call goes on
  -- against it, so an admission is held and a control call still acts).
  fresh_epoch(lost_hold(), budget >= 0 and 1 or 0, test_now ~= '' and 1 or 0)
end
if (E.test == 1) ~= (test_now ~= '') then return BAD end
if not same_widths() then return OTHER end
-- learn: a call at a level below the fleet's is told the level (relearn),
-- nothing written; one above it (after a state loss) raises it (phase 2).
if LV > 0 and E.lw > level then return {10, 0, E.lw, 0, -1, -1, now, E.eid} end
-- A call decides at its own time, also one behind the latest a call used
-- (a clock stepped back, a failover to a server whose clock is behind): a
-- window or day it cannot decide there is refused with the wait from its own
-- time, as in-process. tl, the latest time seen, bounds only what can free
-- capacity (refunds, a rate change's cut): later there frees no more.
local t = now - E.origin
local tl = (now > E.last and now or E.last) - E.origin

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
      if sval(top[2]) == nil or sval(lo[2]) == nil then return CORRUPT end
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
    for p = 0, P - 1 do ids[p + 1] = S(num(B0 + 1 + p * Q)) end
    local sc = redis.call('ZMSCORE', KEYS[2], unpack(ids))
    for p = 0, P - 1 do
      local v = sc[p + 1]
      -- Held: present, not past its deadline (those are counted in expired),
      -- and made in this epoch (an id of an epoch lost before is another
      -- lease's, which this settlement must not free).
      if v and tonumber(v) > now and num(B0 + 8 + p * Q) == E.eid then held[p] = true end
    end
  end
end

)tglua";

}  // namespace detail_script
}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_CHECK_HPP
