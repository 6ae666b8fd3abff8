// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script_spaced.hpp: the second part of the account's script
// (redis/script.hpp, which joins the parts and states the contract): the
// start of phase 2, the decision in memory: the set of epoch fields to
// write, each dimension's policy, the spaced buckets (GCRA of burst 1) and
// the calendar day. Text only: it uses the locals of redis/script_check.hpp
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
local function win(k) return W[k].limit > 0 and W[k].kind == 'w' end
local function bkt(k) return W[k].limit > 0 and W[k].kind == 'b' end
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
  if bkt(k) then
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
)tglua";

}  // namespace detail_script
}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_SPACED_HPP
