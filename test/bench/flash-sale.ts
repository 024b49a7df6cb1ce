/**
 * The flash sale: many fans enter one concert's queue (10 dates × 50 seats)
 * within five seconds and watch their place; each fan admitted lists a date's seats, holds a
 * random free seat (trying again on conflict), charges points and pays; a fan
 * told SOLD_OUT goes home. Reports the time to sell out, bookings per second
 * and p99 per step, then checks the database: exactly 500 seats sold, none
 * twice, and points conserved.
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { ConcertAdminService, ConcertService, SeatState } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentState, type Payment } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { QueueService, QueueState } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { quantile } from "./measure.js";

export interface FlashSaleResult {
  fans: number;
  seats: number;
  sold: number;
  soldOutAfterMs: number;
  bookingsPerSecond: number;
  p99Ms: Record<string, number>;
  conflicts: number;
  /** Calls asked again after Unavailable or a deadline, and checkouts asked again after PENDING. */
  retries: number;
  soldOutFans: number;
  checks: { seatsSold: number; seatsSoldTwice: number; pointsConserved: boolean };
}

const finalStates = new Set([QueueState.ADMITTED, QueueState.SOLD_OUT, QueueState.EXPIRED, QueueState.LEFT, QueueState.COMPLETED]);
const dates = 10;
const seatsPerDate = 50;
const price = 1_000n;
/** The fans' arrivals are spread evenly over this long. */
const arrivalSpreadMs = 5_000;


export async function measureFlashSale(options: {
  transports: Transport[];
  operatorKey: string;
  databaseUrl: string;
  fanTokens: string[];
}): Promise<FlashSaleResult> {
  const { transports, fanTokens } = options;
  const at = (i: number) => transports[i % transports.length]!;
  const startsAt = timestampFromDate(new Date(Date.now() + 60 * 86_400_000));
  const { concert } = await createClient(ConcertAdminService, at(0)).createConcert(
    { title: "Flash sale", schedules: Array.from({ length: dates }, () => ({ startsAt, seatCount: seatsPerDate, price })) },
    { headers: { authorization: `Bearer ${options.operatorKey}` } },
  );
  const concertId = concert!.id;
  const scheduleIds = (await createClient(ConcertService, at(0)).listSchedules({ concertId })).schedules.map((s) => s.id);

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
  let soldOutFans = 0;
  let sold = 0;
  let lastSaleAt = 0;
  const began = performance.now();

  // Where the fans are, printed every 10 s while the sale runs.
  const fansAt = { arriving: fanTokens.length, waiting: 0, shopping: 0, paying: 0, left: 0, failed: 0 };
  const failures = new Map<string, number>();
  const move = (from: keyof typeof fansAt, to: keyof typeof fansAt) => (fansAt[from]--, fansAt[to]++);
  const progress = setInterval(() => {
    const seconds = ((performance.now() - began) / 1000).toFixed(0);
    console.error(`flash sale +${seconds}s: ${JSON.stringify({ ...fansAt, sold, soldOutFans })}`);
    for (const [message, count] of failures) console.error(`  ${count} × ${message}`);
  }, 10_000);

  async function fan(token: string, i: number) {
    let stage: keyof typeof fansAt = "arriving";
    const to = (next: keyof typeof fansAt) => (move(stage, next), (stage = next));
    try {
      await shop(token, i, to);
      to("left");
    } catch (error) {
      to("failed");
      const message = String(error);
      failures.set(message, (failures.get(message) ?? 0) + 1);
      throw error;
    }
  }

  /**
   * As a fan's app does: a call answered Unavailable or cut off by a deadline
   * (an overloaded server shedding load) is asked again a second later, up to
   * 30 times; each try counts in the step's latency.
   */
  async function persist<T>(step: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await timed(step, call);
      } catch (error) {
        if (attempt === 30 || ![Code.Unavailable, Code.DeadlineExceeded].includes(ConnectError.from(error).code)) throw error;
        retries++;
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      }
    }
  }

  async function shop(token: string, i: number, to: (stage: "waiting" | "shopping" | "paying") => unknown) {
    const t = at(i);
    const auth = { authorization: `Bearer ${token}` };
    const { queueToken, status } = await persist("enter", () => createClient(QueueService, t).enterQueue({ concertId }, { headers: auth }));
    if (status?.state === QueueState.SOLD_OUT) return void soldOutFans++;
    let state: QueueState = status!.state;
    to("waiting");
    // Watch until a final state; a stream cut off by an outage is opened again.
    for (let opened = 0; !finalStates.has(state); opened++) {
      if (opened === 30) throw new Error("the watch stream kept ending without a final state");
      await persist("watch", async () => {
        const stream = createClient(CoordinatorService, t).watchQueueStatus({}, { headers: { "x-queue-token": queueToken }, timeoutMs: 0 });
        for await (const update of stream) state = update.status!.state;
      });
    }
    if (state !== QueueState.ADMITTED) return void soldOutFans++;
    to("shopping");
    const headers = { ...auth, "x-queue-token": queueToken };
    const concerts = createClient(ConcertService, t);
    const reservations = createClient(ReservationService, t);
    for (let attempt = 0; attempt < 20; attempt++) {
      const scheduleId = scheduleIds[(i + attempt) % dates]!;
      const { seats } = await persist("listSeats", () => concerts.listSeats({ scheduleId }, { headers }));
      const free = seats.filter((seat) => seat.state === SeatState.AVAILABLE);
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
      to("paying");
      // Keys chosen once, so that asking again never charges or pays twice.
      const chargeKey = randomUUID();
      await persist("charge", () => createClient(PointService, t).chargePoints({ amount: price, idempotencyKey: chargeKey }, { headers: auth }));
      const payKey = randomUUID();
      const checkout = () => createClient(CoordinatorService, t).checkout({ reservationId, idempotencyKey: payKey }, { headers });
      let { payment } = await persist("pay", checkout);
      // A payment answered PENDING (a service it needed was too slow) is asked after again, with the same key.
      for (let attempt = 1; payment?.state === PaymentState.PENDING && attempt < 30; attempt++) {
        retries++;
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        ({ payment } = await persist("pay", checkout));
      }
      if (payment?.state === PaymentState.SUCCEEDED) {
        sold++;
        lastSaleAt = performance.now();
      }
      return;
    }
    // Nothing left to hold after 20 tries: the fan leaves, and the place goes to the next.
    await persist("leave", () => createClient(QueueService, t).leaveQueue({}, { headers: { "x-queue-token": queueToken } }));
  }

  // Everyone arrives within the first seconds: fan i at i × arrivalSpreadMs ÷ fans.
  const outcomes = await Promise.allSettled(
    fanTokens.map(async (token, i) => {
      await new Promise((resolve) => setTimeout(resolve, (i * arrivalSpreadMs) / fanTokens.length));
      return fan(token, i);
    }),
  );
  clearInterval(progress);
  const failed = outcomes.filter((o) => o.status === "rejected");
  if (failed.length > 0) console.warn(`flash sale: ${failed.length} fans failed unexpectedly, e.g. ${(failed[0] as PromiseRejectedResult).reason}`);

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
      fans: fanTokens.length,
      seats: dates * seatsPerDate,
      sold,
      soldOutAfterMs,
      bookingsPerSecond: sold / (soldOutAfterMs / 1000),
      p99Ms: Object.fromEntries(Object.entries(steps).map(([step, values]) => [step, quantile([...values].sort((a, b) => a - b), 0.99)])),
      conflicts,
      retries,
      soldOutFans,
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
