// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script_decide.hpp: the last part of the account's script
// (redis/script.hpp, which joins the parts and states the contract): the
// rest of phase 2 (the lease set's rules, the queued settlements), phase 3,
// the writes, and the answers of each op. Text only: it uses the locals of
// redis/script_check.hpp and redis/script_spaced.hpp and means something
// only joined after them, as redis::script.
#ifndef TOLLGATE_REDIS_SCRIPT_DECIDE_HPP
#define TOLLGATE_REDIS_SCRIPT_DECIDE_HPP

#include <tollgate/config.hpp>

#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {
namespace detail_script {

inline constexpr std::string_view script_decide = R"tglua(
local function committed_add(d)
  local c = E.committed + d
  if c < 0 then c = 0 elseif c > TOP then c = TOP end
  eset('committed', c)
end
if now > E.last then eset('last', now) end
-- The lease set lost on its own (an eviction: the volatile-* policies take
-- exactly the keys with an expiry), or smaller than the calls left it (a
-- member removed behind the script's back), while the epoch says it still
-- holds leases: the lost ones end by lease_end, so admissions hold until then.
local shrunk = changed and in_use < E.lcount
if shrunk and E.lease_end > now and E.lease_end > E.hold then eset('hold', E.lease_end) end
-- Or it expired (the server's expiry clock passed its deadlines): a later
-- call at a time before lease_end (a clock stepped back) finds the slots
-- full until then, as for leases an admission removed (lgone, in save).
if shrunk and E.lease_end > 0 and E.lease_end <= now and E.lease_end > E.lgone then
  eset('lgone', E.lease_end)
end
-- A call before lgone cannot count the slots: leases removed at a later time
-- may still be held at its own. It finds them all taken, with the wait to lgone.
local slots_stale = conc > 0 and now < E.lgone
local removed = {}
local count0 = in_use -- the set's size before this call's writes (0: no key)
in_use = in_use - expired

-- The queued settlements, applied at this call's time (later than they
-- happened: what they free comes back late, never early).
for p = 0, P - 1 do
  local b = B0 + p * Q
  local kind, id, reserved, actual = num(b), num(b + 1), num(b + 2), num(b + 3)
  local more, back, s1, s2 = num(b + 4), num(b + 5), num(b + 6), num(b + 7)
  local units = num(b + 9)
  local h = held[p] == true
  if h then
    held[p] = nil -- a lease settled twice in one call gives back once
    removed[#removed + 1] = S(id)
    in_use = in_use - 1
  end
  if kind == 1 then
    if more > 0 then
      for k = 2, 3 do if win(k) then charge(W[k], more, t) end end
      if bkt(2) then b_add(W[2], more) end
      if cal() then c_charge(more) end
    end
    if back > 0 and h then
      if win(2) then give_back(W[2], s1, back) end
      if bkt(2) and s1 >= 0 then b_refund(W[2], s1, units, back) end
      if win(3) then give_back(W[3], s2, back) end
      if cal() and s2 == E.cd then eset('cu', back < E.cu and E.cu - back or 0) end
    end
    if budget >= 0 then
      if h then committed_add(actual - reserved)
      elseif actual > reserved then committed_add(actual - reserved) end
      local sp = E.spent + actual
      eset('spent', sp > TOP and TOP or sp)
    end
  elseif kind == 2 then
    if h and budget >= 0 then committed_add(-reserved) end
  elseif kind == 5 and num(b + 8) == E.eid then
    -- A chunk's money back (redis/chunk.hpp): reserved = nanos no request
    -- spent, committed no longer; only in the epoch that granted it.
    if budget >= 0 then committed_add(-reserved) end
  elseif kind == 4 and num(b + 8) == E.eid then
    -- A chunk's leftovers (redis/chunk.hpp): reserved = requests back into
    -- rpm's sub-window `actual`, back = tokens into tpm's and tpd's. Only in
    -- the epoch that granted it (a lost epoch's counts are not this one's).
    if win(1) and reserved > 0 then give_back(W[1], actual, reserved) end
    if back > 0 then
      if win(2) then give_back(W[2], s1, back) end
      if win(3) then give_back(W[3], s2, back) end
    end
  end
end

-- Phase 3: the writes. new_lease: the deadline of the lease admitted, or nil;
-- count: how many leases from id on (a chunk's slots), 1 if nil.
local function save(new_lease, id, count)
  if fresh_state then
    redis.call('DEL', KEYS[2])
    for f, _ in pairs(E) do edirty[f] = true end
    for k = 1, 3 do W[k].sdirty = true end
  end
  -- Leases past their deadline leave the set only with an admission, never
  -- with a peek, a refusal or a flush (so a peek at a time ahead frees no
  -- slot); lgone keeps the latest deadline so removed.
  local gone = new_lease ~= nil and expired > 0
  local lo_gone = gone or changed
  if new_lease then
    -- Added before the removals, so a set that stays in use keeps its key
    -- and its expiry; a key made now needs one.
    local new_set = count0 == 0
    count = count or 1
    local za = {}
    for j = 0, count - 1 do za[#za + 1] = S(new_lease); za[#za + 1] = S(id + j) end
    redis.call('ZADD', KEYS[2], unpack(za))
    if new_set or new_lease < E.llo then eset('llo', new_lease); lo_gone = false end
    if new_set or new_lease > E.lease_end then eset('lease_end', new_lease) end
    -- The set's expiry runs ahead of its latest deadline by an eighth of the
    -- lease timeout, so it moves once per that time, not on every lease (and
    -- only forward: a shorter lease timeout after a change of configuration
    -- never cuts the older leases' life short).
    if E.test == 0 and (new_set or new_lease > E.lease_exp) then
      local ahead = math.ceil(lease_us / 8)
      -- One ms more: the server's expiry clock is the script's start, in ms,
      -- which may be up to 1 ms behind TIME. A chunk's slots end later than
      -- lease_us from now (at the chunk's end plus lease_us).
      redis.call('PEXPIRE', KEYS[2], math.ceil((new_lease - now + ahead) / 1000) + 1)
      eset('lease_exp', new_lease + ahead)
    end
    in_use = in_use + count
  end
  if gone then
    local top = redis.call('ZRANGE', KEYS[2], S(now), '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1, 'WITHSCORES')
    local d = top[2] and tonumber(top[2]) or 0
    if d > E.lgone then eset('lgone', d) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', S(now))
  end
  if #removed > 0 then redis.call('ZREM', KEYS[2], unpack(removed)) end
  local size = gone and in_use or in_use + expired -- the set as this call leaves it
  if size ~= E.lcount then eset('lcount', size) end
  if size == 0 then
    if E.lease_end ~= 0 then eset('lease_end', 0) end
    if E.lease_exp ~= 0 then eset('lease_exp', 0) end
    if E.llo ~= 0 then eset('llo', 0) end
  elseif lo_gone then
    local lo = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    eset('llo', sval(lo[2]) or now)
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

local function available(k)
  local w = W[k]
  if w.kind == 'b' then return b_ready(w) <= t and 1 or 0 end
  if w.kind == 'c' then
    local d = day_of(now)
    if d < E.cd then d = E.cd end
    local u = c_used(d)
    return u >= w.limit and 0 or w.limit - u
  end
  local s = slot_at(w, t)
  if s < w.head then s = w.head end
  local used = sum(w, s)
  return used >= w.limit and 0 or w.limit - used
end

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
  for k = 1, 2 do
    local w = W[k]
    if bkt(k) then
      -- One interval (rounded up) or the bucket's own wait, as own_wait.
      local e = w.tr > 0 and w.tq + 1 or w.tq
      local own = b_ready(w) - t
      out[k] = e > own and e or own
    elseif w.limit > 0 then
      local e = math.ceil(w.period / w.limit)
      local v, d = answer(w, 1, t)
      local own = v == 1 and d or 0
      out[k] = e > own and e or own
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
local plain = false
if n == 0 then
  for k = 2, 3 do if win(k) and slot_at(W[k], t) < W[k].head then plain = true end end
  if bkt(2) and b_ready(W[2]) > t then plain = true end
end
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
    if win(k) then
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
  for k = 1, 3 do if win(k) then put(W[k], slots[k], k == 1 and g[1] or g[2]) end end
  -- The spaced buckets (each ready at t: checked above) give the chunk a
  -- slice of time, [t, t + D): D the shorter of the wanted units' times,
  -- at least the request's own, in whole µs. Admissions come at whole µs,
  -- so back to back they are an interval rounded up to the µs apart: D
  -- counts the wanted requests so (RPM), so that each fits; the wanted
  -- tokens' time is rounded up (TPM: a request may lose up to a µs of it).
  -- Each bucket's TAT moves to t + D, so no other admission comes before
  -- it; the holder spaces its own requests in it. Only admissions from the
  -- slice's end on may refund (<p>g): none before it reaches into it.
  local D = -1
  if bkt(1) then
    local w = W[1]
    D = g[1] * (w.tr > 0 and w.tq + 1 or w.tq) -- below 2^53: g[1] x the interval is about the period
  end
  if bkt(2) then
    local q, f = times(W[2], g[2])
    if f > 0 then q = q + 1 end
    if D < 0 or q < D then D = q end
  end
  for k = 1, 2 do
    if bkt(k) then
      local q, f = times(W[k], want[k])
      if f > 0 then q = q + 1 end
      if q > D then D = q end
    end
  end
  if D >= 0 then
    for k = 1, 2 do
      if bkt(k) then
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
