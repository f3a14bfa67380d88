"""Each worker's budget holds in Redis, and their release when the worker dies.

Every process whose counters are in Redis (a worker of ``tracking serve --workers N``, or an
instance) has a random worker id and a *lease*, a key of its own that expires
:data:`DEFAULT_LEASE_SECONDS` (``TRACKING_REDIS_LEASE_SECONDS``) after it was last renewed. A
hold it places on a budget counter is recorded beside the counter, in the counter's hash of holds
(``holds:<counter>``: one field per hold, ``<worker>|<hold>|<request id>``, its units), by the
same script that admits it, so recording it costs no round trip of its own; settling the hold
removes its field in the script that settles it. A hold whose field is present is counted in the
counter; one whose field is gone (its worker was taken for dead, Redis lost it) is not, and its
settling starts the counter again from the ledger, which has the call's row by then
(:data:`ADJUST`): never released twice.

The lease is renewed by a heartbeat, every quarter of the lease, on the worker's event loop
(:class:`~tracking.proxy.shared_counters.RedisCounters`), and by a reservation that places a
hold when the lease was last renewed half a lease ago or more; the heartbeat's script
(:data:`BEAT`) also takes every worker whose lease is over for dead: it removes that
worker's holds from the counters' hashes and deletes each counter they were on, so the next
reservation starts it again from the ledger, which knows what the dead worker's calls cost (a row
of their own, the ``incomplete`` row its intent left, or nothing when the call never got that
far), plus the holds still recorded (every live worker's calls in flight), without those calls'
rows. A dead worker's holds therefore stop counting within ``lease + lease / 4`` seconds of its
death (60 s by default) while any worker of the proxy uses the counters, at no cost on a call's
path.

A worker taken for dead that was merely slow (its event loop held, Redis out of reach for it
longer than the lease) finds out from the next script that renews its lease: it puts back the
holds of its calls still in flight whose fields are gone (:data:`ADD_HOLDS`), and each call
that ended meanwhile started its counters again from the ledger, which has its row. Between the
two its calls in flight are not counted, so the lease is much longer than the heartbeat.

Every script is given each key it touches (``KEYS``), as a Redis Cluster requires: a dead
worker's counters, only known from Redis, are read first and then given to :data:`RELEASE`,
which does nothing (and is called again) when the worker holds on a counter it was not given.
On a Redis Cluster every key of the counters carries their prefix as a hash tag
(``{tracking:proxy:}budget:<counter>``), so that all of them, which one script may touch
together, are in one hash slot: on one of the cluster's masters (and its replicas). Before
2026-12-07 the heartbeat's script named the keys of other counters and workers itself, and
the counters needed one Redis server.
"""

from __future__ import annotations

__all__ = [
    "ADD_HOLDS",
    "ADJUST",
    "BEAT",
    "DEFAULT_LEASE_SECONDS",
    "LEASE_ENV",
    "RELEASE",
    "RESERVE",
    "lease_from_environment",
]

#: How long a worker's lease lasts after it was last renewed. A dead worker's lease is over 36 to
#: 48 s after its death (it renewed it up to a quarter of the lease before), after its intents
#: were claimed by the proxies of its host (every ``RESCAN_SECONDS``, 30 s, and at a successor's
#: start): the counter started again then counts its calls' ``incomplete`` rows.
LEASE_ENV = "TRACKING_REDIS_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 48.0

#: Renews the lease in ``KEYS`` (lease, registry) as ``ARGV`` (worker, lease ms) say, in the
#: caller's script; its value: 1 when the lease had lapsed (the caller may have been taken for
#: dead), else 0.
_RENEW = """
local function renew(lease, registry, worker, ms)
  local lapsed = redis.call('SET', lease, '1', 'PX', ms, 'GET') == false
  redis.call('SADD', registry, worker)
  if lapsed then return 1 end
  return 0
end
local function record(holds, holder, field, name, units, ttl)
  if redis.call('HINCRBY', holds, field, units) == tonumber(units) then
    redis.call('HINCRBY', holder, name, 1)
  end
  redis.call('EXPIRE', holds, 2 * ttl)
end
"""

#: KEYS: counter, its holds, the worker's counters, its lease, the registry of workers, the
#: counter's stamp. ARGV: amount, limit, ttl, seed ('' none), the hold's field ('' none), the
#: counter's name, worker, lease ms ('' not renewed: renewed lately), the calls in flight the
#: ledger's figure was read without ('*' not asked, else '=' and the sorted request ids joined
#: by spaces), the budget's last change (``since``, '' none: not checked). A counter whose stamp
#: is older than ``since``, or missing, was seeded before the change and counts as missing (the
#: holds recorded stay: they are added to its seed); seeded, it is stamped with ``since``.
#: Result: {status, counter, lapsed}: status -1 the counter is missing and needs a seed, -2 the
#: calls in flight are not those (read the ledger again), 0 refused, 1 reserved; the counter
#: after (before it, when refused); lapsed 1 when the worker's lease had lapsed.
RESERVE = (
    _RENEW
    + """
local current = redis.call('GET', KEYS[1])
local since = ARGV[10]
local stamp = redis.call('GET', KEYS[6])
local stale = since ~= '' and (not stamp or tonumber(stamp) < tonumber(since))
if stale then current = false end
if not current then
  if ARGV[4] == '' then return {-1, 0, 0} end
  local calls = {}
  local seen = {}
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    local id = string.match(entries[i], '^[^|]*|[^|]*|(.+)$')
    if id and not seen[id] then
      seen[id] = true
      calls[#calls + 1] = id
    end
  end
  if ARGV[9] ~= '*' then
    table.sort(calls)
    if '=' .. table.concat(calls, ' ') ~= ARGV[9] then return {-2, 0, 0} end
  end
  redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[3])
  for i = 2, #entries, 2 do  -- (strings: Redis adds exactly, Lua's numbers would not)
    current = redis.call('INCRBY', KEYS[1], entries[i])
  end
  current = current or ARGV[4]
end
if stale then
  redis.call('SET', KEYS[6], since, 'EX', ARGV[3])
elseif stamp then
  redis.call('EXPIRE', KEYS[6], ARGV[3])
end
current = tonumber(current)
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if current >= limit or current + amount > limit then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {0, current, 0}
end
local after = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local lapsed = 0
if ARGV[5] ~= '' and amount > 0 then
  record(KEYS[2], KEYS[3], ARGV[5], ARGV[6], ARGV[1], tonumber(ARGV[3]))
  if ARGV[8] ~= '' then lapsed = renew(KEYS[4], KEYS[5], ARGV[7], ARGV[8]) end
end
return {1, after, lapsed}
"""
)

#: Settling or releasing a hold. KEYS: counter, its holds, the worker's counters. ARGV: the
#: change while the hold is counted (real cost - hold, or 0 to keep it as the cost), the change
#: when it is not ('' : delete the counter), ttl, its field ('' none: taken as counted), the
#: counter's name. A hold whose field is gone is not counted (its worker was taken for dead, or
#: Redis lost it): the counter may have started again from a ledger that has the call's row, or
#: not, so it is deleted and starts again from the ledger, which has it now (a call's row is
#: written before its hold is settled); a hold kept as the cost (no row says what it cost) is
#: added instead. A missing counter is left missing.
ADJUST = """
local change = ARGV[1]
if ARGV[4] ~= '' then
  if redis.call('HDEL', KEYS[2], ARGV[4]) == 1 then
    if redis.call('HINCRBY', KEYS[3], ARGV[5], -1) <= 0 then
      redis.call('HDEL', KEYS[3], ARGV[5])
    end
  elseif ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
    return 0
  else
    change = ARGV[2]
  end
end
if change ~= '0' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], change)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

#: Puts holds (back) into the counters, all at once: after Redis restarted, an outage's holds,
#: or a worker taken for dead putting back its calls in flight. KEYS: the registry of workers,
#: the worker's lease, its counters, then each hold's counter's holds and the counter. ARGV:
#: worker, lease ms, ttl, then (counter, field, units) for each hold, in the order of KEYS. A
#: hold whose field has its units already is left alone (one with fewer gets the rest); a missing
#: counter is left missing (seeded from the ledger plus the holds). Returns how many were put
#: back.
ADD_HOLDS = (
    _RENEW
    + """
renew(KEYS[2], KEYS[1], ARGV[1], ARGV[2])
local added = 0
for i = 4, #ARGV, 3 do
  local name, field, want = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local holds, counter = KEYS[4 + 2 * (i - 4) / 3], KEYS[5 + 2 * (i - 4) / 3]
  local have = tonumber(redis.call('HGET', holds, field) or '0')
  if have < want then  -- (a hold grown since it was taken for dead has only the growth)
    local more = string.format('%d', want - have)
    record(holds, KEYS[3], field, name, more, tonumber(ARGV[3]))
    if redis.call('EXISTS', counter) == 1 then
      redis.call('INCRBY', counter, more)
      redis.call('EXPIRE', counter, ARGV[3])
    end
    added = added + 1
  end
end
return added
"""
)

#: The heartbeat's first step: renews this worker's lease (ARGV[3] == 'leave': gives it up, at
#: a clean stop), then tells which of the workers named (read from the registry just before)
#: have no lease: each is taken for dead by :data:`RELEASE`. KEYS: the registry of workers,
#: this worker's lease, then each named worker's lease. ARGV: worker, lease ms, 'beat' or
#: 'leave', then the workers named, in the order of KEYS. Result: {lapsed (this worker's lease
#: had lapsed), the workers without a lease (this one too, when leaving)}.
BEAT = (
    _RENEW
    + """
local lapsed = 0
if ARGV[3] == 'leave' then
  redis.call('DEL', KEYS[2])
else
  lapsed = renew(KEYS[2], KEYS[1], ARGV[1], ARGV[2])
end
local dead = {}
for i = 4, #ARGV do
  if redis.call('EXISTS', KEYS[i - 1]) == 0 and redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    dead[#dead + 1] = ARGV[i]
  end
end
return {lapsed, dead}
"""
)

#: The heartbeat's second step, for each worker :data:`BEAT` found without a lease: its holds'
#: fields are removed and each counter they were on deleted (started again from the ledger).
#: KEYS: the registry of workers, the worker's lease, its counters, then each of its counters'
#: holds and the counter. ARGV: the worker, then the counters' names (read from its counters
#: just before), in the order of KEYS. Result: {status, counters deleted}: status 1 released,
#: 0 nothing to do (it renewed its lease, or another worker released it first), -1 it holds on
#: a counter not named (read its counters again).
RELEASE = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return {0, 0}
end
local named = {}
for i = 2, #ARGV do named[ARGV[i]] = i end
for _, name in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not named[name] then return {-1, 0} end
end
local mark = ARGV[1] .. '|'
local dropped = 0
for i = 2, #ARGV do
  local holds, counter = KEYS[2 * i], KEYS[2 * i + 1]
  local removed = false
  for _, field in ipairs(redis.call('HKEYS', holds)) do
    if string.sub(field, 1, #mark) == mark then
      redis.call('HDEL', holds, field)
      removed = true
    end
  end
  if removed and redis.call('DEL', counter) == 1 then
    dropped = dropped + 1
  end
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
return {1, dropped}
"""


def lease_from_environment() -> float:
    """``TRACKING_REDIS_LEASE_SECONDS``: how long a worker's lease lasts (default 48 s; at least
    1 s: a value below is logged and the default used)."""
    import logging

    from ..environment_numbers import seconds_from_environment

    seconds = seconds_from_environment(LEASE_ENV, DEFAULT_LEASE_SECONDS)
    if seconds < 1:
        logging.getLogger("tracking.proxy").warning(
            "%s=%g is shorter than 1 s; using %g", LEASE_ENV, seconds, DEFAULT_LEASE_SECONDS
        )
        return DEFAULT_LEASE_SECONDS
    return seconds
