import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Cluster, Redis } from "ioredis";
import { ConfigError, loadConfig } from "../services/platform/config.js";
import { commandTimeoutMs, connectRedis, isReady, timeoutAfterIo, waitReady, type RedisClient } from "../services/platform/redis-connection.js";
import { startRedis, startRedisCluster, waitClusterOk, type RedisCluster, type RedisProcess } from "./redis-cluster.js";

/*
 * services/platform/redis-connection.ts on real servers of the test's own: a 3-master
 * Redis Cluster, and a single Redis that is killed, frozen and started again.
 */

const keyPrefix = `test:${randomUUID()}:`;
/** One concert's room, laid out as services/queue/redis-store.ts lays it out: six keys sharing the hash tag {<concert id>}. */
const roomKeys = (concertId: string) => ["line", "seen", "admitted", "recent", "room", "entries"].map((key) => `${keyPrefix}queue:{${concertId}}:${key}`);

/** A script over all six keys of a room, the shape of the store's: it enters a fan and answers the room's counts. */
const enterScript = {
  numberOfKeys: 6,
  lua: `
local line, seen, admitted, recent, room, entries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local seq = redis.call('HINCRBY', room, 'seq', 1)
redis.call('ZADD', line, seq, ARGV[1])
redis.call('ZADD', seen, ARGV[2], ARGV[1])
redis.call('HSET', entries, ARGV[1], seq .. ':W:0')
return { seq, redis.call('ZCARD', line), redis.call('ZCARD', admitted), redis.call('ZCARD', recent) }`,
};

type WithEnter = { boxofficeEnter(...args: (string | number)[]): Promise<number[]> };
const enter = (client: RedisClient, concertId: string, userId: string) =>
  (client as RedisClient & WithEnter).boxofficeEnter(...roomKeys(concertId), userId, Date.now());

/** How long a promise takes to settle, and whether it failed. */
async function timed(call: () => Promise<unknown>): Promise<{ ms: number; failed: boolean; error?: string }> {
  const started = performance.now();
  try {
    await call();
    return { ms: performance.now() - started, failed: false };
  } catch (error) {
    return { ms: performance.now() - started, failed: true, error: (error as Error).message };
  }
}

describe("Redis Cluster", () => {
  let cluster: RedisCluster;
  let client: Cluster;

  beforeAll(async () => {
    const started = performance.now();
    cluster = await startRedisCluster();
    console.log(`3-master Redis Cluster on ${cluster.nodes.join(",")} formed in ${Math.round(performance.now() - started)} ms`);
    // One seed is enough: the client learns the other masters from it.
    client = connectRedis({ clusterNodes: [cluster.nodes[0]!] }) as Cluster;
    client.defineCommand("boxofficeEnter", enterScript);
    expect(await waitReady(client, 10_000)).toBe(true);
  });

  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
  });

  /** The master serving the slot of a key, by the cluster's own word (CLUSTER KEYSLOT, CLUSTER SLOTS). */
  async function masterOf(key: string): Promise<string> {
    const slot = Number(await client.cluster("KEYSLOT", key));
    const [, , master] = (await client.cluster("SLOTS")).find(([from, to]) => from <= slot && slot <= to)!;
    const [host, port] = master!;
    return `${host}:${port}`;
  }

  it("reaches all three masters from one seed node", async () => {
    expect(isReady(client)).toBe(true);
    const masters = client.nodes("master");
    expect(masters.map((node) => `${node.options.host}:${node.options.port}`).sort()).toEqual([...cluster.nodes].sort());
    const answers = await Promise.all(masters.map((node) => node.cluster("MYID")));
    expect(new Set(answers).size).toBe(3);
  });

  it("runs a defineCommand script over a room's six hash-tagged keys, which the prefix leaves in one slot", async () => {
    const concertId = randomUUID();
    const slots = await Promise.all(roomKeys(concertId).map((key) => client.cluster("KEYSLOT", key)));
    expect(new Set(slots).size).toBe(1);
    expect(await enter(client, concertId, "fan-a")).toEqual([1, 1, 0, 0]);
    expect(await enter(client, concertId, "fan-b")).toEqual([2, 2, 0, 0]);
    // A script whose keys span slots is refused (by the client, before the cluster would), so the answers above are not luck.
    const spread = [randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID()].map((id) => `${keyPrefix}{${id}}`);
    await expect((client as RedisClient & WithEnter).boxofficeEnter(...spread, "fan", 0)).rejects.toThrow(/same slot|CROSSSLOT/);
  });

  it("runs many rooms' scripts at once (auto-pipelined per node), each room's keys on exactly one master, the rooms spread over all three", async () => {
    const concerts = Array.from({ length: 30 }, () => randomUUID());
    const answers = await Promise.all(concerts.flatMap((id) => [enter(client, id, "fan-1"), enter(client, id, "fan-2")]));
    expect(answers.map((answer) => answer[0]).sort()).toEqual([...Array(30).fill(1), ...Array(30).fill(2)]);
    const keysOn = new Map<string, Set<string>>();
    for (const node of client.nodes("master")) {
      const keys = new Set<string>();
      let cursor = "0";
      do {
        const [next, batch] = await node.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000);
        for (const key of batch) keys.add(key);
        cursor = next;
      } while (cursor !== "0");
      keysOn.set(`${node.options.host}:${node.options.port}`, keys);
    }
    const mastersUsed = new Set<string>();
    for (const id of concerts) {
      const holders = [...keysOn].filter(([, keys]) => roomKeys(id).some((key) => keys.has(key)));
      expect(holders).toHaveLength(1);
      const [address, keys] = holders[0]!;
      expect(["line", "seen", "room", "entries"].every((key) => keys.has(`${keyPrefix}queue:{${id}}:${key}`))).toBe(true);
      expect(await masterOf(roomKeys(id)[0]!)).toBe(address);
      mastersUsed.add(address);
    }
    expect(mastersUsed.size).toBe(3);
  });

  // Last: it takes a master away. Within the node timeout (15 s) the other masters still serve their slots.
  it("fails a call to a killed master's slot within 1 s, keeps serving the other masters, and recovers when it comes back", async () => {
    const victim = cluster.servers[1]!;
    const concerts = Array.from({ length: 30 }, () => randomUUID());
    const masters = await Promise.all(concerts.map((id) => masterOf(roomKeys(id)[0]!)));
    const onVictim = concerts[masters.indexOf(victim.address)]!;
    const elsewhere = concerts[masters.findIndex((address) => address !== victim.address)]!;
    await enter(client, onVictim, "before");

    await victim.kill();
    const down = await timed(() => enter(client, onVictim, "during"));
    console.log(`call to the killed master: ${down.failed ? "failed" : "succeeded"} in ${down.ms.toFixed(0)} ms (${down.error})`);
    expect(down.failed).toBe(true);
    expect(down.ms).toBeLessThan(1000);
    expect((await enter(client, elsewhere, "during"))[1]).toBe(1);

    const restarted = performance.now();
    await victim.start(); // the same port and node file: the same node id and slots
    await waitClusterOk(cluster.nodes);
    let answer: number[] | undefined;
    while (!answer && performance.now() - restarted < 10_000) {
      answer = await enter(client, onVictim, "after").catch(() => undefined);
      if (!answer) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    console.log(`killed master answers again ${Math.round(performance.now() - restarted)} ms after its restart`);
    // Redis keeps nothing on disk here, so the room starts over on the restarted master.
    expect(answer).toEqual([1, 1, 0, 0]);
  });
});

describe("fail-fast on a single Redis", () => {
  let server: RedisProcess;
  let client: Redis;

  beforeAll(async () => {
    server = await startRedis();
    client = connectRedis({ url: server.url }) as Redis;
    client.defineCommand("boxofficeEnter", enterScript);
    expect(await waitReady(client, 5_000)).toBe(true);
  });

  afterAll(async () => {
    client?.disconnect();
    await server?.kill();
  });

  it("answers an error within 1 s while the server is down, and serves again once it is back on the same port", async () => {
    const concertId = randomUUID();
    expect(await enter(client, concertId, "before")).toEqual([1, 1, 0, 0]);

    await server.kill();
    const rightAway = await timed(() => enter(client, concertId, "at the kill"));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const later = await timed(() => client.get("anything"));
    console.log(`server killed: first call failed in ${rightAway.ms.toFixed(1)} ms (${rightAway.error}), one 300 ms later in ${later.ms.toFixed(1)} ms (${later.error})`);
    for (const outcome of [rightAway, later]) {
      expect(outcome.failed).toBe(true);
      expect(outcome.ms).toBeLessThan(1000);
    }
    expect(isReady(client)).toBe(false);
    expect(await waitReady(client, 200)).toBe(false);

    const restarted = performance.now();
    await server.start();
    expect(await waitReady(client, 3_000)).toBe(true);
    console.log(`ready again ${Math.round(performance.now() - restarted)} ms after the restart`);
    expect(await enter(client, concertId, "after")).toEqual([1, 1, 0, 0]);
    expect(await client.set(`${keyPrefix}k`, "v")).toBe("OK");
  });

  it("a timeout timed after I/O keeps an answer that arrived while the event loop was busy past it; a plain timer gives it up", async () => {
    expect(await waitReady(client, 3_000)).toBe(true);
    const outcome = async (arm: (onTimeout: () => void) => { clear(): void }) => {
      let timer: { clear(): void } | undefined;
      const late = new Promise<"timed out">((resolve) => (timer = arm(() => resolve("timed out"))));
      const answer = client.ping();
      // The command goes out (auto-pipelining writes it on the next turn), Redis answers at once, then the loop is
      // held for 300 ms, past the 100 ms timeout, as a turn setting up a burst of calls holds it.
      await new Promise((resolve) => setImmediate(resolve));
      const until = performance.now() + 300;
      while (performance.now() < until);
      try {
        return await Promise.race([answer, late]);
      } finally {
        timer!.clear();
      }
    };
    const plain = (onTimeout: () => void) => {
      const t = setTimeout(onTimeout, 100);
      return { clear: () => clearTimeout(t) };
    };
    expect(await outcome(plain)).toBe("timed out");
    expect(await outcome((onTimeout) => timeoutAfterIo(100, onTimeout))).toBe("PONG");
  });

  it("gives up on a call the server never answers after its backstop, twice the 2 s command timeout its callers time themselves (redis-connection.ts timeoutAfterIo)", async () => {
    expect(await waitReady(client, 3_000)).toBe(true);
    server.pause();
    try {
      const hung = await timed(() => client.get("anything"));
      console.log(`frozen server: call failed after ${hung.ms.toFixed(0)} ms (${hung.error})`);
      expect(hung.failed).toBe(true);
      expect(hung.error).toMatch(/timed out/);
      expect(hung.ms).toBeGreaterThanOrEqual(2 * commandTimeoutMs - 10);
      expect(hung.ms).toBeLessThan(2 * commandTimeoutMs + 300);
    } finally {
      server.resume();
    }
    expect(await client.ping()).toBe("PONG");
  });
});

describe("REDIS_CLUSTER_NODES", () => {
  const load = (env: Record<string, string>) =>
    loadConfig({ TOKEN_SECRET: "a-token-secret-of-at-least-32-characters", INTERNAL_CREDENTIAL: "internal", OPERATOR_KEY: "operator", ...env });

  it("reads comma-separated host:port seeds into config.redisCluster", () => {
    expect(load({ REDIS_CLUSTER_NODES: "10.0.0.1:6379, 10.0.0.2:6379,redis-3.internal:7000,[::1]:7001" }).redisCluster).toEqual([
      "10.0.0.1:6379",
      "10.0.0.2:6379",
      "redis-3.internal:7000",
      "[::1]:7001",
    ]);
    expect(load({}).redisCluster).toBeUndefined();
  });

  it("refuses a malformed seed, and REDIS_URL set as well", () => {
    for (const nodes of ["10.0.0.1", "10.0.0.1:6379,", "redis://10.0.0.1:6379", "10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:63a"]) {
      expect(() => load({ REDIS_CLUSTER_NODES: nodes }), nodes).toThrow(ConfigError);
    }
    expect(() => load({ REDIS_CLUSTER_NODES: "10.0.0.1:6379", REDIS_URL: "redis://10.0.0.1:6379" })).toThrow(/both set/);
  });
});
