import { Redis, ReplyError } from "ioredis";
import { DependencyDown } from "../platform/errors.js";
import { minuteMs, overlay } from "./policy.js";
import type { EntryState, EntryView, Entered, Pace, Policy, QueueStore, RoomStats, Ticket, TickInput, TickResult } from "./store.js";

/*
 * One concert's room is six keys sharing the hash tag {<concert id>}, so every
 * script below touches a single hash slot and runs on Redis Cluster unchanged:
 *   line      ZSET user -> seq            the waiting line, FIFO by seq
 *   seen      ZSET user -> last presence  waiting fans, for abandonment
 *   admitted  ZSET user -> admitted until admitted sessions
 *   recent    ZSET seq  -> admitted at    admissions of the last minute (rate, pace)
 *   room      HASH seq counter, policy overrides, paused, soldOut, abandoned, firstAdmissionAt
 *   entries   HASH user -> "seq:state:until"  each fan's latest entry (W A E L C)
 * Each script is atomic, so any number of queue service instances can run the
 * admission tick at once without admitting more than max_active.
 */
const prelude = `
local line, seen, admitted, recent, room, entries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local function getEntry(user)
  local raw = redis.call('HGET', entries, user)
  if not raw then return nil end
  local seq, state, untilMs = string.match(raw, '^(%d+):(%a):(%d+)$')
  return { seq = tonumber(seq), state = state, untilMs = tonumber(untilMs) }
end
local function putEntry(user, seq, state, untilMs)
  redis.call('HSET', entries, user, string.format('%d:%s:%d', seq, state, untilMs))
end
local function view(user, seq, now, soldOut)
  local e = getEntry(user)
  if not e or e.seq ~= seq then return { 'E', 0, 0 } end
  if e.state == 'W' then
    if soldOut then return { 'S', 0, 0 } end
    local rank = redis.call('ZRANK', line, user)
    if not rank then return { 'E', 0, 0 } end
    return { 'W', rank + 1, 0 }
  elseif e.state == 'A' then
    if e.untilMs <= now then return { 'E', 0, 0 } end
    return { 'A', 0, e.untilMs }
  end
  return { e.state, 0, 0 }
end
local function isSoldOut() return redis.call('HGET', room, 'soldOut') == '1' end
local function pace(now)
  local cfg = redis.call('HMGET', room, 'paused', 'firstAdmissionAt')
  return { redis.call('ZCOUNT', recent, '(' .. string.format('%d', now - ${minuteMs}), '+inf'), tonumber(cfg[2]) or 0, cfg[1] == '1' and 1 or 0 }
end
`;

const scripts = {
  enter: `
local user, now = ARGV[1], tonumber(ARGV[2])
local soldOut = isSoldOut()
local e = getEntry(user)
if e then
  local v = view(user, e.seq, now, soldOut)
  if v[1] == 'W' or v[1] == 'A' then
    if v[1] == 'W' then redis.call('ZADD', seen, 'XX', now, user) end
    return { e.seq, v[1], v[2], v[3], unpack(pace(now)) }
  end
  if e.state == 'A' then redis.call('ZREM', admitted, user) end
end
if soldOut then return { 0, 'S', 0, 0, unpack(pace(now)) } end
local seq = redis.call('HINCRBY', room, 'seq', 1)
redis.call('ZADD', line, seq, user)
redis.call('ZADD', seen, now, user)
putEntry(user, seq, 'W', 0)
return { seq, 'W', redis.call('ZCARD', line), 0, unpack(pace(now)) }`,

  views: `
local now, touch = tonumber(ARGV[1]), ARGV[2] == '1'
local soldOut = isSoldOut()
local out = pace(now)
for i = 3, #ARGV, 2 do
  local user = ARGV[i]
  local v = view(user, tonumber(ARGV[i + 1]), now, soldOut)
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
    putEntry(user, seq, 'L', 0)
  elseif e.state == 'A' then
    redis.call('ZREM', admitted, user)
    putEntry(user, seq, 'L', 0)
  end
end
return view(user, seq, now, isSoldOut())`,

  complete: `
local user, now = ARGV[1], tonumber(ARGV[2])
local e = getEntry(user)
if not e or e.state ~= 'A' or e.untilMs <= now then return 0 end
redis.call('ZREM', admitted, user)
putEntry(user, e.seq, 'C', 0)
return 1`,

  tick: `
local now, open, batch = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local cfg = redis.call('HMGET', room, 'maxActive', 'ratePerMinute', 'sessionTtlMs', 'abandonAfterMs', 'paused', 'soldOut')
local maxActive = tonumber(cfg[1]) or tonumber(ARGV[4])
local rate = tonumber(cfg[2]) or tonumber(ARGV[5])
local ttl = tonumber(cfg[3]) or tonumber(ARGV[6])
local abandon = tonumber(cfg[4]) or tonumber(ARGV[7])

local expired = redis.call('ZRANGEBYSCORE', admitted, '-inf', now, 'LIMIT', 0, batch)
for _, user in ipairs(expired) do
  redis.call('ZREM', admitted, user)
  local e = getEntry(user)
  if e and e.state == 'A' then putEntry(user, e.seq, 'E', 0) end
end

local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', now - abandon, 'LIMIT', 0, batch)
for _, user in ipairs(stale) do
  redis.call('ZREM', seen, user)
  redis.call('ZREM', line, user)
  local e = getEntry(user)
  if e and e.state == 'W' then putEntry(user, e.seq, 'E', 0) end
end
if #stale > 0 then redis.call('HINCRBY', room, 'abandoned', #stale) end

redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - ${minuteMs})
local admittedNow = 0
if open and cfg[5] ~= '1' and cfg[6] ~= '1' then
  local free = math.min(maxActive - redis.call('ZCARD', admitted), batch)
  if rate > 0 then free = math.min(free, rate - redis.call('ZCARD', recent)) end
  if free > 0 then
    local popped = redis.call('ZPOPMIN', line, free)
    for i = 1, #popped, 2 do
      local user, seq = popped[i], tonumber(popped[i + 1])
      redis.call('ZREM', seen, user)
      redis.call('ZADD', admitted, now + ttl, user)
      putEntry(user, seq, 'A', now + ttl)
      redis.call('ZADD', recent, now, seq)
    end
    admittedNow = #popped / 2
    if admittedNow > 0 then redis.call('HSETNX', room, 'firstAdmissionAt', now) end
  end
end
return { admittedNow, #expired, #stale }`,

  stats: `
local now = tonumber(ARGV[1])
local cfg = redis.call('HMGET', room, 'abandoned', 'paused', 'soldOut', 'maxActive', 'ratePerMinute', 'sessionTtlMs', 'abandonAfterMs')
return {
  redis.call('ZCARD', line),
  redis.call('ZCOUNT', admitted, '(' .. string.format('%d', now), '+inf'),
  redis.call('ZCOUNT', recent, '(' .. string.format('%d', now - ${minuteMs}), '+inf'),
  cfg[1] or '0', cfg[2] or '0', cfg[3] or '0', cfg[4] or '', cfg[5] or '', cfg[6] or '', cfg[7] or '' }`,

  soldOut: `
redis.call('HSET', room, 'soldOut', '1')
redis.call('UNLINK', line, seen)
return 1`,
} as const;

type ScriptName = keyof typeof scripts;

const states: Record<string, EntryState> = { W: "WAITING", A: "ADMITTED", E: "EXPIRED", L: "LEFT", C: "COMPLETED", S: "SOLD_OUT" };

function toPace(admittedLastMinute: unknown, firstAdmissionAt: unknown, paused: unknown): Pace {
  return { admittedLastMinute: Number(admittedLastMinute), firstAdmissionAt: Number(firstAdmissionAt), paused: Number(paused) === 1 };
}

function toView(state: unknown, position: unknown, until: unknown): EntryView {
  return { state: states[String(state)] ?? "EXPIRED", position: Number(position), admittedUntil: Number(until) };
}

const policyFields = ["maxActive", "ratePerMinute", "sessionTtlMs", "abandonAfterMs"] as const;

function policyOverrides(values: unknown[]): Partial<Policy> {
  const overrides: Partial<Policy> = {};
  policyFields.forEach((field, i) => {
    if (values[i] !== null && values[i] !== "") overrides[field] = Number(values[i]);
  });
  return overrides;
}

/** The waiting room on Redis, shared by every instance of the queue service. */
export class RedisQueueStore implements QueueStore {
  readonly #redis: Redis;
  /** Rooms this instance has listed already: one SADD per room, not one per fan. */
  readonly #listed = new Set<string>();

  constructor(
    url: string,
    private readonly keyPrefix: string,
  ) {
    // Fail calls fast while Redis is away instead of queueing them forever.
    // Calls made in the same tick go out in one write (auto-pipelining): one syscall and one Redis wake-up for many fans.
    this.#redis = new Redis(url, { maxRetriesPerRequest: 2, connectTimeout: 5_000, enableAutoPipelining: true });
    this.#redis.on("error", () => {}); // reconnects on its own; failed calls report it
    for (const [name, body] of Object.entries(scripts)) {
      this.#redis.defineCommand(`boxoffice_${name}`, { numberOfKeys: 6, lua: prelude + body });
    }
  }

  #keys(concertId: string): string[] {
    const base = `${this.keyPrefix}queue:{${concertId}}:`;
    return ["line", "seen", "admitted", "recent", "room", "entries"].map((key) => base + key);
  }

  get #roomsKey() {
    return `${this.keyPrefix}queue:rooms`;
  }

  async #run(name: ScriptName, concertId: string, args: (string | number)[]): Promise<unknown[]> {
    const command = (this.#redis as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>)[`boxoffice_${name}`]!;
    return (await this.#guard(() => command.call(this.#redis, ...this.#keys(concertId), ...args))) as unknown[];
  }

  async #guard<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof ReplyError) throw error;
      throw new DependencyDown("the queue store (Redis) is unreachable; retry later");
    }
  }

  async enter(concertId: string, userId: string, now: number): Promise<Entered> {
    // The room is listed first (idempotent, and another hash slot), so an entry is never in a room the worker does not tick.
    if (!this.#listed.has(concertId)) {
      await this.#guard(() => this.#redis.sadd(this.#roomsKey, concertId));
      this.#listed.add(concertId);
    }
    const [seq, state, position, until, ...pace] = await this.#run("enter", concertId, [userId, now]);
    return { seq: Number(seq), view: toView(state, position, until), pace: toPace(pace[0], pace[1], pace[2]) };
  }

  async view(concertId: string, ticket: Ticket, now: number, touch: boolean): Promise<EntryView> {
    return (await this.views(concertId, [ticket], now, touch)).views[0]!;
  }

  async views(concertId: string, tickets: Ticket[], now: number, touch: boolean): Promise<{ views: EntryView[]; pace: Pace }> {
    const args: (string | number)[] = [now, touch ? 1 : 0];
    for (const { userId, seq } of tickets) args.push(userId, seq);
    const out = await this.#run("views", concertId, args);
    const views: EntryView[] = [];
    for (let i = 3; i < out.length; i += 3) views.push(toView(out[i], out[i + 1], out[i + 2]));
    return { views, pace: toPace(out[0], out[1], out[2]) };
  }

  async leave(concertId: string, ticket: Ticket, now: number): Promise<EntryView> {
    const [state, position, until] = await this.#run("leave", concertId, [ticket.userId, ticket.seq, now]);
    return toView(state, position, until);
  }

  async complete(concertId: string, userId: string, now: number): Promise<boolean> {
    return Number(await this.#run("complete", concertId, [userId, now])) === 1;
  }

  async tick(concertId: string, defaults: Policy, { now, supplyOpen, batch }: TickInput): Promise<TickResult> {
    const [admitted, expired, abandoned] = await this.#run("tick", concertId, [
      now,
      supplyOpen ? 1 : 0,
      batch,
      defaults.maxActive,
      defaults.ratePerMinute,
      defaults.sessionTtlMs,
      defaults.abandonAfterMs,
    ]);
    return { admitted: Number(admitted), expired: Number(expired), abandoned: Number(abandoned) };
  }

  async stats(concertId: string, defaults: Policy, now: number): Promise<RoomStats> {
    const out = await this.#run("stats", concertId, [now]);
    return {
      waiting: Number(out[0]),
      admitted: Number(out[1]),
      admittedLastMinute: Number(out[2]),
      abandoned: Number(out[3]),
      paused: out[4] === "1",
      soldOut: out[5] === "1",
      policy: overlay(defaults, policyOverrides(out.slice(6))),
    };
  }

  async setPolicy(concertId: string, defaults: Policy, change: Partial<Policy>): Promise<Policy> {
    const room = this.#keys(concertId)[4]!;
    const fields = policyFields.flatMap((field) => (change[field] === undefined ? [] : [field, String(change[field])]));
    if (fields.length > 0) await this.#guard(() => this.#redis.hset(room, ...fields));
    const values = await this.#guard(() => this.#redis.hmget(room, ...policyFields));
    return overlay(defaults, policyOverrides(values));
  }

  async setPaused(concertId: string, paused: boolean) {
    await this.#guard(() => this.#redis.hset(this.#keys(concertId)[4]!, "paused", paused ? "1" : "0"));
  }

  async markSoldOut(concertId: string) {
    await this.#run("soldOut", concertId, []);
  }

  async rooms() {
    return this.#guard(() => this.#redis.smembers(this.#roomsKey));
  }

  async close() {
    this.#redis.disconnect();
  }
}
