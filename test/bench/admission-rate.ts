/**
 * Admission against arrivals: new fans enter one concert's queue as fast as
 * the driver can, in a room with space for all of them (max_active 1,000,000,
 * no rate limit), and the room is read through QueueAdminService.GetQueueStats
 * at the window's start and end and every 250 ms between. When admission keeps
 * up, admissions per second follow arrivals per second and the line left at
 * the end is about one tick's arrivals. Also: how long the line takes to empty
 * once arrivals stop, and the Redis tick steps the server ran meanwhile (from
 * its /metrics), each one script of at most one batch.
 */
import { createClient, type Transport } from "@connectrpc/connect";
import { QueueAdminService, QueueService } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { randomUUID } from "node:crypto";
import { openDatabase } from "../../services/platform/database.js";
import { AdmissionWorker } from "../../services/queue/admission.js";
import { queueModule } from "../../services/queue/index.js";
import { RedisQueueStore } from "../../services/queue/redis-store.js";
import { Rooms } from "../../services/queue/rooms.js";
import { createDatabase, dropDatabase } from "../databases.js";
import { dropKeys } from "../redis-keys.js";
import { Exhausted, measure } from "./measure.js";
import { openConcert } from "./setup.js";

export interface AdmissionRate {
  /** How long fans entered (the measured window), s. */
  seconds: number;
  /** EnterQueue answered in the window, and per second. */
  arrivals: number;
  arrivalsPerSecond: number;
  /** Fans admitted in the window (admitted sessions read at its end less those read at its start; none ends meanwhile), and per second. */
  admissions: number;
  admissionsPerSecond: number;
  /** The line at the window's start (the warm-up's arrivals), at its end, and at its longest in between. */
  waitingAtStart: number;
  waitingAtEnd: number;
  peakWaiting: number;
  /** From the window's end until nobody waits, ms (undefined: not within 30 s). */
  drainedAfterMs: number | undefined;
  enterP99Ms: number;
  /** Redis tick steps (one script each) in the window and their mean time, ms; undefined on the in-process store. */
  tickSteps: number | undefined;
  msPerTickStep: number | undefined;
}

/** Fan tokens for a run of `seconds` after `warmSeconds`: above the fastest arrivals seen (about 7,000/s on 2 cores); a run that uses them up ends early. */
export const admissionRateFans = (seconds: number, warmSeconds: number) => Math.ceil((seconds + warmSeconds) * 10_000);

export async function measureAdmissionRate(options: {
  transport: Transport;
  /** The server's base URL, for its /metrics. */
  url: string;
  operatorKey: string;
  /** One per arrival, never used before: admissionRateFans(seconds, warmSeconds) of them. */
  fanTokens: string[];
  seconds: number;
  warmSeconds: number;
  concurrency: number;
}): Promise<AdmissionRate> {
  const { transport, operatorKey, fanTokens } = options;
  const operator = { headers: { authorization: `Bearer ${operatorKey}` } };
  const admin = createClient(QueueAdminService, transport);
  const queue = createClient(QueueService, transport);
  const { concertId } = await openConcert(transport, operatorKey, { title: "Admission rate", dates: 1, seatsPerDate: 50, maxActive: 1_000_000 });
  // Sessions outlast the run, so that the admitted sessions counted at its end are every admission since its start.
  await admin.setAdmissionPolicy({ concertId, policy: { maxActive: 1_000_000, ratePerMinute: 0, sessionTtl: { seconds: 3_600n } } }, operator);
  const stats = () => admin.getQueueStats({ concertId }, operator);
  const tickSteps = async () => {
    const text = await (await fetch(`${options.url}/metrics`, operator)).text();
    const value = (series: string) => Number(new RegExp(`^boxoffice_store_seconds_${series}\\{[^}]*operation="tick"[^}]*\\} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
    return { count: value("count"), seconds: value("sum") };
  };

  let next = 0;
  const enter = async () => {
    const token = fanTokens[next++];
    if (token === undefined) throw new Exhausted();
    await queue.enterQueue({ concertId }, { headers: { authorization: `Bearer ${token}` } });
  };
  let start: Promise<[Awaited<ReturnType<typeof stats>>, Awaited<ReturnType<typeof tickSteps>>]> | undefined;
  let peakWaiting = 0;
  let sampling: NodeJS.Timeout | undefined;
  const entered = await measure("EnterQueue (room for everyone)", enter, {
    seconds: options.seconds,
    warmSeconds: options.warmSeconds,
    concurrency: options.concurrency,
    onMeasuring: () => {
      start = Promise.all([stats(), tickSteps()]);
      sampling = setInterval(() => void stats().then((s) => (peakWaiting = Math.max(peakWaiting, Number(s.waiting)))), 250);
    },
  });
  const [end, stepsAtEnd] = await Promise.all([stats(), tickSteps()]);
  const ended = performance.now();
  clearInterval(sampling);
  const [begin, stepsAtStart] = await start!;

  let drainedAfterMs: number | undefined;
  for (let waiting = Number(end.waiting); performance.now() - ended < 30_000; waiting = Number((await stats()).waiting)) {
    if (waiting === 0) {
      drainedAfterMs = performance.now() - ended;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  const seconds = entered.calls / entered.perSecond;
  const admissions = Number(end.admitted - begin.admitted);
  const steps = stepsAtEnd.count - stepsAtStart.count;
  return {
    seconds,
    arrivals: entered.calls,
    arrivalsPerSecond: entered.perSecond,
    admissions,
    admissionsPerSecond: admissions / seconds,
    waitingAtStart: Number(begin.waiting),
    waitingAtEnd: Number(end.waiting),
    peakWaiting: Math.max(peakWaiting, Number(end.waiting)),
    drainedAfterMs,
    enterP99Ms: entered.p99Ms,
    tickSteps: Number.isNaN(steps) ? undefined : steps,
    msPerTickStep: Number.isNaN(steps) || steps === 0 ? undefined : (1000 * (stepsAtEnd.seconds - stepsAtStart.seconds)) / steps,
  };
}

export interface BacklogDrain {
  backlog: number;
  seconds: number;
  admissionsPerSecond: number;
}

/**
 * A backlog let in: `backlog` fans wait in a room with space for them all (a
 * paused room resumed, a sale's line once seats are back), on Redis, and the
 * queue service's own AdmissionWorker (its production tick of 250 ms and batch
 * of 1,000) admits until nobody waits. Before admission kept up, one tick
 * admitted at most one batch: 4,000 a second whatever the backlog.
 */
export async function measureBacklogDrain(redisUrl: string, backlog: number): Promise<BacklogDrain> {
  const prefix = `bench:drain:${randomUUID()}:`;
  const name = `boxoffice_bench_drain_${process.pid}`;
  const orm = await openDatabase(queueModule.database!, { url: await createDatabase(name), poolSize: 2 });
  const store = new RedisQueueStore({ url: redisUrl }, prefix);
  const sale = { published: true, cancelled: false, cancelReason: "", prequeueOpensAt: 0, saleOpensAt: 0, saleEndsAt: Number.MAX_SAFE_INTEGER };
  const seats = { total: backlog, available: backlog, held: 0, sold: 0, sale };
  const supply = { of: async () => seats, exists: async () => {}, sale: async () => sale, current: async () => seats, forget: () => {} };
  const rooms = new Rooms(orm, prefix);
  const worker = new AdmissionWorker(
    store,
    rooms,
    supply as never,
    { maxActive: 1_000_000, ratePerMinute: 0, sessionTtlMs: 3_600_000, abandonAfterMs: 3_600_000, random: false },
    { tickMs: 250 },
  );
  try {
    const concertId = randomUUID();
    await store.apply(concertId, await rooms.change(concertId, {}));
    for (let start = 0; start < backlog; start += 500) {
      await Promise.all(Array.from({ length: Math.min(500, backlog - start) }, () => store.enter(concertId, randomUUID(), Date.now())));
    }
    const started = performance.now();
    worker.start();
    while ((await store.counts(concertId, Date.now())).waiting > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const seconds = (performance.now() - started) / 1000;
    return { backlog, seconds, admissionsPerSecond: backlog / seconds };
  } finally {
    await worker.stop();
    await store.close();
    await orm.close();
    await dropKeys(redisUrl, prefix);
    await dropDatabase(name);
  }
}
