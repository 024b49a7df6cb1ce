import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import {
  ConcertAdminService as ConcertAdminServiceDesc,
  ConcertInternalService as ConcertInternalServiceDesc,
  type GetConcertSupplyRequest,
  ConcertService as ConcertServiceDesc,
  SeatState,
  type CreateConcertRequest,
  type ListSchedulesRequest,
  type ListSeatsRequest,
} from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { entityManager } from "../platform/database.js";
import { admission } from "../platform/access.js";
import { Forbidden, NotFound, Reason } from "../platform/errors.js";
import { check } from "../platform/validate.js";
import { Concert, Schedule, Seat } from "./concert.entity.js";
import { seatStateNow } from "./holds.js";
import { SeatMaps } from "./seat-maps.js";
import { audit } from "../platform/log.js";

export const defaultSeatCount = 50;
const seatStates = { AVAILABLE: SeatState.AVAILABLE, HELD: SeatState.HELD, SOLD: SeatState.SOLD } as const;

export interface ScheduleDraft {
  startsAt: Date;
  seatCount: number;
  price: number;
}

export interface ConcertDraft {
  title: string;
  venue: string;
  schedules: ScheduleDraft[];
}

function scheduleMessage(schedule: { id: string; startsAt: Date; seatCount: number; concert: { id: string } }, available: number) {
  return {
    id: schedule.id,
    concertId: schedule.concert.id,
    startsAt: timestampFromDate(schedule.startsAt),
    availableSeats: available,
    totalSeats: schedule.seatCount,
  };
}

/** Puts a concert on sale: the concert, its dates and every seat, in one transaction. */
export async function createConcert(em: EntityManager, draft: ConcertDraft) {
  return em.transactional(async (tx) => {
    const concert = tx.create(Concert, { id: randomUUID(), title: draft.title, venue: draft.venue });
    const schedules = draft.schedules.map((spec) =>
      tx.create(Schedule, { id: randomUUID(), concert, startsAt: spec.startsAt, seatCount: spec.seatCount }),
    );
    await tx.flush();
    const seats = draft.schedules.flatMap((spec, i) =>
      Array.from({ length: spec.seatCount }, (_, n) => ({ scheduleId: schedules[i]!.id, number: n + 1, price: spec.price, state: "AVAILABLE" as const })),
    );
    await tx.insertMany(Seat, seats);
    return { concert, schedules };
  });
}

export class ConcertService implements ServiceImpl<typeof ConcertServiceDesc> {
  constructor(private readonly maps: SeatMaps) {}

  async listConcerts(_req: unknown, ctx: HandlerContext) {
    const concerts = await entityManager(ctx).find(Concert, {}, { orderBy: { createdAt: "asc", id: "asc" } });
    return { concerts: concerts.map(({ id, title, venue }) => ({ id, title, venue })) };
  }

  async listSchedules(req: ListSchedulesRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const em = entityManager(ctx);
    // One round trip: the dates with their free seats counted (a concert always has at least one date).
    const rows = await em.getConnection().execute<{ id: string; starts_at: string | Date; seat_count: number; available: string }[]>(
      `select schedule.id, schedule.starts_at, schedule.seat_count,
              (select count(*) from "concert"."seat" seat where seat.schedule_id = schedule.id and ${seatStateNow} = 'AVAILABLE') as available
         from "concert"."schedule" schedule where schedule.concert_id = ? order by schedule.starts_at, schedule.id`,
      [concertId],
    );
    if (rows.length === 0) throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
    return {
      schedules: rows.map((row) =>
        scheduleMessage({ id: row.id, startsAt: new Date(row.starts_at), seatCount: row.seat_count, concert: { id: concertId } }, Number(row.available)),
      ),
    };
  }

  async listSeats(req: ListSeatsRequest, ctx: HandlerContext) {
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const map = await this.maps.get(entityManager(ctx), scheduleId);
    if (!map) throw new NotFound(Reason.SCHEDULE_NOT_FOUND, `no concert date with id ${scheduleId}`);
    if (map.concertId !== admission(ctx).concertId) {
      throw new Forbidden(Reason.NOT_ADMITTED, "the queue token admits you to another concert");
    }
    const seats = SeatMaps.listing(map, Date.now(), (seat, state) => ({ number: seat.number, price: BigInt(seat.price), state: seatStates[state] }));
    return { seats };
  }
}

/** Answers other boxoffice services (the queue's supply-aware admission). */
export class ConcertInternalService implements ServiceImpl<typeof ConcertInternalServiceDesc> {
  async getConcertSupply(req: GetConcertSupplyRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const em = entityManager(ctx);
    const rows: { state: string; seats: string }[] = await em
      .getConnection()
      .execute(
        `select ${seatStateNow} as state, count(*) as seats from "concert"."seat" seat join "concert"."schedule" schedule on schedule.id = seat.schedule_id where schedule.concert_id = ? group by 1`,
        [concertId],
      );
    if (rows.length === 0 && !(await em.findOne(Concert, { id: concertId }))) {
      throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
    }
    const count = (state: string) => Number(rows.find((row) => row.state === state)?.seats ?? 0);
    const [available, held, sold] = [count("AVAILABLE"), count("HELD"), count("SOLD")];
    return { total: available + held + sold, available, held, sold };
  }
}

export class ConcertAdminService implements ServiceImpl<typeof ConcertAdminServiceDesc> {
  async createConcert(req: CreateConcertRequest, ctx: HandlerContext) {
    const draft: ConcertDraft = {
      title: check.text(req.title, "title", { max: 200 }),
      venue: check.text(req.venue, "venue", { min: 0, max: 200 }),
      schedules: check.count(req.schedules, "schedules", 1, 100).map((spec, i) => ({
        startsAt: check.time(spec.startsAt, `schedules[${i}].starts_at`),
        seatCount: spec.seatCount === 0 ? defaultSeatCount : check.integer(spec.seatCount, `schedules[${i}].seat_count`, 1, 1000),
        price: check.integer(spec.price, `schedules[${i}].price`, 1, 10_000_000),
      })),
    };
    const { concert, schedules } = await createConcert(entityManager(ctx), draft);
    audit(ctx, { subject: `concert ${concert.id}`, after: { title: concert.title, venue: concert.venue, schedules: schedules.map((s) => s.id) } });
    return {
      concert: { id: concert.id, title: concert.title, venue: concert.venue },
      schedules: schedules.map((s, i) => scheduleMessage(s, draft.schedules[i]!.seatCount)),
    };
  }
  /** Every concert's seats by state (expired holds count as available, as fans see them), in one query. */
  async listSeatCounts(_req: unknown, ctx: HandlerContext) {
    const rows = await entityManager(ctx).getConnection().execute<{ id: string; available: string; held: string; sold: string }[]>(
      `select concert.id,
              count(*) filter (where ${seatStateNow} = 'AVAILABLE') as available,
              count(*) filter (where ${seatStateNow} = 'HELD') as held,
              count(*) filter (where ${seatStateNow} = 'SOLD') as sold
         from "concert"."concert" concert
         join "concert"."schedule" schedule on schedule.concert_id = concert.id
         join "concert"."seat" seat on seat.schedule_id = schedule.id
        group by concert.id, concert.created_at
        order by concert.created_at, concert.id`,
    );
    return {
      concerts: rows.map((row) => {
        const [available, held, sold] = [Number(row.available), Number(row.held), Number(row.sold)];
        return { concertId: row.id, total: available + held + sold, available, held, sold };
      }),
    };
  }
}

