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
