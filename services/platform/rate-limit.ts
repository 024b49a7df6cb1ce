import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { isIP } from "node:net";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import { Redis, ReplyError } from "ioredis";
import { connectRedis, isReady, timeoutAfterIo, type RedisClient, type RedisTarget } from "./redis-connection.js";
import { bearer, fromService } from "./access.js";
import type { Config, RateLimitConfig, RateLimitRule } from "./config.js";
import { Exhausted, Reason } from "./errors.js";
import { peerAddressKey } from "./peer.js";
import type { UserTokens } from "./tokens.js";
import { logger } from "./log.js";

const limitsLog = logger("rate-limits");

/**
 * The RPCs that are limited, and the budget each draws on. RPCs of one rule
 * share a budget, so that one way in is not a second allowance: IssueQueueToken
 * is EnterQueue through the token service, ReserveSeats and BookSeats hold seats
 * through the coordinator.
 */
export const limitedRpcs: ReadonlyMap<DescMethod, RateLimitRule> = new Map<DescMethod, RateLimitRule>([
  [TokenService.method.issueUserToken, "account"],
  [TokenService.method.issueQueueToken, "queue"],
  [QueueService.method.enterQueue, "queue"],
  [PointService.method.chargePoints, "charge"],
  [ReservationService.method.holdSeats, "hold"],
  [CoordinatorService.method.reserveSeats, "hold"],
  [CoordinatorService.method.bookSeats, "hold"],
]);

const ruleNames: Record<RateLimitRule, string> = {
  account: "user tokens (IssueUserToken)",
  queue: "queue entries (EnterQueue, IssueQueueToken)",
  charge: "top-ups (ChargePoints)",
  hold: "seat holds (HoldSeats, ReserveSeats, BookSeats)",
};

/** One budget a call draws on: `perMinute` calls a minute, with a burst of as many. */
export interface Budget {
  key: string;
  perMinute: number;
}

/** The budget (its index among those asked) that refused a call, and the milliseconds until it would let one through. */
export interface Refusal {
  refused: number;
  waitMs: number;
}

/**
 * Budgets of calls, kept by key, by the generic cell rate algorithm (GCRA). A
 * key keeps one number, the theoretical arrival time (TAT) of its next call; a
 * call is let through when TAT − now is within the burst (perMinute − 1
 * intervals), and pushes TAT one interval (60 s / perMinute) on. A call draws
 * on all its budgets or none: a refused call changes nothing, so a client that
 * keeps hammering is let in again as soon as the budget refills, the wait it is
 * told is exact, and a refusal by one budget (the user's) spends nothing of
 * another (the address's, shared with the fans behind the same NAT).
 */
export interface Budgets {
  /** Takes one call from each budget, all or none: undefined when the call is let through. */
  take(budgets: Budget[]): Promise<Refusal | undefined>;
  close(): Promise<void>;
}

/** The budgets in this process: for the in-process queue store, and beside Redis while it does not answer. */
export class LocalBudgets implements Budgets {
  readonly #due = new Map<string, number>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(private readonly now: () => number = () => performance.now()) {
    // A budget refilled to the full burst is the same as none: forgotten, so memory follows the clients of the last minute.
    this.#sweeper = setInterval(() => {
      const now = this.now();
      for (const [key, due] of this.#due) if (due <= now) this.#due.delete(key);
    }, 10_000).unref();
  }

  takeNow(budgets: Budget[]): Refusal | undefined {
    const now = this.now();
    const next: number[] = [];
    for (const [i, { key, perMinute }] of budgets.entries()) {
      const interval = 60_000 / perMinute;
      const due = Math.max(this.#due.get(key) ?? now, now);
      const wait = due - interval * (perMinute - 1) - now;
      if (wait > 0) return { refused: i, waitMs: Math.ceil(wait) };
      next.push(due + interval);
    }
    budgets.forEach(({ key }, i) => this.#due.set(key, next[i]!));
    return undefined;
  }

  async take(budgets: Budget[]) {
    return this.takeNow(budgets);
  }

  async close() {
    clearInterval(this.#sweeper);
  }
}

/*
 * The same algorithm in one script, on Redis's clock (TIME: the same for every
 * instance, whatever theirs say), in microseconds. KEYS the budgets; ARGV per
 * key its interval in µs and its burst. Returns {0, 0}, or the (1-based) key
 * that refused and the µs to wait. A key lives until its TAT, when it would be
 * full again anyway.
 */
const takeScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local due = tonumber(redis.call('GET', key)) or now
  if due < now then due = now end
  local wait = due - interval * (tonumber(ARGV[2 * i]) - 1) - now
  if wait > 0 then return { i, wait } end
  next[i] = due + interval
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', next[i]), 'PX', math.ceil((next[i] - now) / 1000))
end
return { 0, 0 }
`;

/** Longest a call waits for Redis before this instance decides on its own. */
const redisAnswerMs = 300;

type TakeCommand = (keyCount: number, ...keysAndArgs: (string | number)[]) => Promise<[number, number]>;

/**
 * Budgets shared by every instance, in Redis: one script call for all of a
 * call's budgets on one server; on a Cluster, where a user's and an address's
 * keys live in different slots, one call per budget in turn (each all or none
 * on its own), so that budgets spread over every master. While Redis does not
 * answer (not connected, or a call timed out until a PING answers), each
 * instance keeps the budgets itself: limits hold per instance (with n
 * instances, a client can get n times its budget) instead of every limited RPC
 * failing because the limiter's store is down. The queue's own calls still
 * answer Unavailable on their own; points, holds and tokens go on.
 */
export class RedisBudgets implements Budgets {
  readonly #redis: RedisClient;
  readonly #local = new LocalBudgets();
  #wasReady = false;
  /** The first connection, waited for once: calls made while a process starts beside its Redis are not counted apart. */
  readonly #connected: Promise<void>;
  #hung = false;
  /** Said in the log: budgets are kept per instance until Redis answers. */
  #onItsOwn = false;
  #closed = false;
  /** One script call per budget, for a Redis that refuses keys of different slots in one. */
  #keyByKey = false;

  constructor(target: RedisTarget) {
    this.#redis = connectRedis(target);
    this.#connected = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1_000).unref();
      const done = () => (clearTimeout(timer), resolve());
      this.#redis.once("ready", () => ((this.#wasReady = true), done()));
      this.#redis.once("close", done);
    });
    this.#redis.defineCommand("boxoffice_take", { lua: takeScript });
  }

  async take(budgets: Budget[]): Promise<Refusal | undefined> {
    if (!this.#wasReady) await this.#connected;
    if (this.#hung || !isReady(this.#redis)) return this.#alone(budgets, "not connected");
    let timer: { clear(): void } | undefined;
    const late = new Promise<"late">((resolve) => (timer = timeoutAfterIo(redisAnswerMs, () => resolve("late"))));
    try {
      const answer = await Promise.race([this.#take(budgets), late]);
      if (answer === "late") {
        this.#watchHung();
        return this.#alone(budgets, `no answer within ${redisAnswerMs} ms`);
      }
      if (this.#onItsOwn) {
        limitsLog.info("Redis answers again; limits are shared by every instance again");
        this.#onItsOwn = false;
      }
      return answer;
    } catch (error) {
      return this.#alone(budgets, error instanceof Error ? error.message : String(error));
    } finally {
      timer?.clear();
    }
  }

  async #take(budgets: Budget[]): Promise<Refusal | undefined> {
    const take = (this.#redis as unknown as { boxoffice_take: TakeCommand }).boxoffice_take.bind(this.#redis);
    const args = (budget: Budget) => [Math.round(60_000_000 / budget.perMinute), budget.perMinute];
    const refusal = ([index, waitUs]: [number, number], offset: number) =>
      Number(index) === 0 ? undefined : { refused: offset + Number(index) - 1, waitMs: Math.ceil(Number(waitUs) / 1000) };
    if (this.#redis instanceof Redis && !this.#keyByKey) {
      try {
        return refusal(await take(budgets.length, ...budgets.map((b) => b.key), ...budgets.flatMap(args)), 0);
      } catch (error) {
        // A proxy in front of several servers (as on a Cluster, the keys are in different slots).
        if (!(error instanceof ReplyError && /CROSSSLOT/.test((error as Error).message))) throw error;
        this.#keyByKey = true;
      }
    }
    for (const [i, budget] of budgets.entries()) {
      const refused = refusal(await take(1, budget.key, ...args(budget)), i);
      if (refused) return refused;
    }
    return undefined;
  }

  #alone(budgets: Budget[], why: string): Refusal | undefined {
    if (!this.#onItsOwn && !this.#closed) {
      this.#onItsOwn = true;
      limitsLog.error(`Redis does not answer (${why}); each instance limits on its own until it does`);
    }
    return this.#local.takeNow(budgets);
  }

  /** A call timed out on an open connection (a frozen server): budgets stay local until a PING answers. */
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

  async close() {
    this.#closed = true;
    await this.#local.close();
    this.#redis.disconnect();
  }
}

/**
 * The client a call is counted against: the connection's address, or, with a
 * trusted proxy header, the entry `hops` from its right end (each trusted proxy
 * appends the address it was reached from; entries further left are whatever
 * the client wrote). IPv4 by address, IPv6 by its /64 (one subscriber's
 * network: a host picks any address in it). Undefined for calls made in
 * process between services.
 */
export function clientAddress(peer: string | undefined, headers: Headers, trust: Pick<RateLimitConfig, "trustProxyHeader" | "trustProxyHops">): string | undefined {
  if (peer === undefined) return undefined;
  if (trust.trustProxyHeader) {
    const value = headers.get(trust.trustProxyHeader);
    if (value) {
      const entries = trust.trustProxyHeader === "forwarded" ? forwardedFor(value) : value.split(",");
      const named = entries[Math.max(0, entries.length - trust.trustProxyHops)];
      const key = named === undefined ? undefined : addressKey(named);
      if (key) return key;
    }
  }
  return addressKey(peer) ?? peer;
}

/** The `for=` of each element of an RFC 7239 `Forwarded` header, in order. */
function forwardedFor(value: string): string[] {
  const found: string[] = [];
  for (const element of value.split(",")) {
    const match = /(?:^|;)\s*for\s*=\s*("[^"]*"|[^;\s]+)/i.exec(element);
    if (match) found.push(match[1]!);
  }
  return found;
}

/** An address as a budget key (IPv6 cut to its /64), or undefined when it is not an IP address (a port and quotes allowed). */
export function addressKey(raw: string): string | undefined {
  let address = raw.trim().replace(/^"(.*)"$/, "$1");
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) address = bracketed[1]!;
  else if (/^[\d.]+:\d+$/.test(address)) address = address.slice(0, address.lastIndexOf(":"));
  const zone = address.indexOf("%");
  if (zone >= 0) address = address.slice(0, zone);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) address = mapped[1]!;
  switch (isIP(address)) {
    case 4:
      return address;
    case 6:
      return `${ipv6Groups(address).slice(0, 4).join(":")}::/64`;
    default:
      return undefined;
  }
}

/** The eight groups of a valid IPv6 address, as short hex. */
function ipv6Groups(address: string): string[] {
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    address = `${address.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = address.split("::") as [string, string | undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return groups.map((group) => parseInt(group, 16).toString(16));
}

/**
 * The abuse limits: each call to a limited RPC takes one from its user's
 * budget for the rule (when it carries a valid user token) and one from its
 * client address's. Calls from boxoffice services (the internal credential:
 * IssueQueueToken's EnterQueue, in process or over the network) were counted
 * where they came in and are not counted again. Over budget, the call is
 * refused before any other work with ResourceExhausted, REASON_RATE_LIMITED and
 * the wait (`retry_after_ms`).
 */
export class RateLimits {
  constructor(
    private readonly config: RateLimitConfig,
    private readonly budgets: Budgets,
    private readonly tokens: UserTokens,
    private readonly internalCredential: string,
    private readonly keyPrefix: string,
  ) {}

  readonly interceptor: Interceptor = (next) => async (req) => {
    const rule = limitedRpcs.get(req.method);
    if (rule !== undefined && !fromService(req.header, this.internalCredential)) {
      const { perUser, perAddress } = this.config;
      const counted: { scope: "user" | "address"; budget: Budget }[] = [];
      const userId = perUser[rule] > 0 ? await this.#userOf(req.header) : undefined;
      if (userId) counted.push({ scope: "user", budget: { key: `${this.keyPrefix}limit:${rule}:user:${userId}`, perMinute: perUser[rule] } });
      const address = perAddress[rule] > 0 ? clientAddress(req.contextValues.get(peerAddressKey), req.header, this.config) : undefined;
      if (address) counted.push({ scope: "address", budget: { key: `${this.keyPrefix}limit:${rule}:address:${address}`, perMinute: perAddress[rule] } });
      const refusal = counted.length > 0 ? await this.budgets.take(counted.map((c) => c.budget)) : undefined;
      if (refusal) throw rateLimited(rule, counted[refusal.refused]!.scope, counted[refusal.refused]!.budget.perMinute, refusal.waitMs);
    }
    return next(req);
  };

  /** The verified user of the call, if any: a bad token is the access check's to refuse, and counts by address only. */
  async #userOf(headers: Headers): Promise<string | undefined> {
    const token = bearer(headers);
    if (!token) return undefined;
    try {
      return (await this.tokens.verify(token)).userId;
    } catch {
      return undefined;
    }
  }

  async close() {
    await this.budgets.close();
  }
}

function rateLimited(rule: RateLimitRule, scope: "user" | "address", perMinute: number, waitMs: number) {
  const who = scope === "user" ? "for one user" : "from one address";
  const wait = waitMs < 1000 ? `${waitMs} ms` : `${(waitMs / 1000).toFixed(1)} s`;
  return new Exhausted(Reason.RATE_LIMITED, `rate limited: at most ${perMinute} ${ruleNames[rule]} a minute ${who}; retry in ${wait}`, {
    retry_after_ms: String(waitMs),
    limit: rule,
    scope,
  });
}

/** The limits a process enforces, on the suite's Redis when it has one (shared by every instance), else in process; undefined when off. */
export function rateLimits(config: Config, tokens: UserTokens): RateLimits | undefined {
  const { limits } = config;
  const counted = [...Object.values(limits.perAddress), ...Object.values(limits.perUser)].some((perMinute) => perMinute > 0);
  if (!limits.enabled || !counted) return undefined;
  const redis = config.redisCluster ? { clusterNodes: config.redisCluster } : config.redisUrl ? { url: config.redisUrl } : undefined;
  const budgets = redis ? new RedisBudgets(redis) : new LocalBudgets();
  return new RateLimits(limits, budgets, tokens, config.internalCredential, config.queue.redisKeyPrefix);
}
