// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script_decide.hpp: the last part of the account's script
// (redis/script.hpp, which joins the parts and states the contract): the
// answers of each op (the control ops, learn's lesson among them) and the
// admission. Text only: it uses the locals of the parts before it
// (redis/script_check.hpp, script_spaced.hpp, script_settle.hpp) and means
// something only joined after them, as redis::script.
#ifndef TOLLGATE_REDIS_SCRIPT_DECIDE_HPP
#define TOLLGATE_REDIS_SCRIPT_DECIDE_HPP

#include <tollgate/config.hpp>

#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {
namespace detail_script {

inline constexpr std::string_view script_decide = R"tglua(
if op == 'flush' then save(); return {0, 0, 0, 0, -1, -1, now, E.eid} end
if op == 'peek' then
  local out = {0, (slots_stale and in_use < conc) and conc or in_use, E.committed, E.spent, now}
  for k = 1, 3 do out[#out + 1] = W[k].limit > 0 and available(k) or -1 end
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
  local function bucket_own(w) -- one interval (rounded up) or the bucket's own wait, as own_wait
    local e = w.tr > 0 and w.tq + 1 or w.tq
    local own = b_ready(w) - t
    return e > own and e or own
  end
  local function window_own(w)
    local e = math.ceil(w.period / w.limit)
    local v, d = answer(w, 1, t)
    local own = v == 1 and d or 0
    return e > own and e or own
  end
  for k = 1, 2 do
    local w = W[k]
    if bkt(k) then
      out[k] = bucket_own(w)
    elseif lrn(k) then -- learn_state::adjust: both, the later; spaced, the bucket's
      local ph = phase(k)
      local x = ph ~= 3 and window_own(w) or 0
      if ph ~= 1 then
        local y = bucket_own(w)
        if ph == 3 or y > x then x = y end
      end
      out[k] = x
    elseif w.limit > 0 then
      out[k] = window_own(w)
    end
  end
  local w = W[3]
  if cal() then
    out[3] = day_start(day_of(now) + 1) - now -- the next midnight: calendar_quota::reset_in
  elseif w.limit > 0 then
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
  local b = B0 + P * Q
  local what = ARGV[b]
  -- The end of the pause a switch caused (learn_state::guard), for the
  -- dimensions `bits` (1 rpm, 2 tpm, 3 both) switched: 429s from then on
  -- answer requests the margin policy admitted.
  local function guard(bits, p)
    for k = 1, 2 do
      local w = W[k]
      if lrn(k) and (bits == k or bits == 3) and E[w.p .. 'v'] ~= 0 then eset(w.p .. 'u', t + p + 1) end
    end
  end
  if what == 'pause_us' then
    local u = now + num(b + 1)
    if u > E.pause then eset('pause', u) end
    if ARGV[b + 2] then guard(num(b + 2), num(b + 1)) end
  elseif what == 'stop' then eset('stop', 1)
  elseif what == 'resume' then eset('stop', 0)
  elseif what == 'clear_pause' then eset('pause', 0)
  elseif what == 'restore_budget' then
    eset('committed', num(b + 1)); eset('spent', num(b + 2)); eset('bhold', 0)
  elseif what == 'learn' then
    -- A rate 429's lesson (account_policy::learn_from): kind 1 rpm, 2 tpm,
    -- 3 a rate limit naming neither; a dimension it switches is guarded
    -- for `guard` µs until its switch's pause is set (guard below).
    -- Answered {0, the dimensions switched (1 rpm, 2 tpm), the level, ...}.
    local kind, guard = num(b + 1), num(b + 2)
    local st = {0, 0} -- 0 none, 1 strict, 2 guarded, 3 widenable
    for k = 1, 2 do
      local w = W[k]
      if lrn(k) then
        local u = E[w.p .. 'u']
        if w.sp then st[k] = 3
        elseif E[w.p .. 'v'] == 0 then st[k] = 1
        elseif u == 0 or t < u - 1 then st[k] = 2
        else st[k] = 3 end
      end
    end
    local sw, widen = {false, false}, false
    if kind == 1 or kind == 2 then
      sw[kind] = st[kind] == 1
      widen = st[kind] == 3
    elseif kind == 3 then
      sw[1], sw[2] = st[1] == 1, st[2] == 1
      widen = (st[1] ~= 0 or st[2] ~= 0) and (st[1] == 0 or st[1] == 3) and (st[2] == 0 or st[2] == 3)
    else error('tollgate: bad control') end
    local bits = 0
    for k = 1, 2 do
      if sw[k] then switch_to_spaced(k, guard); bits = bits + k end
    end
    if widen and E.lw < LTOP then
      -- The next level's buckets (b + 3 ..: ticks per µs, µs, ticks of rpm
      -- then tpm) take over now, each owing the units it owed
      -- (gcra_convert_tat, as set_rate in-process); no earlier ticket refunds.
      eset('lw', E.lw + 1)
      for k = 1, 2 do
        if lrn(k) then
          local c = b + 3 * k
          local nw = {m = num(c), tq = num(c + 1), tr = num(c + 2)}
          if nw.m < 1 or nw.m > 14000 or nw.tr >= nw.m or (nw.tq == 0 and nw.tr == 0) then error('tollgate: bad interval') end
          rate_to(W[k], nw)
        end
      end
    end
    save()
    return {0, 0, E.lw, 0, bits, -1, now, E.eid}
  elseif what == 'guard' then guard(num(b + 1), num(b + 2))
  else error('tollgate: bad control') end
  save()
  return {0, 0, 0, 0, -1, -1, now, E.eid}
end
if op ~= 'admit' and op ~= 'chunk' then error('tollgate: bad op') end
-- A chunk (redis/chunk.hpp) is counted in strict windows and spaced
-- buckets; its concurrency slots need a deadline; a calendar day refuses it.
if op == 'chunk' and ((conc > 0 and lease_us == 0) or cal()) then return BAD end

-- The admission.
local n, worst = num(17), num(18)
local function refuse(paused_for)
  if not need_all() then return CORRUPT end
  local bits, wait, never = 0, 0, false
  if paused_for > 0 then bits = 128; wait = paused_for end
  if conc > 0 and in_use >= conc then bits = bits + 1 end
  if slots_stale then
    if in_use < conc then bits = bits + 1 end
    if E.lgone - now > wait then wait = E.lgone - now end
  end
  local want = {1, n, n}
  for k = 1, 3 do
    local w = W[k]
    if w.limit > 0 then
      local v, d
      if w.kind == 'b' then -- time_until(1), whatever the tokens (account/limiters.hpp report)
        local r = b_ready(w)
        if r > t then v, d = 1, r - t else v, d = 0, 0 end
      elseif w.kind == 'c' then
        v, d = c_answer(n)
      elseif w.kind == 'l' then
        -- learn (account/refusal.hpp): the window before its phase ends
        -- (in both, its wait cut at that end), the bucket after the switch.
        local ph = phase(k)
        v, d = 0, 0
        if ph ~= 3 then
          v, d = answer(w, want[k], t)
          if ph == 2 and v ~= 0 then
            local left = E[w.p .. 'v'] - 1 + w.period - t
            if v == 3 or d > left then v, d = 1, left end
          end
        end
        if ph ~= 1 and (k == 1 or n > 0) then
          local r = b_ready(w)
          if r > t then
            if v == 0 then v, d = 1, r - t elseif v ~= 3 and r - t > d then d = r - t end
          end
        end
      else
        v, d = answer(w, want[k], t)
      end
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
if conc > 0 and (in_use >= conc or slots_stale) then return refuse(0) end
local want = {1, n, n}
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and want[k] > 0 then
    if w.kind == 'b' then
      if b_ready(w) > t then return refuse(0) end
    elseif w.kind == 'c' then
      if c_answer(n) ~= 0 then return refuse(0) end
    elseif w.kind == 'l' then
      local ph = phase(k)
      if ph ~= 3 then
        local s = slot_at(w, t)
        if s < w.head or sum(w, s) + want[k] > w.limit then return refuse(0) end
      end
      if ph ~= 1 and b_ready(w) > t then return refuse(0) end
    else
      local s = slot_at(w, t)
      -- The fast path needs no ring: within the head's sub-window the window
      -- holds old + cur; past it the ring was read above.
      if s < w.head or sum(w, s) + want[k] > w.limit then return refuse(0) end
    end
  end
end
if budget >= 0 and worst > budget - E.committed then return refuse(0) end
-- A request of 0 tokens takes nothing from a token window, but a chunk's
-- tokens go into its head: where the head is ahead of t (stale) it gets no
-- chunk and is admitted as by admit (a lease), as without chunks.
-- So is one where the token bucket, which a 0-token request does not
-- check, is not ready: a chunk's time starts at t.
-- learn: a dimension on its strict window counts a chunk there (and in
-- its shadow), one past its switch's window takes a slice as a spaced
-- bucket, one between (both) takes no chunk.
local function cwin(k) return win(k) and not (lrn(k) and phase(k) ~= 1) end
local function cbkt(k) return bkt(k) or (lrn(k) and phase(k) == 3) end
local plain = false
if n == 0 then
  for k = 2, 3 do if cwin(k) and slot_at(W[k], t) < W[k].head then plain = true end end
  if cbkt(2) and b_ready(W[2]) > t then plain = true end
end
for k = 1, 2 do if lrn(k) and phase(k) == 2 then plain = true end end
if op == 'chunk' and not plain then
  -- Up to the wanted units of each window (at least one request and n
  -- tokens, checked above), all counted in the head sub-window at t: the
  -- caller spends them only while that sub-window is the head of each.
  local cb = B0 + P * Q
  local g = {num(cb), num(cb + 1), 0}
  if g[1] < 1 then g[1] = 1 end
  if g[2] < n then g[2] = n end
  local slots, ends = {-1, -1, -1}, -1
  for k = 1, 3 do
    local w = W[k]
    if cwin(k) then
      local s = slot_at(w, t)
      if s < w.head then return refuse(0) end -- stale: only the head takes units
      local used = sum(w, s)
      local room = used >= w.limit and 0 or w.limit - used
      local j = k == 1 and 1 or 2
      if room < g[j] then g[j] = room end
      slots[k] = s
      local e = E.origin + slot_start(w, s + 1)
      if ends < 0 or e < ends then ends = e end
    end
  end
  for k = 1, 3 do if cwin(k) then put(W[k], slots[k], k == 1 and g[1] or g[2]) end end
  -- learn's shadow counts the chunk as spent at its end (no later than that).
  for k = 1, 2 do if lrn(k) and cwin(k) then shadow(k, g[k], ends - E.origin) end end
  -- The spaced buckets (each ready at t: checked above) give the chunk a
  -- slice of time, [t, t + D): D the shorter of the wanted units' times,
  -- at least the request's own, in whole µs. Admissions come at whole µs,
  -- so back to back they are an interval rounded up to the µs apart: D
  -- counts the wanted requests so (RPM), so that each fits; the wanted
  -- tokens' time is rounded up (TPM: a request may lose up to a µs of it).
  -- Each bucket's TAT moves to t + D, so no other admission comes before
  -- it; the holder spaces its own requests in it. Only admissions from the
  -- slice's end on may refund (<p>g): none before it reaches into it.
  -- learn's token bucket also charges each request its spacing tokens (LX).
  local D = -1
  local lx = lrn(2) and LX or 0
  if cbkt(1) then
    local w = W[1]
    D = g[1] * (w.tr > 0 and w.tq + 1 or w.tq) -- below 2^53: g[1] x the interval is about the period
  end
  if cbkt(2) then
    local q, f = times(W[2], g[2] + g[1] * lx)
    if f > 0 then q = q + 1 end
    if D < 0 or q < D then D = q end
  end
  for k = 1, 2 do
    if cbkt(k) then
      local q, f = times(W[k], want[k] + (k == 2 and want[2] > 0 and lx or 0))
      if f > 0 then q = q + 1 end
      if q > D then D = q end
    end
  end
  if D >= 0 then
    for k = 1, 2 do
      if cbkt(k) then
        local w = W[k]
        eset(w.p .. 'q', t + D); eset(w.p .. 'f', 0)
        if t + D > E[w.p .. 'g'] then eset(w.p .. 'g', t + D) end
      end
    end
    if ends < 0 or E.origin + t + D < ends then ends = E.origin + t + D end
  else
    D = 0
  end
  -- Concurrency: up to the wanted slots (at least one; in_use < conc was
  -- checked above), each a lease of its own id, all ending lease_us after
  -- the chunk's end, so a request given one before that end holds it for
  -- lease_us at least, as a lease of admit.
  local c, first, dl = 0, 0, 0
  if conc > 0 then
    c = num(cb + 2)
    if c < 1 then c = 1 end
    if c > conc - in_use then c = conc - in_use end
    first = E.next + 1
    dl = ends + lease_us
    eset('next', E.next + c)
  end
  -- Money: up to the wanted nanos (at least the request's worst case, which
  -- the budget has left: checked above), committed now.
  local m = 0
  if budget >= 0 then
    m = num(cb + 3)
    if m < worst then m = worst end
    if m > budget - E.committed then m = budget - E.committed end
    committed_add(m)
  end
  if c > 0 then save(dl, first, c) else save() end
  return {0, g[1], g[2], ends, slots[1], slots[2], slots[3], now, E.eid, c, first, dl, m, D}
end
local slots = {-1, -1, -1}
for k = 1, 3 do
  local w = W[k]
  if w.limit > 0 and want[k] > 0 then
    if w.kind == 'b' then
      slots[k] = t -- the ticket: the admission's time (its end is t + n intervals)
      b_add(w, want[k])
    elseif w.kind == 'l' then
      -- learn_take: the window before the switch's phase ends (its ticket
      -- in strict), the bucket after the switch (its ticket in spaced: both
      -- keep the tokens), the shadow while strict. The bucket takes one
      -- request and charges the rest and the spacing tokens.
      local ph = phase(k)
      if ph ~= 3 then
        local s = slot_at(w, t)
        put(w, s, want[k])
        if ph == 1 then slots[k] = s end
      end
      if ph ~= 1 then
        b_add(w, k == 1 and 1 or want[k] + LX)
        if ph == 3 then slots[k] = t end
      end
      if ph == 1 then shadow(k, want[k], t) end
    elseif w.kind == 'c' then
      local d = day_of(now)
      if d < E.cd then d = E.cd end
      slots[k] = d
      local u = c_used(d) + n -- read before cd moves to d
      eset('cd', d); eset('cu', u)
    else
      slots[k] = slot_at(w, t)
      put(w, slots[k], want[k])
    end
  end
end
if budget >= 0 then committed_add(worst) end
local id = E.next + 1
eset('next', id)
save(lease_us > 0 and now + lease_us or nil, id)
return {0, 0, 0, id, slots[2], slots[3], now, E.eid}
)tglua";

}  // namespace detail_script
}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_DECIDE_HPP
