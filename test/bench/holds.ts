/**
 * HoldSeats under load: holds on distinct seats (each fan takes its own seat,
 * date after date) and holds all aimed at one contested seat (one wins, every
 * other call is refused with SEAT_UNAVAILABLE).
 */
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { ReservationService } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { Exhausted } from "./measure.js";
import { admitFans, openConcert } from "./setup.js";

const fans = 300;
const dates = 60;

export interface HoldCases {
  distinct: () => Promise<unknown>;
  contested: () => Promise<unknown>;
}

/** Puts a concert of 60 dates × 300 seats on sale and admits 300 fans to it; returns the two calls to measure. */
export async function holdCases(transport: Transport, operatorKey: string, fanTokens: string[]): Promise<HoldCases> {
  const { concertId, scheduleIds } = await openConcert(transport, operatorKey, { title: "Bench holds", dates, seatsPerDate: fans, maxActive: fans * 2 });
  const headers = await admitFans(transport, concertId, fanTokens.slice(0, fans));
  const reservations = createClient(ReservationService, transport);
  let next = 0;
  const contestedDate = scheduleIds.at(-1)!;
  return {
    // Call k: fan k mod 300 holds its own seat on date k div 300, so no two calls meet.
    distinct: () => {
      const k = next++;
      const date = Math.floor(k / fans);
      if (date >= dates - 1) throw new Exhausted();
      return reservations.holdSeats({ scheduleId: scheduleIds[date]!, seatNumbers: [(k % fans) + 1] }, { headers: headers[k % fans]! });
    },
    contested: () =>
      reservations
        .holdSeats({ scheduleId: contestedDate, seatNumbers: [1] }, { headers: headers[next++ % fans]! })
        .catch((error: unknown) => {
          if (ConnectError.from(error).code !== Code.FailedPrecondition) throw error;
        }),
  };
}
