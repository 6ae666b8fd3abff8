// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// redis/script_settle.hpp: the third part of the account's script
// (redis/script.hpp, which joins the parts and states the contract): the
// rest of phase 2 (the lease set's rules, the queued settlements), phase 3
// (save: the writes) and what each dimension has left. Text only: it uses
// the locals of redis/script_check.hpp and redis/script_spaced.hpp and means
// something only joined after them, as redis::script.
#ifndef TOLLGATE_REDIS_SCRIPT_SETTLE_HPP
#define TOLLGATE_REDIS_SCRIPT_SETTLE_HPP

#include <tollgate/config.hpp>

#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

namespace redis {
namespace detail_script {

inline constexpr std::string_view script_settle = R"tglua(local function committed_add(d)
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
      if lrn(2) then
        -- learn: a ticket of the window (strict), none (both: -1), or of
        -- the bucket (spaced), whose intervals include the spacing tokens.
        if s1 >= 0 and s1 >= spaced_from(2) then b_refund(W[2], s1, units + LX, back)
        elseif s1 >= 0 then give_back(W[2], s1, back) end
      else
        if win(2) then give_back(W[2], s1, back) end
        if bkt(2) and s1 >= 0 then b_refund(W[2], s1, units, back) end
      end
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

local function window_available(w)
  local s = slot_at(w, t)
  if s < w.head then s = w.head end
  local used = sum(w, s)
  return used >= w.limit and 0 or w.limit - used
end
local function available(k)
  local w = W[k]
  if w.kind == 'b' then return b_ready(w) <= t and 1 or 0 end
  if w.kind == 'l' then -- learn_state::remaining: both, the smaller; a token bucket, a request's worth or none
    local ph = phase(k)
    local a = ph ~= 3 and window_available(w) or -1
    if ph ~= 1 then
      local b = b_ready(w) <= t and 1 or 0
      if k == 2 then b = b > 0 and LM or 0 end
      if a < 0 or b < a then a = b end
    end
    return a
  end
  if w.kind == 'c' then
    local d = day_of(now)
    if d < E.cd then d = E.cd end
    local u = c_used(d)
    return u >= w.limit and 0 or w.limit - u
  end
  return window_available(w)
end

)tglua";

}  // namespace detail_script
}  // namespace redis

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_REDIS_SCRIPT_SETTLE_HPP
