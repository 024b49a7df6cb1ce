import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { ConcertAdminService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueService, QueueState } from "../../gen/boxoffice/queue/v1/queue_pb.js";

export interface BenchConcert {
  concertId: string;
  scheduleIds: string[];
}

/** Puts a concert on sale (dates × seats at 1,000 points) with room for `maxActive` admitted fans at once. */
export async function openConcert(
  transport: Transport,
  operatorKey: string,
  concert: { title: string; dates: number; seatsPerDate: number; maxActive: number },
): Promise<BenchConcert> {
  const operator = { headers: { authorization: `Bearer ${operatorKey}` } };
  const startsAt = timestampFromDate(new Date(Date.now() + 30 * 86_400_000));
  const created = await createClient(ConcertAdminService, transport).createConcert(
    // The bench's fans hold a seat on many dates: the per-fan limit at its most (the check still runs on every hold).
    { title: concert.title, schedules: Array.from({ length: concert.dates }, () => ({ startsAt, seatCount: concert.seatsPerDate, price: 1_000n })), seatLimit: 100 },
    operator,
  );
  const concertId = created.concert!.id;
  await createClient(QueueAdminService, transport).setAdmissionPolicy({ concertId, policy: { maxActive: concert.maxActive } }, operator);
  return { concertId, scheduleIds: created.schedules.map((s) => s.id) };
}

/** Each fan enters the concert's queue, 500 at a time; each fan's headers for gated calls (user token and queue token), in order. */
export async function enterFans(transport: Transport, concertId: string, fanTokens: string[]): Promise<Record<string, string>[]> {
  const queue = createClient(QueueService, transport);
  const headers: Record<string, string>[] = [];
  for (let start = 0; start < fanTokens.length; start += 500) {
    const batch = fanTokens.slice(start, start + 500).map(async (token) => {
      const { queueToken } = await queue.enterQueue({ concertId }, { headers: { authorization: `Bearer ${token}` } });
      return { authorization: `Bearer ${token}`, "x-queue-token": queueToken };
    });
    headers.push(...(await Promise.all(batch)));
  }
  return headers;
}

/** Each fan enters the concert's queue; resolves, once all are admitted, to each fan's headers for gated calls. */
export async function admitFans(transport: Transport, concertId: string, fanTokens: string[]): Promise<Record<string, string>[]> {
  const headers = await enterFans(transport, concertId, fanTokens);
  const queue = createClient(QueueService, transport);
  // The last to enter is admitted last.
  while ((await queue.getQueueStatus({}, { headers: headers.at(-1)! })).status!.state !== QueueState.ADMITTED) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return headers;
}
