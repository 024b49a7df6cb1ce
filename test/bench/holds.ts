/**
 * HoldSeats under load: holds on distinct seats (each fan takes its own seat,
 * date after date) and holds all aimed at one contested seat (one wins, every
 * other call is refused with SEAT_UNAVAILABLE).
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { ConcertAdminService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueService, QueueState } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";

const fans = 300;
const dates = 50;

export interface HoldCases {
  distinct: () => Promise<unknown>;
  contested: () => Promise<unknown>;
}

/** Puts a concert of 50 dates × 300 seats on sale and admits 300 fans to it; returns the two calls to measure. */
export async function holdCases(transport: Transport, operatorKey: string, fanTokens: string[]): Promise<HoldCases> {
  const operator = { headers: { authorization: `Bearer ${operatorKey}` } };
  const startsAt = timestampFromDate(new Date(Date.now() + 30 * 86_400_000));
  const { concert, schedules } = await createClient(ConcertAdminService, transport).createConcert(
    { title: "Bench holds", schedules: Array.from({ length: dates }, () => ({ startsAt, seatCount: fans, price: 1_000n })) },
    operator,
  );
  const concertId = concert!.id;
  await createClient(QueueAdminService, transport).setAdmissionPolicy({ concertId, policy: { maxActive: fans * 2 } }, operator);

  const queue = createClient(QueueService, transport);
  const headers = await Promise.all(
    fanTokens.slice(0, fans).map(async (token) => {
      const { queueToken } = await queue.enterQueue({ concertId }, { headers: { authorization: `Bearer ${token}` } });
      return { authorization: `Bearer ${token}`, "x-queue-token": queueToken };
    }),
  );
  for (const fan of headers) {
    while ((await queue.getQueueStatus({}, { headers: fan })).status!.state !== QueueState.ADMITTED) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  const reservations = createClient(ReservationService, transport);
  let next = 0;
  const contestedDate = schedules.at(-1)!.id;
  return {
    // Call k: fan k mod 300 holds its own seat on date k div 300, so no two calls meet.
    distinct: () => {
      const k = next++;
      const date = Math.floor(k / fans);
      if (date >= dates - 1) throw new Error("the distinct-seat case ran out of seats; raise dates or fans");
      return reservations.holdSeats({ scheduleId: schedules[date]!.id, seatNumbers: [(k % fans) + 1] }, { headers: headers[k % fans]! });
    },
    contested: () =>
      reservations
        .holdSeats({ scheduleId: contestedDate, seatNumbers: [1] }, { headers: headers[next++ % fans]! })
        .catch((error: unknown) => {
          if (ConnectError.from(error).code !== Code.FailedPrecondition) throw error;
        }),
  };
}
