// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script_spaced.hpp: the second part of the account's script
// (redis/script.hpp, which joins the parts and states the contract): the
// start of phase 2, the decision in memory: the set of epoch fields to
// write, each dimension's policy, the spaced buckets (GCRA of burst 1), the
// calendar day and the strict windows (the rings they need are still read
// before any write). Text only: it uses the locals of redis/script_check.hpp
// and means something only joined after it, as redis::script.
#ifndef TOLLGATE_REDIS_SCRIPT_SPACED_HPP
#define TOLLGATE_REDIS_SCRIPT_SPACED_HPP

#include <tollgate/config.hpp>

#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {
namespace detail_script {

inline constexpr std::string_view script_spaced = R"tglua(-- Phase 2: the decision, in memory.
local edirty = {}
local function eset(f, v) E[f] = v; edirty[f] = true end
local function win(k) return W[k].limit > 0 and (W[k].kind == 'w' or W[k].kind == 'l') end -- a window kept
local function bkt(k) return W[k].limit > 0 and W[k].kind == 'b' end
local function lrn(k) return W[k].limit > 0 and W[k].kind == 'l' end
if LV > 0 and level > E.lw then eset('lw', level) end
local function cal() return W[3].limit > 0 and W[3].kind == 'c' end
for k = 1, 3 do -- a window enforced for the first time in this epoch: its width from now on
  local w = W[k]
  if win(k) and E[w.p .. 'w'] == 0 then eset(w.p .. 'w', w.width) end
end
if cal() and E.co == 0 then eset('co', dcode) end

-- The spaced buckets: GCRA of burst 1, as token_bucket with the in-process
-- account's rate (account/limiters.hpp). The TAT is <p>q µs from origin and
-- <p>f ticks (0 <= f < m), exact; a now is t whole µs (t x m ticks).
-- A bucket first enforced in this epoch records its interval; a call with
-- another one (a change of limits) keeps the TAT's time (rounded up into
-- the new ticks: while processes disagree, requests are spaced by the
-- shortest interval in use) and tickets from before it refund nothing (<p>g:
-- only admissions at or after it refund).
for k = 1, 2 do
  local w = W[k]
  if bkt(k) or lrn(k) then
    local m0 = E[w.p .. 'm']
    if m0 ~= w.m or E[w.p .. 'a'] ~= w.tq or E[w.p .. 'b'] ~= w.tr then
      if m0 ~= 0 then
        local q, f = E[w.p .. 'q'], E[w.p .. 'f']
        if m0 ~= w.m and f > 0 then
          f = math.ceil(f * w.m / m0) -- f < m0 <= 14000: exact
          if f >= w.m then q, f = q + 1, 0 end
          eset(w.p .. 'q', q); eset(w.p .. 'f', f)
        end
        eset(w.p .. 'g', tl + 1)
      end
      eset(w.p .. 'm', w.m); eset(w.p .. 'a', w.tq); eset(w.p .. 'b', w.tr)
    end
  end
end
local TWO26 = 67108864
-- n intervals as {whole µs, ticks}, exact (n < 2^53), saturating at TOP µs.
local function times(w, n)
  local q = n * w.tq
  if q >= TOP then return TOP, 0 end
  local a = n * w.tr
  local aq, ar
  if a < TOP then
    aq = fdiv(a, w.m); ar = a - aq * w.m
  else -- n x tr beyond 2^52: split n (every product below stays under 2^42)
    local nh = math.floor(n / TWO26)
    local nl = n - nh * TWO26
    local x = nh * w.tr
    local xq = fdiv(x, w.m)
    local y = (x - xq * w.m) * TWO26 + nl * w.tr
    local yq = fdiv(y, w.m)
    aq, ar = xq * TWO26 + yq, y - yq * w.m
  end
  q = q + aq
  if q >= TOP then return TOP, 0 end
  return q, ar
end
local function padd(w, q1, f1, q2, f2)
  local q, f = q1 + q2, f1 + f2
  if f >= w.m then q, f = q + 1, f - w.m end
  if q >= TOP then return TOP, 0 end
  return q, f
end
local function pless(q1, f1, q2, f2) return q1 < q2 or (q1 == q2 and f1 < f2) end
-- The first whole µs (from origin) at which the bucket admits: its TAT rounded up.
local function b_ready(w)
  local f = E[w.p .. 'f']
  return f > 0 and E[w.p .. 'q'] + 1 or E[w.p .. 'q']
end
-- max(TAT, now) + n intervals (an admission of 1 that charges n - 1 more, or
-- a charge of n), saturating at TOP.
local function b_add(w, n)
  local q, f = E[w.p .. 'q'], E[w.p .. 'f']
  if pless(q, f, t, 0) then q, f = t, 0 end
  local dq, df = times(w, n)
  q, f = padd(w, q, f, dq, df)
  eset(w.p .. 'q', q); eset(w.p .. 'f', f)
end
-- min(floor(D / T), cap) for D = {q, f} ticks (cap < 2^52), exact: a
-- double's estimate (off by a few at most below 2^52), corrected.
local function per_interval(w, cap, q, f)
  local k = math.floor((q + f / w.m) / (w.tq + w.tr / w.m))
  if k < 0 then k = 0 end
  if k > cap + 8 then
    local cq, cf = times(w, cap)
    if not pless(q, f, cq, cf) then return cap end
    k = cap + 8
  end
  while k > 0 do
    local kq, kf = times(w, k)
    if not pless(q, f, kq, kf) then break end
    k = k - 1
  end
  while true do
    local kq, kf = times(w, k + 1)
    if pless(q, f, kq, kf) or kq >= TOP or k >= cap then break end
    k = k + 1
  end
  return k < cap and k or cap
end
local function psub(w, q1, f1, q2, f2) -- {q1, f1} - {q2, f2}, the first not below the second
  local q, f = q1 - q2, f1 - f2
  if f < 0 then q, f = q - 1, f + w.m end
  return q, f
end
-- A refund by ticket (bucket_ticket.hpp): at most min(n, (end - now) / T,
-- owed(now) / T) whole units, end = the admission's time + its units'
-- intervals; nothing for an admission before the bucket's last change.
-- now is the latest time seen (a lagging time would give back more).
local function b_refund(w, at, units, n)
  if at < E[w.p .. 'g'] or n == 0 then return end
  local q, f = E[w.p .. 'q'], E[w.p .. 'f']
  if not pless(tl, 0, q, f) then return end -- already full at now
  local eq, ef = times(w, units)
  eq = eq + at
  if not pless(tl, 0, eq, ef) then return end -- its own intervals are over
  local k = per_interval(w, n, psub(w, eq, ef, tl, 0))
  k = per_interval(w, k, psub(w, q, f, tl, 0))
  if k == 0 then return end
  local kq, kf = times(w, k)
  q, f = psub(w, q, f, kq, kf)
  eset(w.p .. 'q', q); eset(w.p .. 'f', f)
end

-- server_model::learn (account/learn.hpp). A dimension 'l' keeps its
-- window and its bucket; <p>v = the µs it switched at + 1 (0: not yet), <p>u
-- = the end of the pause its switch caused + 1 (its guard; 0: not yet set),
-- <p>x, <p>y = the shadow, whole µs and ns: the time the bucket would next
-- admit had it seen the strict traffic, counted as in-process in the
-- interval rounded up to the ns, at most 2L intervals ahead. Phases: 1
-- strict (the window), 2 both (for a window after the switch), 3 spaced
-- (the bucket alone; from the start where the window admits less).
local function phase(k)
  local w = W[k]
  if w.sp then return 3 end
  local v = E[w.p .. 'v']
  if v == 0 then return 1 end
  return t < v - 1 + w.period and 2 or 3
end
-- The first admission µs whose tpm ticket is the bucket's (earlier ones
-- name a sub-window of the window: they are below the switch).
local function spaced_from(k)
  local w = W[k]
  if w.sp then return -1 end
  local v = E[w.p .. 'v']
  if v == 0 then return TOP end
  return v - 1 + w.period
end
local function ns_unit(w) -- the interval rounded up to the ns, as {µs, ns} in a bucket of 1000 ticks a µs
  local r = math.ceil(w.tr / (w.m / 1000))
  if r >= 1000 then return {m = 1000, tq = w.tq + 1, tr = r - 1000} end
  return {m = 1000, tq = w.tq, tr = r}
end
-- n units of strict traffic from `from` on (learn_state::shadow).
local function shadow(k, n, from)
  if n == 0 then return end
  local w = W[k]
  local u = ns_unit(w)
  local cq, cf = E[w.p .. 'x'], E[w.p .. 'y']
  local bq, bf = cq, cf
  if pless(bq, bf, from, 0) then bq, bf = from, 0 end
  local nq, nf = padd(u, bq, bf, times(u, n))
  local hq, hf = padd(u, t, 0, times(u, 2 * w.limit))
  if pless(hq, hf, nq, nf) then nq, nf = hq, hf end
  if pless(cq, cf, nq, nf) then eset(w.p .. 'x', nq); eset(w.p .. 'y', nf) end
end
-- The switch (learn_state::switch_to_spaced): the bucket, unused so far,
-- is charged the whole intervals that end at the shadow, as of the time
-- (at most one interval before t) from which they do.
local function switch_to_spaced(k, guard)
  local w = W[k]
  eset(w.p .. 'v', t + 1)
  eset(w.p .. 'u', t + guard + 1)
  local sq, sf = E[w.p .. 'x'], E[w.p .. 'y']
  if not pless(t, 0, sq, sf) then return end
  local u = ns_unit(w)
  local dq, df = psub(u, sq, sf, t, 0)
  local n = per_interval(u, 2 * w.limit + 2, dq, df)
  local kq, kf = times(u, n)
  if pless(kq, kf, dq, df) then n = n + 1; kq, kf = times(u, n) end
  local aq, af = psub(u, sq, sf, kq, kf)
  local bq, bf = E[w.p .. 'q'], E[w.p .. 'f']
  local at_f = af * (w.m / 1000)
  if pless(bq, bf, aq, at_f) then bq, bf = aq, at_f end
  bq, bf = padd(w, bq, bf, times(w, n))
  eset(w.p .. 'q', bq); eset(w.p .. 'f', bf)
end

-- ceil(a x b / c) for 0 <= a < c < 2^52 and 0 <= b < 2^53, exact: b's bits
-- from the top, the product kept as q x c + r (r < c, so 2r stays exact).
local function muldiv_ceil(a, b, c)
  local bits, x = {}, b
  while x > 0 do
    local h = x % 2
    bits[#bits + 1] = h
    x = (x - h) / 2
  end
  local q, r = 0, 0
  for i = #bits, 1, -1 do
    q, r = 2 * q, 2 * r
    if r >= c then q, r = q + 1, r - c end
    if bits[i] == 1 then
      r = r + a
      if r >= c then q, r = q + 1, r - c end
    end
  end
  return r > 0 and q + 1 or q
end
-- Bucket w moves to interval nw at t, owing the units it owed
-- (detail::gcra_convert_tat): owed ticks x new / old interval, rounded up.
-- Intervals past 2^52 ticks (about 52 days a request) round up by 1 µs more.
local function rate_to(w, nw)
  local q, f = E[w.p .. 'q'], E[w.p .. 'f']
  local oq, of = 0, 0
  if pless(t, 0, q, f) then
    local dq, df = psub(w, q, f, t, 0)
    local d = w.tq * w.m + w.tr
    local n = nw.tq * nw.m + nw.tr
    if d < TOP and n < 2 * TOP then
      local k = per_interval(w, TOP - 1, dq, df)
      local rq, rf = psub(w, dq, df, times(w, k))
      local x = muldiv_ceil(rq * w.m + rf, n, d)
      local xq = fdiv(x, nw.m)
      oq, of = padd(nw, xq, x - xq * nw.m, times(nw, k))
    else
      oq = math.ceil((dq + df / w.m) * (nw.tq + nw.tr / nw.m) / (w.tq + w.tr / w.m)) + 1
      if oq >= TOP then oq = TOP end
    end
  end
  q, f = padd(nw, t, 0, oq, of)
  eset(w.p .. 'q', q); eset(w.p .. 'f', f)
  eset(w.p .. 'm', nw.m); eset(w.p .. 'a', nw.tq); eset(w.p .. 'b', nw.tr)
  eset(w.p .. 'g', tl + 1)
end

-- The calendar day (calendar_quota): cd the day the counts are of, cu what
-- it used; only an admission or a charge moves cd, so a past day is never
-- reopened: a call before cd is refused (stale) with the wait to when cd
-- can decide it, and a charge there counts in cd.
local CAL_TOP = 1099511627775 -- 2^40 - 1, as calendar_quota
local function c_used(d) return d > E.cd and 0 or E.cu end
local function c_charge(n)
  if n == 0 then return end
  local d = day_of(now)
  if d < E.cd then d = E.cd end
  local u = c_used(d) + n
  if u > CAL_TOP then u = CAL_TOP end
  eset('cd', d); eset('cu', u)
end
local function c_answer(n)
  if n == 0 then return 0, 0 end
  if n > W[3].limit then return 3, 0 end
  local d = day_of(now)
  local stale = d < E.cd
  if stale then d = E.cd end
  if c_used(d) + n > W[3].limit then d = d + 1 elseif not stale then return 0, 0 end
  local wt = day_start(d) - now -- to cd's start, or past it to the next day's
  return 1, wt > 0 and wt or 1
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
-- {verdict, wait}: verdict 0 admit, 1 wait, 3 never, 9 stale (x before the
-- head's sub-window: the wait to the head, and on from there to where it
-- admits, as the in-process account's; the wait always from x).
local function answer(w, n, x)
  if n == 0 then return 0, 0 end
  if n > w.limit then return 3, 0 end
  local s = slot_at(w, x)
  local v = 1
  if s < w.head then s, v = w.head, 9 end
  if sum(w, s) + n > w.limit then
    local room = w.limit - n
    local target = s + 1
    while sum(w, target) > room and target <= w.head + K do target = target + 1 end
    s = target
  elseif v == 1 then
    return 0, 0
  end
  local d = slot_start(w, s) - x
  return v, d > 0 and d or 1
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
  if win(k) and (slot_at(w, t) > w.head or op == 'waits') and not need(w) then return CORRUPT end
end
for p = 0, P - 1 do
  local b = B0 + p * Q
  if held[p] and num(b + 5) > 0 then
    for k = 2, 3 do
      local w, s = W[k], num(b + 4 + k)
      if win(k) and s >= 0 and s < w.head and s + K >= w.head and not need(w) then return CORRUPT end
    end
  end
end
-- A chunk's leftovers (kind 4) go back into the sub-windows they were
-- counted in: the rings of those older than the head are read now too.
for p = 0, P - 1 do
  local b = B0 + p * Q
  if num(b) == 4 and num(b + 8) == E.eid then
    for k = 1, 3 do
      local w, s = W[k], k == 1 and num(b + 3) or num(b + 4 + k)
      if win(k) and s < w.head and s + K >= w.head and not need(w) then return CORRUPT end
    end
  end
end
local function need_all()
  for k = 1, 3 do
    if win(k) and not W[k].ring and not load(W[k]) then return false end
  end
  return true
end
)tglua";

}  // namespace detail_script
}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_SPACED_HPP
