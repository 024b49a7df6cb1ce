/**
 * The flash sale: many fans arrive at one concert's queue (10 dates × 50
 * seats) within a few seconds, each opens one watch stream on their place and
 * keeps it until a final state; each fan admitted lists a date's seats, holds
 * a random free seat (another date on conflict), charges points and pays; a
 * fan told SOLD_OUT (by EnterQueue, by the watch, or by every date's seats all
 * sold) goes home. Every fan ends with one outcome. Reports where each buyer's
 * time went (entering, waiting, booking), the time to the last sale and until
 * every fan had an answer, the server's memory during the sale, then checks the
 * database: exactly 500 seats sold, none twice, and points conserved.
 *
 * The crowd's own calls (EnterQueue, WatchQueueStatus) go over a raw gRPC
 * channel when `url` is given (sale-grpc.ts: what 100,000 fans need from one
 * driver process), else through the Connect transports; the booking calls of
 * the admitted few always go through Connect.
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import pg from "pg";
import { ConcertAdminService, ConcertService, SeatState } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentState, type Payment } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { QueueService, QueueState, type EnterQueueResponse, type QueueStatus } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { cpuSnapshot } from "./cpu.js";
import { quantile } from "./measure.js";
import { GrpcChannel } from "./sale-grpc.js";

/** How each fan's visit ended: every fan gets exactly one. */
export const outcomeNames = ["bought", "soldOutAtEntry", "soldOutInLine", "soldOutAtSeats", "left", "failed"] as const;
export type Outcome = (typeof outcomeNames)[number];

export interface Quantiles {
  p50: number;
  p99: number;
}

/** A buyer's time, in ms: arrival → EnterQueue answered, → ADMITTED heard, → payment SUCCEEDED. */
export interface Breakdown {
  enteringMs: number;
  waitingMs: number;
  bookingMs: number;
}

export interface FlashSaleResult {
  fans: number;
  seats: number;
  arrivalSpreadMs: number;
  sold: number;
  /** From the first fan's arrival to the last payment that succeeded. */
  soldOutAfterMs: number;
  /** From the first fan's arrival until the last fan had a final answer. */
  everyFanAnsweredMs: number;
  bookingsPerSecond: number;
  outcomes: Record<Outcome, number>;
  /** The buyers' breakdown, p50 and p99 of each part, and the last buyer's own. */
  buyers: { entering: Quantiles; waiting: Quantiles; booking: Quantiles; last: Breakdown | undefined };
  /** Arrival → final answer, every fan. */
  answered: Quantiles;
  p99Ms: Record<string, number>;
  conflicts: number;
  /** Calls asked again after Unavailable, a deadline or a reset stream, and checkouts asked again after PENDING. */
  retries: number;
  retriesByCode: Record<string, number>;
  /** Fans told SOLD_OUT, whichever way. */
  soldOutFans: number;
  /** Most watch streams open at once. */
  peakWatching: number;
  /** What the failed fans failed with (message → count). */
  failures: Record<string, number>;
  /** The load driver's lateness: due arrival → EnterQueue sent. */
  driverLagMs: Quantiles & { max: number };
  driverEventLoopP99Ms: number;
  /** CPU seconds during the sale: the server, this driver, the rest of the machine; and the sale's wall seconds. */
  cpuSeconds: { server: number; driver: number; rest: number; wall: number } | undefined;
  memory: { serverRssBeforeMiB: number; serverPeakRssMiB: number; serverHwmMiB: number; driverPeakRssMiB: number } | undefined;
  checks: { seatsSold: number; seatsSoldTwice: number; pointsConserved: boolean };
}

/** The queue's side of a fan's visit: entering, and watching the place. */
interface FanLine {
  enter(userToken: string, concertId: string): Promise<EnterQueueResponse>;
  /** Watches the place; each status to `onStatus`; resolves when the server ends the stream. */
  watch(queueToken: string, onStatus: (status: QueueStatus) => void): Promise<void>;
  close(): void;
}

/** As an app waits: 30 s for its place in line, and three missed heartbeats (15 s apart) before it watches again. */
const enterTimeoutMs = 30_000;
const watchSilenceMs = 45_000;

function rawLine(channel: GrpcChannel): FanLine {
  return {
    enter: (userToken, concertId) => channel.unary(QueueService.method.enterQueue, { concertId }, { authorization: `Bearer ${userToken}` }, enterTimeoutMs),
    watch: (queueToken, onStatus) =>
      channel.serverStream(CoordinatorService.method.watchQueueStatus, {}, { "x-queue-token": queueToken }, (update) => onStatus(update.status!), watchSilenceMs),
    close: () => channel.close(),
  };
}

function connectLine(transports: Transport[]): FanLine {
  const queues = transports.map((t) => createClient(QueueService, t));
  const coordinators = transports.map((t) => createClient(CoordinatorService, t));
  let next = 0;
  return {
    enter: (userToken, concertId) =>
      queues[next++ % queues.length]!.enterQueue({ concertId }, { headers: { authorization: `Bearer ${userToken}` }, timeoutMs: enterTimeoutMs }),
    watch: async (queueToken, onStatus) => {
      const stream = coordinators[next++ % coordinators.length]!.watchQueueStatus({}, { headers: { "x-queue-token": queueToken }, timeoutMs: 0 });
      for await (const update of stream) onStatus(update.status!);
    },
    close: () => {},
  };
}

const finalStates = new Set([QueueState.ADMITTED, QueueState.SOLD_OUT, QueueState.EXPIRED, QueueState.LEFT, QueueState.COMPLETED, QueueState.CLOSED]);
/** Codes a fan's app asks again after: the server shed the call or reset its stream (the bench never cancels its own calls). */
const askAgain = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Canceled]);
const dates = 10;
const seatsPerDate = 50;
const price = 1_000n;
/** Rounds over every date an admitted fan makes while seats are held but not yet sold, a second apart. */
const seatRounds = 30;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (kib: number) => kib / 1024;
/** The largest value (Math.max(...values) overflows the stack at 100,000 arguments). */
const largest = (values: Iterable<number>) => {
  let most = -Infinity;
  for (const value of values) most = Math.max(most, value);
  return most;
};

/** A field of the process's /proc status in KiB; 0 once the process is gone. */
function procStatusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith(`${field}:`));
    return Number(line?.split(/\s+/)[1] ?? 0);
  } catch {
    return 0;
  }
}

function quantiles(values: number[]): Quantiles {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99) };
}

export async function measureFlashSale(options: {
  /** Connect transports for the booking calls (and for the crowd's when `url` is not given). */
  transports: Transport[];
  operatorKey: string;
  databaseUrl: string;
  fanTokens: string[];
  /** The fans' arrivals are spread evenly over this long (default 5 s). */
  arrivalSpreadMs?: number;
  /** The server's URL: the crowd's EnterQueue and watch streams go over a raw gRPC channel of `connections` HTTP/2 connections. */
  url?: string;
  connections?: number;
  /** The server's process, to sample its memory and CPU during the sale. */
  serverPid?: number;
}): Promise<FlashSaleResult> {
  const { transports, fanTokens, serverPid } = options;
  const fans = fanTokens.length;
  const arrivalSpreadMs = options.arrivalSpreadMs ?? 5_000;
  const at = (i: number) => transports[i % transports.length]!;
  const startsAt = timestampFromDate(new Date(Date.now() + 60 * 86_400_000));
  const { concert } = await createClient(ConcertAdminService, at(0)).createConcert(
    { title: "Flash sale", schedules: Array.from({ length: dates }, () => ({ startsAt, seatCount: seatsPerDate, price })) },
    { headers: { authorization: `Bearer ${options.operatorKey}` } },
  );
  const concertId = concert!.id;
  const scheduleIds = (await createClient(ConcertService, at(0)).listSchedules({ concertId })).schedules.map((s) => s.id);
  const line = options.url ? rawLine(new GrpcChannel(options.url, options.connections ?? 100)) : connectLine(transports);
  // One client per service and transport, made once.
  const clients = transports.map((t) => ({
    concerts: createClient(ConcertService, t),
    reservations: createClient(ReservationService, t),
    points: createClient(PointService, t),
    coordinator: createClient(CoordinatorService, t),
    queue: createClient(QueueService, t),
  }));

  const steps: Record<string, number[]> = { enter: [], watch: [], listSeats: [], hold: [], charge: [], pay: [], leave: [] };
  const timed = async <T>(step: string, call: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await call();
    } finally {
      steps[step]!.push(performance.now() - started);
    }
  };
  let conflicts = 0;
  let retries = 0;
  const retriesByCode: Record<string, number> = {};
  let sold = 0;
  let lastSaleAt = 0;
  let arrived = 0;
  let watching = 0;
  let peakWatching = 0;
  const stage = { entering: 0, waiting: 0, booking: 0 };
  const outcomes = Object.fromEntries(outcomeNames.map((name) => [name, 0])) as Record<Outcome, number>;
  const failures = new Map<string, number>();
  // Per fan, ms on performance.now(): when the call went out, and each step's end (0 until it happens).
  const sentAt = new Float64Array(fans);
  const enteredAt = new Float64Array(fans);
  const admittedAt = new Float64Array(fans);
  const soldAt = new Float64Array(fans);
  const answeredAt = new Float64Array(fans);

  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  const serverRssBefore = serverPid ? procStatusKiB(serverPid, "VmRSS") : 0;
  let serverPeakRss = serverRssBefore;
  let driverPeakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    if (serverPid) serverPeakRss = Math.max(serverPeakRss, procStatusKiB(serverPid, "VmRSS"));
    driverPeakRss = Math.max(driverPeakRss, process.memoryUsage.rss());
  }, 500);
  const cpuBefore = serverPid ? cpuSnapshot(serverPid) : undefined;
  // The first fan is due now; fan i at i × arrivalSpreadMs ÷ fans.
  const began = performance.now();
  const dueAt = (i: number) => began + (i * arrivalSpreadMs) / fans;

  const progress = setInterval(() => {
    const seconds = ((performance.now() - began) / 1000).toFixed(0);
    const memory = serverPid ? `, server RSS ${mib(procStatusKiB(serverPid, "VmRSS")).toFixed(0)} MiB` : "";
    console.error(
      `flash sale +${seconds}s: arrived ${arrived}/${fans}, ${JSON.stringify({ ...stage, watching })}, answered ${JSON.stringify(outcomes)}, sold ${sold}${memory}`,
    );
    for (const [message, count] of failures) console.error(`  ${count} × ${message}`);
  }, 10_000);

  /**
   * As a fan's app does: a call answered Unavailable, cut off by a deadline or
   * reset by the server (an overloaded server shedding load) is asked again
   * after a backoff that doubles from 1 s to at most 16 s, each wait drawn at
   * random from its upper half (so that a crowd's retries spread out), up to
   * 30 times; each try counts in the step's latency.
   */
  async function persist<T>(step: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await timed(step, call);
      } catch (error) {
        const code = ConnectError.from(error).code;
        if (attempt === 30 || !askAgain.has(code)) throw error;
        retries++;
        const key = `${step} ${Code[code]}`;
        if (retriesByCode[key] === undefined) console.error(`flash sale: ${step} asked again after ${String(error)}`);
        retriesByCode[key] = (retriesByCode[key] ?? 0) + 1;
        const backoffMs = Math.min(16_000, 1_000 * 2 ** (attempt - 1));
        await sleep(backoffMs * (0.5 + Math.random() / 2));
      }
    }
  }

  function answer(i: number, outcome: Outcome) {
    outcomes[outcome]++;
    answeredAt[i] = performance.now();
  }

  async function fan(i: number) {
    const token = fanTokens[i]!;
    arrived++;
    sentAt[i] = performance.now();
    let where: keyof typeof stage | undefined = "entering";
    const to = (next: keyof typeof stage | undefined) => (where && stage[where]--, next && stage[next]++, (where = next));
    stage.entering++;
    try {
      answer(i, await visit(i, token, to));
    } catch (error) {
      const message = String(error);
      failures.set(message, (failures.get(message) ?? 0) + 1);
      answer(i, "failed");
    } finally {
      to(undefined);
    }
  }

  async function visit(i: number, token: string, to: (stage: "waiting" | "booking") => unknown): Promise<Outcome> {
    const { queueToken, status } = await persist("enter", () => line.enter(token, concertId));
    enteredAt[i] = performance.now();
    if (status!.state === QueueState.SOLD_OUT) return "soldOutAtEntry";
    if (status!.state === QueueState.ADMITTED) admittedAt[i] = enteredAt[i]!;
    to("waiting");
    const state = await wait(i, queueToken, status!.state);
    if (state === QueueState.SOLD_OUT) return "soldOutInLine";
    if (state !== QueueState.ADMITTED) return "left";
    to("booking");
    return book(i, token, queueToken);
  }

  /** Watches the place until a final state, over one stream opened again only when it ends without one (an outage, a deploy). */
  async function wait(i: number, queueToken: string, state: QueueState): Promise<QueueState> {
    watching++;
    peakWatching = Math.max(peakWatching, watching);
    try {
      for (let opened = 0; !finalStates.has(state); opened++) {
        if (opened === 30) throw new Error("the watch stream kept ending without a final state");
        await persist("watch", () =>
          line.watch(queueToken, (update) => {
            state = update.state;
            if (state === QueueState.ADMITTED) admittedAt[i] = performance.now();
          }),
        );
      }
      return state;
    } finally {
      watching--;
    }
  }

  /** An admitted fan books one seat: sold out once every date's seats all read SOLD; leaves after `seatRounds` rounds without one. */
  async function book(i: number, token: string, queueToken: string): Promise<Outcome> {
    const { concerts, reservations, points, coordinator, queue } = clients[i % clients.length]!;
    const auth = { authorization: `Bearer ${token}` };
    const headers = { ...auth, "x-queue-token": queueToken };
    for (let round = 0; round < seatRounds; round++) {
      let allSold = true;
      for (let d = 0; d < dates; d++) {
        const scheduleId = scheduleIds[(i + d) % dates]!;
        const { seats } = await persist("listSeats", () => concerts.listSeats({ scheduleId }, { headers }));
        const free = seats.filter((seat) => seat.state === SeatState.AVAILABLE);
        if (seats.some((seat) => seat.state !== SeatState.SOLD)) allSold = false;
        if (free.length === 0) continue;
        const seat = free[Math.floor(Math.random() * free.length)]!;
        let reservationId: string;
        try {
          const { reservation } = await persist("hold", () => reservations.holdSeats({ scheduleId, seatNumbers: [seat.number] }, { headers }));
          reservationId = reservation!.id;
        } catch (error) {
          if (ConnectError.from(error).code === Code.FailedPrecondition) {
            conflicts++;
            continue;
          }
          throw error;
        }
        // Keys chosen once, so that asking again never charges or pays twice.
        const chargeKey = randomUUID();
        await persist("charge", () => points.chargePoints({ amount: price, idempotencyKey: chargeKey }, { headers: auth }));
        const payKey = randomUUID();
        const checkout = () => coordinator.checkout({ reservationId, idempotencyKey: payKey }, { headers });
        let payment: Payment | undefined = (await persist("pay", checkout)).payment;
        // A payment answered PENDING (a service it needed was too slow) is asked after again, with the same key.
        for (let attempt = 1; payment?.state === PaymentState.PENDING && attempt < 30; attempt++) {
          retries++;
          retriesByCode["pay PENDING"] = (retriesByCode["pay PENDING"] ?? 0) + 1;
          await sleep(1_000);
          payment = (await persist("pay", checkout)).payment;
        }
        if (payment?.state !== PaymentState.SUCCEEDED) throw new Error(`the payment ended ${PaymentState[payment?.state ?? 0]}`);
        sold++;
        soldAt[i] = lastSaleAt = performance.now();
        return "bought";
      }
      if (allSold) return "soldOutAtSeats";
      // Seats are held by fans still paying: one may come back.
      await sleep(1_000);
    }
    // No seat after every round: the fan leaves, and the place goes to the next.
    await persist("leave", () => queue.leaveQueue({}, { headers: { "x-queue-token": queueToken } }));
    return "left";
  }

  // The crowd arrives: every fan due by now is sent on its way, checked every few ms (a late driver catches up at once).
  const visits: Promise<void>[] = [];
  while (visits.length < fans) {
    const now = performance.now();
    while (visits.length < fans && dueAt(visits.length) <= now) visits.push(fan(visits.length));
    if (visits.length < fans) await sleep(Math.max(1, Math.min(5, dueAt(visits.length) - now)));
  }
  await Promise.all(visits);
  const endedAt = performance.now();
  const cpuAfter = serverPid ? cpuSnapshot(serverPid) : undefined;
  clearInterval(progress);
  clearInterval(sampler);
  loopDelay.disable();
  line.close();
  if (outcomes.failed > 0) console.warn(`flash sale: ${outcomes.failed} fans failed, e.g. ${failures.keys().next().value}`);

  const buyers = [...soldAt.keys()].filter((i) => soldAt[i]! > 0);
  const breakdown = (i: number): Breakdown => ({
    enteringMs: enteredAt[i]! - dueAt(i),
    waitingMs: admittedAt[i]! - enteredAt[i]!,
    bookingMs: soldAt[i]! - admittedAt[i]!,
  });
  const parts = buyers.map(breakdown);
  const lastBuyer = buyers.reduce<number | undefined>((last, i) => (last === undefined || soldAt[i]! > soldAt[last]! ? i : last), undefined);
  const lag = [...sentAt].map((sent, i) => sent - dueAt(i));

  const db = new pg.Client({ connectionString: options.databaseUrl });
  await db.connect();
  try {
    const seats = await db.query<{ sold: string; twice: string }>(
      `select count(*) filter (where seat.state = 'SOLD') as sold,
              count(*) filter (where seat.state = 'SOLD' and (select count(*) from concert.hold r
                 where r.state = 'CONFIRMED' and r.schedule_id = seat.schedule_id and r.seat_numbers @> to_jsonb(seat.number)) <> 1) as twice
         from concert.seat seat join concert.schedule schedule on schedule.id = seat.schedule_id where schedule.concert_id = $1`,
      [concertId],
    );
    const points = await db.query<{ balances: string; ledger: string }>(
      `select (select coalesce(sum(balance), 0) from point.account) as balances, (select coalesce(sum(amount), 0) from point.ledger_entry) as ledger`,
    );
    const soldOutAfterMs = lastSaleAt - began;
    return {
      fans,
      seats: dates * seatsPerDate,
      arrivalSpreadMs,
      sold,
      soldOutAfterMs,
      everyFanAnsweredMs: largest(answeredAt) - began,
      bookingsPerSecond: sold / (soldOutAfterMs / 1000),
      outcomes,
      buyers: {
        entering: quantiles(parts.map((p) => p.enteringMs)),
        waiting: quantiles(parts.map((p) => p.waitingMs)),
        booking: quantiles(parts.map((p) => p.bookingMs)),
        last: lastBuyer === undefined ? undefined : breakdown(lastBuyer),
      },
      answered: quantiles([...answeredAt].map((t, i) => t - dueAt(i))),
      p99Ms: Object.fromEntries(Object.entries(steps).map(([step, values]) => [step, quantiles(values).p99])),
      conflicts,
      retries,
      retriesByCode,
      soldOutFans: outcomes.soldOutAtEntry + outcomes.soldOutInLine + outcomes.soldOutAtSeats,
      peakWatching,
      failures: Object.fromEntries(failures),
      driverLagMs: { ...quantiles(lag), max: largest(lag) },
      driverEventLoopP99Ms: loopDelay.percentile(99) / 1e6,
      cpuSeconds:
        cpuBefore && cpuAfter
          ? {
              server: (cpuAfter.serverMs - cpuBefore.serverMs) / 1000,
              driver: (cpuAfter.driverMs - cpuBefore.driverMs) / 1000,
              rest: (cpuAfter.machineMs - cpuBefore.machineMs - (cpuAfter.serverMs - cpuBefore.serverMs) - (cpuAfter.driverMs - cpuBefore.driverMs)) / 1000,
              wall: (endedAt - began) / 1000,
            }
          : undefined,
      memory: serverPid
        ? {
            serverRssBeforeMiB: mib(serverRssBefore),
            serverPeakRssMiB: mib(serverPeakRss),
            serverHwmMiB: mib(procStatusKiB(serverPid, "VmHWM")),
            driverPeakRssMiB: driverPeakRss / 2 ** 20,
          }
        : undefined,
      checks: {
        seatsSold: Number(seats.rows[0]!.sold),
        seatsSoldTwice: Number(seats.rows[0]!.twice),
        pointsConserved: points.rows[0]!.balances === points.rows[0]!.ledger,
      },
    };
  } finally {
    await db.end();
  }
}
