import { randomUUID } from "node:crypto";
import { Redis, ReplyError } from "ioredis";
import { DependencyDown } from "../platform/errors.js";
import { storeSpan } from "../platform/tracing.js";
import { minuteMs, sampleSize } from "./policy.js";
import { commandTimeoutMs, connectRedis, isReady, timeoutAfterIo, waitReady, type RedisClient, type RedisTarget } from "../platform/redis-connection.js";
import type { DrawState, EntryState, EntryView, Entered, Pace, Policy, QueueStore, RoomCounts, RoomSettings, Ticket, TickInput, TickResult } from "./store.js";

/*
 * One concert's room is seven keys sharing the hash tag {<concert id>}, so every
 * script below touches a single hash slot and runs on Redis Cluster:
 *   line      ZSET user -> place          the waiting line, by place: the drawn place (1..n) for
 *                                         the pre-queue, the arrival number (seq, above n) for later arrivals
 *   seen      ZSET user -> last presence  waiting fans, for abandonment
 *   admitted  ZSET user -> admitted until admitted sessions
 *   recent    ZSET seq  -> admitted at    admissions of the last minute (rate, pace)
 *   room      HASH seq counter, abandoned, firstAdmissionAt, open (the last tick's supply), draw (P D O),
 *             and the copy of the settings PostgreSQL keeps: version, paused, soldOut, closed, policy overrides
 *   entries   HASH user -> "seq:state:until"  each fan's latest entry (W A E L C)
 *   pre       ZSET user -> seq            the pre-queue, before the sale opens and while its draw is made
 * Each script is atomic, so any number of queue service instances can run the
 * admission tick at once without admitting more than max_active. A fan with no
 * entry at all is X (lost): the store lost its data since the token was made.
 */
const policyFields = ["maxActive", "ratePerMinute", "sessionTtlMs", "abandonAfterMs", "random"] as const;
const overrideFields = policyFields.map((field) => `'${field}'`).join(", ");

const prelude = `
local line, seen, admitted, recent, room, entries, pre = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local function getEntry(user)
  local raw = redis.call('HGET', entries, user)
  if not raw then return nil end
  local seq, state, untilMs = string.match(raw, '^(%d+):(%a):(%d+)$')
  return { seq = tonumber(seq), state = state, untilMs = tonumber(untilMs) }
end
local function putEntry(user, seq, state, untilMs)
  redis.call('HSET', entries, user, string.format('%d:%s:%d', seq, state, untilMs))
end
-- redis.call(command, key, unpack(args)) for any number of args: in chunks unpack() can take (Lua's stack is bounded),
-- each of whole pairs; the replies of a command that answers a list (HMGET) are joined.
local function bulk(command, key, args)
  local out = {}
  for from = 1, #args, 4000 do
    local reply = redis.call(command, key, unpack(args, from, math.min(from + 3999, #args)))
    if type(reply) == 'table' then for _, value in ipairs(reply) do out[#out + 1] = value end end
  end
  return out
end
-- The pre-queue's entries not yet placed by its draw (they are ahead of everyone in the line meanwhile).
local function unplaced()
  return redis.call('ZCARD', pre) - (tonumber(redis.call('HGET', room, 'placed')) or 0)
end
-- 'S' when sold out, 'K' when the sale has closed, else nil.
local function ended()
  local flags = redis.call('HMGET', room, 'soldOut', 'closed')
  if flags[2] == '1' then return 'K' end
  if flags[1] == '1' then return 'S' end
  return nil
end
local function view(user, seq, now, over)
  local e = getEntry(user)
  if not e then return { 'X', 0, 0 } end
  if e.seq ~= seq then return { 'E', 0, 0 } end
  if e.state == 'W' then
    if over then return { over, 0, 0 } end
    local rank = redis.call('ZRANK', line, user)
    -- While the pre-queue waits for its draw, it is ahead of everyone in the line.
    if rank then
      -- While the draw places the pre-queue, its unplaced entries may be ahead; no one is further back than
      -- their place number (a drawn place, or an arrival number), so the lesser bound is told.
      local ahead = unplaced()
      if ahead == 0 then return { 'W', rank + 1, 0 } end
      return { 'W', math.min(rank + 1 + ahead, tonumber(redis.call('ZSCORE', line, user))), 0 }
    end
    if redis.call('ZSCORE', pre, user) then return { 'P', 0, 0 } end
    return { 'E', 0, 0 }
  elseif e.state == 'A' then
    if e.untilMs <= now then return { 'E', 0, 0 } end
    return { 'A', 0, e.untilMs }
  end
  return { e.state, 0, 0 }
end
-- The room's draw state as of now (see DrawState): the first call at or after the sale's opening freezes the pre-queue.
local function drawState(now, opensAt)
  local draw = redis.call('HGET', room, 'draw')
  if now >= opensAt then
    if draw == 'P' then draw = 'D' elseif not draw then draw = 'O' else return draw end
  elseif draw then return draw
  else draw = 'P' end
  redis.call('HSET', room, 'draw', draw)
  -- Every entry made so far was made in the pre-queue (they carry its entry ids).
  if draw == 'D' then redis.call('HSET', room, 'prequeuedUpTo', redis.call('HGET', room, 'seq') or 0) end
  return draw
end
-- Scores above \`above\`, ascending: all when few, else ${sampleSize} spread evenly by rank (the first and the last included).
local function sample(key, above)
  local count = redis.call('ZCOUNT', key, '(' .. above, '+inf')
  if count <= ${sampleSize} then
    local all = redis.call('ZRANGEBYSCORE', key, '(' .. above, '+inf', 'WITHSCORES')
    local out = {}
    for i = 2, #all, 2 do out[#out + 1] = all[i] end
    return count, out
  end
  local first = redis.call('ZCOUNT', key, '-inf', above)
  local out = {}
  for k = 0, ${sampleSize - 1} do
    local rank = first + math.floor(k * (count - 1) / ${sampleSize - 1})
    out[#out + 1] = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')[2]
  end
  return count, out
end
local function pace(now)
  local cfg = redis.call('HMGET', room, 'paused', 'firstAdmissionAt', 'open', 'draw', 'prequeuedUpTo', ${overrideFields})
  local recentCount, recentSample = sample(recent, string.format('%d', now - ${minuteMs}))
  local admittedCount, endsSample = sample(admitted, string.format('%d', now))
  return { recentCount, recentSample, tonumber(cfg[2]) or 0, admittedCount, endsSample,
    cfg[1] == '1' and 1 or 0, cfg[3] == '0' and 0 or 1, cfg[4] or 'P', tonumber(cfg[5]) or 0, cfg[6] or '', cfg[7] or '', cfg[8] or '', cfg[9] or '', cfg[10] or '' }
end
-- The next arrival number. A room hash evicted alone would start it again at 1, ahead of fans still in
-- line: it then starts above every number still in the line or among the last minute's admissions.
local function nextSeq()
  if redis.call('HEXISTS', room, 'seq') == 0 then
    local top = math.max(tonumber(redis.call('ZREVRANGE', line, 0, 0, 'WITHSCORES')[2]) or 0, tonumber(redis.call('ZREVRANGE', pre, 0, 0, 'WITHSCORES')[2]) or 0)
    for _, seq in ipairs(redis.call('ZRANGE', recent, 0, -1)) do top = math.max(top, tonumber(seq)) end
    redis.call('HSET', room, 'seq', top)
  end
  return redis.call('HINCRBY', room, 'seq', 1)
end
-- Takes the settings at ARGV[i..i+8] (version, paused, soldOut, closed, the overrides) when newer than the room's copy.
-- True when the room had no copy: it is new, or the store lost it.
local function apply(i)
  local had = tonumber(redis.call('HGET', room, 'version'))
  if had and had >= tonumber(ARGV[i]) then return false end
  redis.call('HSET', room, 'version', ARGV[i], 'paused', ARGV[i + 1], 'soldOut', ARGV[i + 2], 'closed', ARGV[i + 3])
  for k, field in ipairs({ ${overrideFields} }) do
    local value = ARGV[i + 3 + k]
    if value == '' then redis.call('HDEL', room, field) else redis.call('HSET', room, field, value) end
  end
  if ARGV[i + 2] == '1' or ARGV[i + 3] == '1' then redis.call('UNLINK', line, seen, pre) end
  return had == nil
end
`;

const scripts = {
  enter: `
local user, now, opensAt = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local over = ended()
local e = getEntry(user)
if e then
  local v = view(user, e.seq, now, over)
  if v[1] == 'W' or v[1] == 'A' or v[1] == 'P' then
    if v[1] == 'W' then redis.call('ZADD', seen, 'XX', now, user) end
    return { e.seq, v[1], v[2], v[3], unpack(pace(now)) }
  end
  if e.state == 'A' then redis.call('ZREM', admitted, user) end
end
if over then return { 0, over, 0, 0, unpack(pace(now)) } end
local draw = drawState(now, opensAt)
local seq = nextSeq()
putEntry(user, seq, 'W', 0)
-- The pre-queue is not dropped for silence: its presence counts from the draw.
if draw == 'P' then
  redis.call('ZADD', pre, seq, user)
  return { seq, 'P', 0, 0, unpack(pace(now)) }
end
redis.call('ZADD', line, seq, user)
redis.call('ZADD', seen, now, user)
return { seq, 'W', math.min(redis.call('ZCARD', line) + unplaced(), seq), 0, unpack(pace(now)) }`,

  views: `
local now, touch = tonumber(ARGV[1]), ARGV[2] == '1'
local over = ended()
local out = pace(now)
for i = 3, #ARGV, 2 do
  local user = ARGV[i]
  local v = view(user, tonumber(ARGV[i + 1]), now, over)
  if touch and v[1] == 'W' then redis.call('ZADD', seen, 'XX', now, user) end
  out[#out + 1] = v[1]
  out[#out + 1] = v[2]
  out[#out + 1] = v[3]
end
return out`,

  leave: `
local user, seq, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local e = getEntry(user)
if e and e.seq == seq then
  if e.state == 'W' then
    redis.call('ZREM', line, user)
    redis.call('ZREM', seen, user)
    -- A pre-queue frozen for its draw keeps every entry it had (the published list); the draw skips those who left.
    if redis.call('HGET', room, 'draw') ~= 'D' then redis.call('ZREM', pre, user) end
    putEntry(user, seq, 'L', 0)
  elseif e.state == 'A' then
    redis.call('ZREM', admitted, user)
    putEntry(user, seq, 'L', 0)
  end
end
return view(user, seq, now, ended())`,

  complete: `
local user, now = ARGV[1], tonumber(ARGV[2])
local e = getEntry(user)
if not e or e.state ~= 'A' or e.untilMs <= now then return 0 end
redis.call('ZREM', admitted, user)
putEntry(user, e.seq, 'C', 0)
return 1`,

  tick: `
local now, open, batch, stalledAfter, opensAt = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[18]), tonumber(ARGV[19])
local restored = apply(9)
local draw = drawState(now, opensAt)
local lastTick = tonumber(redis.call('HGET', room, 'lastTickAt'))
redis.call('HSET', room, 'open', open and '1' or '0', 'lastTickAt', now)
-- While no tick ran (Redis, or every queue instance, away) the watchers' presence could not be counted:
-- nobody is dropped for silence until abandon_after has passed since the ticks came back.
if lastTick and now - lastTick > stalledAfter then redis.call('HSET', room, 'presenceFrom', now) end
local cfg = redis.call('HMGET', room, 'maxActive', 'ratePerMinute', 'sessionTtlMs', 'abandonAfterMs', 'random', 'paused', 'soldOut', 'closed')
local maxActive = tonumber(cfg[1]) or tonumber(ARGV[4])
local rate = tonumber(cfg[2]) or tonumber(ARGV[5])
local ttl = tonumber(cfg[3]) or tonumber(ARGV[6])
local abandon = tonumber(cfg[4]) or tonumber(ARGV[7])
local random = (cfg[5] or ARGV[8]) == '1'

local expired = redis.call('ZRANGEBYSCORE', admitted, '-inf', now, 'LIMIT', 0, batch)
for _, user in ipairs(expired) do
  redis.call('ZREM', admitted, user)
  local e = getEntry(user)
  if e and e.state == 'A' then putEntry(user, e.seq, 'E', 0) end
end

local stale = {}
if now - (tonumber(redis.call('HGET', room, 'presenceFrom')) or 0) >= abandon then
  stale = redis.call('ZRANGEBYSCORE', seen, '-inf', now - abandon, 'LIMIT', 0, batch)
end
for _, user in ipairs(stale) do
  redis.call('ZREM', seen, user)
  redis.call('ZREM', line, user)
  local e = getEntry(user)
  if e and e.state == 'W' then putEntry(user, e.seq, 'E', 0) end
end
if #stale > 0 then redis.call('HINCRBY', room, 'abandoned', #stale) end

redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - ${minuteMs})
local admittedNow = 0
-- A room whose copy was just restored admits from the next tick on: settings read before an operator's
-- change and carried by a tick that lands just after a wipe must not open a paused room even once.
-- Nobody is admitted before the pre-queue is in its drawn order.
if open and not restored and draw == 'O' and now >= opensAt and cfg[6] ~= '1' and cfg[7] ~= '1' and cfg[8] ~= '1' then
  local free = math.min(maxActive - redis.call('ZCARD', admitted), batch)
  if rate > 0 then free = math.min(free, rate - redis.call('ZCARD', recent)) end
  if free > 0 then
    local picked = {}
    if random then
      -- By lot: distinct fans drawn at random from the whole line.
      picked = redis.call('ZRANDMEMBER', line, free)
      bulk('ZREM', line, picked)
    else
      local popped = redis.call('ZPOPMIN', line, free)
      for i = 1, #popped, 2 do picked[#picked + 1] = popped[i] end
    end
    if #picked > 0 then
      -- One command per key for the whole step rather than five per fan: a step of 1,000 holds Redis up a third less.
      local raw = bulk('HMGET', entries, picked)
      local sessions, states, admissions = {}, {}, {}
      for i, user in ipairs(picked) do
        local seq = string.match(raw[i], '^(%d+):')
        sessions[#sessions + 1] = now + ttl
        sessions[#sessions + 1] = user
        states[#states + 1] = user
        states[#states + 1] = string.format('%s:A:%d', seq, now + ttl)
        admissions[#admissions + 1] = now
        admissions[#admissions + 1] = seq
      end
      bulk('ZREM', seen, picked)
      bulk('ZADD', admitted, sessions)
      bulk('HSET', entries, states)
      bulk('ZADD', recent, admissions)
    end
    admittedNow = #picked
    if admittedNow > 0 then redis.call('HSETNX', room, 'firstAdmissionAt', now) end
  end
end
return { admittedNow, #expired, #stale, restored and 1 or 0, draw == 'D' and 1 or 0 }`,

  prequeue: `
local draw = redis.call('HGET', room, 'draw') or 'P'
local out = { draw }
if draw == 'D' then
  local all = redis.call('ZRANGE', pre, 0, -1, 'WITHSCORES')
  for i = 1, #all do out[#out + 1] = all[i] end
end
return out`,

  place: `
-- The frozen pre-queue stays whole until the draw's last chunk, so that every drawer (a second one, one after a
-- crash) reads the same list and places each entry at the same place; an entry already placed is skipped.
if redis.call('HGET', room, 'draw') ~= 'D' then return 0 end
local now, place = tonumber(ARGV[1]), tonumber(ARGV[2])
local placed = 0
for i = 4, #ARGV, 2 do
  local user, seq = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('ZSCORE', pre, user) and not redis.call('ZSCORE', line, user) then
    local e = getEntry(user)
    if e and e.seq == seq and e.state == 'W' then
      redis.call('ZADD', line, place, user)
      redis.call('ZADD', seen, now, user)
      placed = placed + 1
    end
  end
  place = place + 1
end
if placed > 0 then redis.call('HINCRBY', room, 'placed', placed) end
if ARGV[3] == '1' then
  redis.call('HSET', room, 'draw', 'O')
  redis.call('HDEL', room, 'placed')
  redis.call('DEL', pre)
end
return 1`,

  counts: `
local now = tonumber(ARGV[1])
return {
  redis.call('ZCARD', line) + unplaced(),
  redis.call('ZCOUNT', admitted, '(' .. string.format('%d', now), '+inf'),
  redis.call('ZCOUNT', recent, '(' .. string.format('%d', now - ${minuteMs}), '+inf'),
  redis.call('HGET', room, 'abandoned') or '0' }`,

  apply: `
apply(1)
return 1`,
} as const;

type ScriptName = keyof typeof scripts;

const states: Record<string, EntryState> = { W: "WAITING", P: "PREQUEUED", A: "ADMITTED", E: "EXPIRED", L: "LEFT", C: "COMPLETED", S: "SOLD_OUT", K: "CLOSED", X: "LOST" };
const drawStates: Record<string, DrawState> = { P: "PREQUEUE", D: "DRAWING", O: "OPEN" };

/** How many values the scripts' pace() returns, ahead of what follows it. */
const paceLength = 14;

function toPace(out: unknown[]): Pace {
  return {
    admittedLastMinute: Number(out[0]),
    recentSample: (out[1] as string[]).map(Number),
    firstAdmissionAt: Number(out[2]),
    admitted: Number(out[3]),
    sessionEndsSample: (out[4] as string[]).map(Number),
    paused: Number(out[5]) === 1,
    supplyOpen: Number(out[6]) === 1,
    draw: drawStates[String(out[7])] ?? "PREQUEUE",
    prequeuedUpTo: Number(out[8]),
    overrides: policyOverrides(out.slice(9, paceLength)),
  };
}

function toView(state: unknown, position: unknown, until: unknown): EntryView {
  return { state: states[String(state)] ?? "EXPIRED", position: Number(position), admittedUntil: Number(until) };
}

function policyOverrides(values: unknown[]): Partial<Policy> {
  const overrides: Partial<Policy> = {};
  policyFields.forEach((field, i) => {
    if (values[i] === null || values[i] === "" || values[i] === undefined) return;
    if (field === "random") overrides.random = String(values[i]) === "1";
    else overrides[field] = Number(values[i]);
  });
  return overrides;
}

/** Replies that mean the store cannot serve now (starting up, failing over), not a bug. */
const unavailableReply = /^(LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|READONLY|BUSY)\b/;

/** A policy value as the scripts keep it: numbers as they are, a flag as 1 or 0. */
const policyValue = (value: number | boolean | undefined): string | number => (value === undefined ? "" : typeof value === "boolean" ? (value ? 1 : 0) : value);

function settingsArgs(settings: RoomSettings): (string | number)[] {
  return [
    settings.version,
    settings.paused ? 1 : 0,
    settings.soldOut ? 1 : 0,
    settings.closed ? 1 : 0,
    ...policyFields.map((field) => policyValue(settings.overrides[field])),
  ];
}

/** The waiting room on Redis (one server or a Cluster), shared by every instance of the queue service. */
export class RedisQueueStore implements QueueStore {
  readonly #redis: RedisClient;
  /** Set once the first connection is made: from then on, a store that is not ready is known to be down. */
  #wasReady = false;
  /** Set while the store answers nothing on an open connection; see #watchHung. */
  #hung = false;
  #closed = false;

  constructor(
    target: RedisTarget,
    private readonly keyPrefix: string,
    /** Told each call's time, by operation (the process's metrics). */
    private readonly observe: (operation: string, seconds: number) => void = () => {},
  ) {
    this.#redis = connectRedis(target);
    this.#redis.once("ready", () => (this.#wasReady = true));
    for (const [name, body] of Object.entries(scripts)) {
      this.#redis.defineCommand(`boxoffice_${name}`, { numberOfKeys: 7, lua: prelude + body });
    }
  }

  #keys(concertId: string): string[] {
    const base = `${this.keyPrefix}queue:{${concertId}}:`;
    return ["line", "seen", "admitted", "recent", "room", "entries", "pre"].map((key) => base + key);
  }

  async #run(name: keyof typeof scripts, concertId: string, args: (string | number)[]): Promise<unknown[]> {
    const command = (this.#redis as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>)[`boxoffice_${name}`]!;
    return (await this.#guard(() => command.call(this.#redis, ...this.#keys(concertId), ...args), name)) as unknown[];
  }

  /**
   * Every call goes through here. While Redis is known to be down, calls fail
   * at once instead of each waiting out a timeout; only before the first
   * connection (a service starting beside its Redis) do they wait for it, 1 s
   * at most.
   */
  async #guard<T>(call: () => Promise<T>, operation = "command"): Promise<T> {
    if (this.#hung || (!isReady(this.#redis) && (this.#wasReady || !(await waitReady(this.#redis, 1_000))))) throw down();
    // The client's own timeout starts when a command is written, and a command can wait behind a pipeline that is
    // itself waiting out its timeout: this one counts from the call.
    let timer: { clear(): void } | undefined;
    const timedOut = new Promise<never>((_, reject) => (timer = timeoutAfterIo(commandTimeoutMs, () => reject(new Error("Command timed out")))));
    const started = process.hrtime.bigint();
    const span = storeSpan("redis", operation);
    try {
      const answer = await Promise.race([call(), timedOut]);
      this.observe(operation, Number(process.hrtime.bigint() - started) / 1e9);
      span?.end();
      return answer;
    } catch (error) {
      span?.end(error);
      if (error instanceof ReplyError && !unavailableReply.test((error as Error).message)) throw error;
      if ((error as Error).message === "Command timed out" && this.#redis instanceof Redis) this.#watchHung();
      throw down();
    } finally {
      timer?.clear();
    }
  }

  /**
   * A call timed out on a connection that is still open (a hung host, a
   * frozen server): calls fail at once until a PING answers again, instead of
   * each waiting out its timeout. For one server only: on a Cluster a frozen
   * master is one shard's trouble, and the cluster's own failover handles it.
   */
  #watchHung() {
    if (this.#hung) return;
    this.#hung = true;
    const retry = () => {
      if (this.#closed) return;
      this.#redis.ping().then(
        () => (this.#hung = false),
        () => setTimeout(retry, 200).unref(),
      );
    };
    retry();
  }

  async enter(concertId: string, userId: string, now: number, saleOpensAt = 0): Promise<Entered> {
    const [seq, state, position, until, ...pace] = await this.#run("enter", concertId, [userId, now, saleOpensAt]);
    return { seq: Number(seq), view: toView(state, position, until), pace: toPace(pace) };
  }

  async view(concertId: string, ticket: Ticket, now: number, touch: boolean): Promise<EntryView> {
    return (await this.views(concertId, [ticket], now, touch)).views[0]!;
  }

  async views(concertId: string, tickets: Ticket[], now: number, touch: boolean): Promise<{ views: EntryView[]; pace: Pace }> {
    const args: (string | number)[] = [now, touch ? 1 : 0];
    for (const { userId, seq } of tickets) args.push(userId, seq);
    const out = await this.#run("views", concertId, args);
    const views: EntryView[] = [];
    for (let i = paceLength; i < out.length; i += 3) views.push(toView(out[i], out[i + 1], out[i + 2]));
    return { views, pace: toPace(out) };
  }

  async leave(concertId: string, ticket: Ticket, now: number): Promise<EntryView> {
    const [state, position, until] = await this.#run("leave", concertId, [ticket.userId, ticket.seq, now]);
    return toView(state, position, until);
  }

  async complete(concertId: string, userId: string, now: number): Promise<boolean> {
    return Number(await this.#run("complete", concertId, [userId, now])) === 1;
  }

  async tick(concertId: string, defaults: Policy, { now, saleOpensAt = 0, supplyOpen, batch, settings, stalledAfterMs }: TickInput): Promise<TickResult> {
    const [admitted, expired, abandoned, restored, drawPending] = await this.#run("tick", concertId, [
      now,
      supplyOpen ? 1 : 0,
      batch,
      ...policyFields.map((field) => policyValue(defaults[field])),
      ...settingsArgs(settings),
      stalledAfterMs,
      saleOpensAt,
    ]);
    return {
      admitted: Number(admitted),
      expired: Number(expired),
      abandoned: Number(abandoned),
      restored: Number(restored) === 1,
      drawPending: Number(drawPending) === 1,
    };
  }

  async prequeue(concertId: string): Promise<{ draw: DrawState; tickets: Ticket[] }> {
    const [draw, ...frozen] = (await this.#run("prequeue", concertId, [])) as string[];
    const tickets: Ticket[] = [];
    for (let i = 0; i < frozen.length; i += 2) tickets.push({ userId: frozen[i]!, seq: Number(frozen[i + 1]) });
    return { draw: drawStates[draw!] ?? "PREQUEUE", tickets };
  }

  async place(concertId: string, tickets: Ticket[], firstPlace: number, last: boolean, now: number): Promise<void> {
    const args: (string | number)[] = [now, firstPlace, last ? 1 : 0];
    for (const { userId, seq } of tickets) args.push(userId, seq);
    await this.#run("place", concertId, args);
  }

  async apply(concertId: string, settings: RoomSettings) {
    await this.#run("apply", concertId, settingsArgs(settings));
  }

  async counts(concertId: string, now: number): Promise<RoomCounts> {
    const out = await this.#run("counts", concertId, [now]);
    return { waiting: Number(out[0]), admitted: Number(out[1]), admittedLastMinute: Number(out[2]), abandoned: Number(out[3]) };
  }

  async markLife() {
    const set = await this.#guard(() => this.#redis.set(`${this.keyPrefix}queue:life`, randomUUID(), "NX"));
    return set === "OK";
  }

  /** Every master of a Cluster answers, or the one server does. */
  async ping() {
    const redis = this.#redis;
    await this.#guard(async () => {
      await (redis instanceof Redis ? redis.ping() : Promise.all(redis.nodes("master").map((node) => node.ping())));
    });
  }

  /**
   * Rooms as the layout before PostgreSQL kept them had them: a set of rooms,
   * and pause, sold-out and overrides in each room hash (no version). For the
   * one-off import at an upgrade; forgetLegacyRooms() once they are imported.
   */
  async legacyRooms(): Promise<{ concertId: string; paused: boolean; soldOut: boolean; overrides: Partial<Policy> }[]> {
    const concertIds = await this.#guard(() => this.#redis.smembers(this.#legacyRoomsKey));
    const found = [];
    for (const concertId of concertIds) {
      const values = await this.#guard(() => this.#redis.hmget(this.#keys(concertId)[4]!, "version", "paused", "soldOut", ...policyFields.filter((field) => field !== "random")));
      if (values[0] !== null) continue; // already kept in PostgreSQL
      found.push({ concertId, paused: values[1] === "1", soldOut: values[2] === "1", overrides: policyOverrides(values.slice(3)) });
    }
    return found;
  }

  async forgetLegacyRooms() {
    await this.#guard(() => this.#redis.del(this.#legacyRoomsKey));
  }

  get #legacyRoomsKey() {
    return `${this.keyPrefix}queue:rooms`;
  }

  async close() {
    this.#closed = true;
    this.#redis.disconnect();
  }
}

function down() {
  return new DependencyDown("the waiting-room store (Redis) is unreachable; retry later");
}
