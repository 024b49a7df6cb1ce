/**
 * The flash sale: many fans enter one concert's queue (10 dates × 50 seats) at
 * once and watch their place; each fan admitted lists a date's seats, holds a
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

export interface FlashSaleResult {
  fans: number;
  seats: number;
  sold: number;
  soldOutAfterMs: number;
  bookingsPerSecond: number;
  p99Ms: Record<string, number>;
  conflicts: number;
  /** Checkouts asked again with the same key after a deadline or outage. */
  payRetries: number;
  soldOutFans: number;
  checks: { seatsSold: number; seatsSoldTwice: number; pointsConserved: boolean };
}

const dates = 10;
const seatsPerDate = 50;
const price = 1_000n;

function p99(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))] ?? 0;
}

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

  const steps: Record<string, number[]> = { enter: [], listSeats: [], hold: [], charge: [], pay: [] };
  const timed = async <T>(step: string, call: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await call();
    } finally {
      steps[step]!.push(performance.now() - started);
    }
  };
  let conflicts = 0;
  let payRetries = 0;
  let soldOutFans = 0;
  let sold = 0;
  let lastSaleAt = 0;
  const began = performance.now();

  async function fan(token: string, i: number) {
    const t = at(i);
    const auth = { authorization: `Bearer ${token}` };
    const { queueToken, status } = await timed("enter", () => createClient(QueueService, t).enterQueue({ concertId }, { headers: auth }));
    if (status?.state === QueueState.SOLD_OUT) return void soldOutFans++;
    let state: QueueState = status!.state;
    if (state !== QueueState.ADMITTED) {
      for await (const update of createClient(CoordinatorService, t).watchQueueStatus({}, { headers: { "x-queue-token": queueToken }, timeoutMs: 0 })) {
        state = update.status!.state;
      }
    }
    if (state !== QueueState.ADMITTED) return void soldOutFans++;
    const headers = { ...auth, "x-queue-token": queueToken };
    const concerts = createClient(ConcertService, t);
    const reservations = createClient(ReservationService, t);
    for (let attempt = 0; attempt < 20; attempt++) {
      const scheduleId = scheduleIds[(i + attempt) % dates]!;
      const { seats } = await timed("listSeats", () => concerts.listSeats({ scheduleId }, { headers }));
      const free = seats.filter((seat) => seat.state === SeatState.AVAILABLE);
      if (free.length === 0) continue;
      const seat = free[Math.floor(Math.random() * free.length)]!;
      let reservationId: string;
      try {
        const { reservation } = await timed("hold", () => reservations.holdSeats({ scheduleId, seatNumbers: [seat.number] }, { headers }));
        reservationId = reservation!.id;
      } catch (error) {
        if (ConnectError.from(error).code === Code.FailedPrecondition) {
          conflicts++;
          continue;
        }
        throw error;
      }
      await timed("charge", () => createClient(PointService, t).chargePoints({ amount: price, idempotencyKey: randomUUID() }, { headers: auth }));
      // A fan whose checkout is cut off (deadline, outage) asks again with the same key: the payment is made once.
      const idempotencyKey = randomUUID();
      const checkout = () => createClient(CoordinatorService, t).checkout({ reservationId, idempotencyKey }, { headers });
      let payment: Payment | undefined;
      for (let attempt = 1; payment === undefined; attempt++) {
        try {
          payment = (await timed("pay", checkout)).payment;
        } catch (error) {
          if (attempt === 5 || ![Code.Unavailable, Code.DeadlineExceeded].includes(ConnectError.from(error).code)) throw error;
          payRetries++;
        }
      }
      if (payment?.state === PaymentState.SUCCEEDED) {
        sold++;
        lastSaleAt = performance.now();
      }
      return;
    }
    // Nothing left to hold after 20 tries: the fan leaves, and the place goes to the next.
    await createClient(QueueService, t).leaveQueue({}, { headers: { "x-queue-token": queueToken } });
  }

  const outcomes = await Promise.allSettled(fanTokens.map((token, i) => fan(token, i)));
  const failed = outcomes.filter((o) => o.status === "rejected");
  if (failed.length > 0) console.warn(`flash sale: ${failed.length} fans failed unexpectedly, e.g. ${(failed[0] as PromiseRejectedResult).reason}`);

  const db = new pg.Client({ connectionString: options.databaseUrl });
  await db.connect();
  try {
    const seats = await db.query<{ sold: string; twice: string }>(
      `select count(*) filter (where seat.state = 'SOLD') as sold,
              count(*) filter (where seat.state = 'SOLD' and (select count(*) from reservation.reservation r
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
      p99Ms: Object.fromEntries(Object.entries(steps).map(([step, values]) => [step, p99(values)])),
      conflicts,
      payRetries,
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
