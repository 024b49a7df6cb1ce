import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ConcertAdminService as ConcertAdminServiceDesc,
  ConcertInternalService as ConcertInternalServiceDesc,
  ConcertPhase,
  ConcertService as ConcertServiceDesc,
  SeatState,
  type CancelConcertRequest,
  type CancelScheduleRequest,
  type ConcertSchema,
  type CreateConcertRequest,
  type GetConcertSupplyRequest,
  type GetSaleRequest,
  type ListSchedulesRequest,
  type ListSeatsRequest,
  type PublishConcertRequest,
  type SeatPlan,
  type RelistConcertRequest,
  type UnlistConcertRequest,
  type UpdateConcertRequest,
} from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { admission } from "../platform/access.js";
import { entityManager } from "../platform/database.js";
import { Forbidden, InvalidInput, NotFound, Reason } from "../platform/errors.js";
import { audit } from "../platform/log.js";
import { check } from "../platform/validate.js";
import type { Cancellations } from "./cancellations.js";
import {
  concertNow,
  concertsWhere,
  createConcert,
  defaultSeatCount,
  defaultSeatLimit,
  listConcert,
  publishConcert,
  saleSecretOf,
  schedulesOf,
  supplyOf,
  updateConcert,
  type ConcertView,
  type ScheduleRow,
  type SeatPlanDraft,
} from "./catalog.js";
import { seatStateNow } from "./holds.js";
import { cataloguedPhases, saleEndsAt } from "./sale.js";
import { SeatMaps } from "./seat-maps.js";

export { createConcert, defaultSeatCount, type ConcertDraft, type ScheduleDraft } from "./catalog.js";

const seatStates = { AVAILABLE: SeatState.AVAILABLE, HELD: SeatState.HELD, SOLD: SeatState.SOLD } as const;

function scheduleMessage(concertId: string, schedule: ScheduleRow) {
  return {
    id: schedule.id,
    concertId,
    startsAt: timestampFromDate(schedule.startsAt),
    availableSeats: schedule.available,
    totalSeats: schedule.seatCount,
    cancelled: schedule.cancelled,
    cancelReason: schedule.cancelReason,
  };
}

function concertMessage(concert: ConcertView): MessageInitShape<typeof ConcertSchema> {
  const { sale } = concert;
  return {
    id: concert.id,
    title: concert.title,
    venue: concert.venue,
    phase: concert.phase,
    prequeueOpensAt: timestampFromDate(sale.prequeueOpensAt),
    saleOpensAt: timestampFromDate(sale.saleOpensAt),
    saleClosesAt: sale.saleClosesAt === null ? undefined : timestampFromDate(sale.saleClosesAt),
    minPrice: BigInt(concert.minPrice),
    maxPrice: BigInt(concert.maxPrice),
    firstStartsAt: timestampFromDate(sale.firstStartsAt),
    lastStartsAt: timestampFromDate(sale.lastStartsAt),
    seatLimit: concert.seatLimit,
    seedCommitment: concert.seedCommitment,
    listed: concert.listed,
    cancelCutoff: { seconds: BigInt(concert.cancelCutoffSeconds) },
  };
}

/** What an operator's change is audited as: the concert's settings and sale (never its seed). */
const audited = ({ title, venue, listed, seatLimit, cancelCutoffSeconds, cancelReason, sale }: ConcertView) => ({
  title,
  venue,
  listed,
  seatLimit,
  cancelCutoffSeconds,
  cancelReason,
  ...sale,
});

const onSale = (concert: ConcertView) => concert.phase === ConcertPhase.ON_SALE || concert.phase === ConcertPhase.SOLD_OUT;

/** The catalog's order: on sale (or sold out) first, by their first date; then the coming ones, the soonest sale first; then id. */
function catalogOrder(a: ConcertView, b: ConcertView): number {
  if (onSale(a) !== onSale(b)) return onSale(a) ? -1 : 1;
  const key = (c: ConcertView) => (onSale(c) ? c.sale.firstStartsAt : c.sale.saleOpensAt).getTime();
  return key(a) - key(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

const optionalTime = (value: Timestamp | undefined, field: string) => (value === undefined ? undefined : check.time(value, field));

const maxSeatsPerDate = 1000;
const name = (value: string, field: string) => check.text(value, field, { max: 50 });
const unique = (names: string[], field: string, what: string) => {
  const seen = new Set<string>();
  names.forEach((n, i) => {
    if (seen.has(n)) throw new InvalidInput(`${field}[${i}]`, `repeats the ${what} "${n}"`);
    seen.add(n);
  });
};

/** A date's seat plan as the operator gave it, checked; every error names the field's path under `field`. */
function checkPlan(plan: SeatPlan, field: string): SeatPlanDraft {
  const tiers = check.count(plan.tiers, `${field}.tiers`, 1, 20).map((tier, i) => ({
    name: name(tier.name, `${field}.tiers[${i}].name`),
    price: check.integer(tier.price, `${field}.tiers[${i}].price`, 1, 10_000_000),
  }));
  const tierNames = new Set(tiers.map((t) => t.name));
  if (tierNames.size !== tiers.length) unique(tiers.map((t) => t.name), `${field}.tiers`, "tier");
  let seatCount = 0;
  const sections = check.count(plan.sections, `${field}.sections`, 1, 50).map((section, i) => {
    const at = `${field}.sections[${i}]`;
    const rows = check.count(section.rows, `${at}.rows`, 1, 100).map((row, r) => {
      const rowAt = `${at}.rows[${r}]`;
      const tier = row.tier.trim();
      if (!tierNames.has(tier)) throw new InvalidInput(`${rowAt}.tier`, `must be one of the plan's tiers${tier === "" ? "" : `; there is no tier "${tier}"`}`);
      const seats = check.count(row.seats, `${rowAt}.seats`, 1, maxSeatsPerDate).map((label, s) => name(label, `${rowAt}.seats[${s}]`));
      unique(seats, `${rowAt}.seats`, "seat label");
      seatCount += seats.length;
      if (seatCount > maxSeatsPerDate) throw new InvalidInput(`${rowAt}.seats`, `the plan has more than ${maxSeatsPerDate} seats`);
      return { label: name(row.label, `${rowAt}.label`), tier, seats };
    });
    unique(rows.map((row) => row.label), `${at}.rows`, "row label");
    return { name: name(section.name, `${at}.name`), rows };
  });
  unique(sections.map((section) => section.name), `${field}.sections`, "section");
  return { sections, tiers };
}

const maxCancelCutoffSeconds = 365 * 24 * 3600;
/** A cancellation cutoff in whole seconds, 0..365 days; undefined when unset. */
function optionalCutoff(value: Duration | undefined, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (value.nanos !== 0) throw new InvalidInput(field, "must be whole seconds");
  return check.integer(Number(value.seconds), field, 0, maxCancelCutoffSeconds);
}

export class ConcertService implements ServiceImpl<typeof ConcertServiceDesc> {
  constructor(private readonly maps: SeatMaps) {}

  /** The listed, published concerts on sale or coming, in one query (the phase is worked out from each row). */
  async listConcerts(_req: unknown, ctx: HandlerContext) {
    // Past and closed concerts are left out in the query already (the phase decides the rest): the catalog does not grow with history.
    const concerts = await concertsWhere(
      entityManager(ctx),
      `concert.status = 'PUBLISHED' and concert.listed and (concert.sale_closes_at is null or concert.sale_closes_at > now())
         and exists (select 1 from "concert"."schedule" coming where coming.concert_id = concert.id and coming.starts_at > now())`,
      [],
    );
    return { concerts: concerts.filter((c) => cataloguedPhases.has(c.phase)).sort(catalogOrder).map(concertMessage) };
  }

  async listSchedules(req: ListSchedulesRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    // A concert always has at least one date.
    const schedules = await schedulesOf(entityManager(ctx), concertId);
    if (schedules.length === 0) throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
    return { schedules: schedules.map((s) => scheduleMessage(concertId, s)) };
  }

  async listSeats(req: ListSeatsRequest, ctx: HandlerContext) {
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const map = await this.maps.get(entityManager(ctx), scheduleId);
    if (!map) throw new NotFound(Reason.SCHEDULE_NOT_FOUND, `no concert date with id ${scheduleId}`);
    if (map.concertId !== admission(ctx).concertId) {
      throw new Forbidden(Reason.NOT_ADMITTED, "the queue token admits you to another concert");
    }
    const seats = SeatMaps.listing(map, Date.now(), (seat, state) => ({
      number: seat.number,
      price: BigInt(seat.price),
      state: seatStates[state],
      section: seat.section,
      row: seat.rowLabel,
      label: seat.label,
      tier: seat.tier,
      place: seat.place,
      rowPosition: seat.rowPosition,
    }));
    return { seats };
  }
}

/** Answers other boxoffice services (the queue's supply-aware admission and its pre-queue draw). */
export class ConcertInternalService implements ServiceImpl<typeof ConcertInternalServiceDesc> {
  async getConcertSupply(req: GetConcertSupplyRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const supply = await supplyOf(entityManager(ctx), concertId);
    if (!supply) throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
    const { sale, cancelReason, ...counts } = supply;
    return {
      ...counts,
      prequeueOpensAt: timestampFromDate(sale.prequeueOpensAt),
      saleOpensAt: timestampFromDate(sale.saleOpensAt),
      saleEndsAt: timestampFromDate(saleEndsAt(sale)),
      cancelReason: cancelReason ?? "",
    };
  }

  async getSale(req: GetSaleRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    const sale = await saleSecretOf(entityManager(ctx), concertId);
    if (!sale) throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
    return { saleOpensAt: timestampFromDate(sale.saleOpensAt), seedCommitment: sale.seedCommitment, seed: sale.seed };
  }
}

export class ConcertAdminService implements ServiceImpl<typeof ConcertAdminServiceDesc> {
  constructor(private readonly cancellations: Cancellations) {}

  async createConcert(req: CreateConcertRequest, ctx: HandlerContext) {
    let requestId: string | undefined;
    if (req.requestId !== "") {
      requestId = check.idempotencyKey(req.requestId, "request_id");
      if (requestId.length > 100) throw new InvalidInput("request_id", "must be at most 100 characters");
    }
    const em = entityManager(ctx);
    const created = await createConcert(em, {
      title: check.text(req.title, "title", { max: 200 }),
      venue: check.text(req.venue, "venue", { min: 0, max: 200 }),
      schedules: check.count(req.schedules, "schedules", 1, 100).map((spec, i) => {
        const startsAt = check.time(spec.startsAt, `schedules[${i}].starts_at`);
        if (spec.plan) {
          // The plan's seats and prices; seat_count and price are ignored.
          const plan = checkPlan(spec.plan, `schedules[${i}].plan`);
          return { startsAt, plan, seatCount: plan.sections.reduce((n, s) => n + s.rows.reduce((m, r) => m + r.seats.length, 0), 0), price: 0 };
        }
        return {
          startsAt,
          seatCount: spec.seatCount === 0 ? defaultSeatCount : check.integer(spec.seatCount, `schedules[${i}].seat_count`, 1, maxSeatsPerDate),
          price: check.integer(spec.price, `schedules[${i}].price`, 1, 10_000_000),
        };
      }),
      prequeueOpensAt: optionalTime(req.prequeueOpensAt, "prequeue_opens_at"),
      saleOpensAt: optionalTime(req.saleOpensAt, "sale_opens_at"),
      saleClosesAt: optionalTime(req.saleClosesAt, "sale_closes_at"),
      seatLimit: req.seatLimit === 0 ? defaultSeatLimit : check.integer(req.seatLimit, "seat_limit", 1, 100),
      cancelCutoffSeconds: optionalCutoff(req.cancelCutoff, "cancel_cutoff"),
      draft: req.draft,
      requestId,
    });
    const [concert, dates] = await Promise.all([concertNow(em, created.concert.id), schedulesOf(em, created.concert.id)]);
    if (!created.replayed) audit(ctx, { subject: `concert ${concert.id}`, after: { ...audited(concert), schedules: created.schedules.map((s) => s.id) } });
    const byId = new Map(dates.map((date) => [date.id, date]));
    return { concert: concertMessage(concert), schedules: created.schedules.map(({ id }) => scheduleMessage(concert.id, byId.get(id)!)) };
  }

  async updateConcert(req: UpdateConcertRequest, ctx: HandlerContext) {
    const concertId = check.id(req.concertId, "concert_id");
    if (req.clearSaleClosesAt && req.saleClosesAt) throw new InvalidInput("clear_sale_closes_at", "must not be set with sale_closes_at");
    const { before, after } = await updateConcert(entityManager(ctx), concertId, {
      title: req.title === undefined ? undefined : check.text(req.title, "title", { max: 200 }),
      venue: req.venue === undefined ? undefined : check.text(req.venue, "venue", { min: 0, max: 200 }),
      prequeueOpensAt: optionalTime(req.prequeueOpensAt, "prequeue_opens_at"),
      saleOpensAt: optionalTime(req.saleOpensAt, "sale_opens_at"),
      saleClosesAt: req.clearSaleClosesAt ? null : optionalTime(req.saleClosesAt, "sale_closes_at"),
      seatLimit: req.seatLimit === undefined ? undefined : check.integer(req.seatLimit, "seat_limit", 1, 100),
      cancelCutoffSeconds: optionalCutoff(req.cancelCutoff, "cancel_cutoff"),
    });
    audit(ctx, { subject: `concert ${concertId}`, before: audited(before), after: audited(after) });
    return { concert: concertMessage(after) };
  }

  publishConcert(req: PublishConcertRequest, ctx: HandlerContext) {
    return this.#change(ctx, req.concertId, (em, id) => publishConcert(em, id));
  }

  unlistConcert(req: UnlistConcertRequest, ctx: HandlerContext) {
    return this.#change(ctx, req.concertId, (em, id) => listConcert(em, id, false));
  }

  relistConcert(req: RelistConcertRequest, ctx: HandlerContext) {
    return this.#change(ctx, req.concertId, (em, id) => listConcert(em, id, true));
  }

  cancelConcert(req: CancelConcertRequest, ctx: HandlerContext) {
    const reason = check.text(req.reason, "reason", { min: 0, max: 500 });
    return this.#change(ctx, req.concertId, (em, id) => this.cancellations.cancelConcert(em, id, reason));
  }

  async cancelSchedule(req: CancelScheduleRequest, ctx: HandlerContext) {
    const scheduleId = check.id(req.scheduleId, "schedule_id");
    const reason = check.text(req.reason, "reason", { min: 0, max: 500 });
    const em = entityManager(ctx);
    const { changed, cancelledBookings, concertId } = await this.cancellations.cancelSchedule(em, scheduleId, reason);
    const schedule = (await schedulesOf(em, concertId)).find((date) => date.id === scheduleId)!;
    if (changed) {
      audit(ctx, { subject: `schedule ${scheduleId}`, after: { cancelled: true, cancelReason: schedule.cancelReason, cancelledBookings } });
    }
    return { schedule: scheduleMessage(concertId, schedule), cancelledBookings };
  }

  /** A change that is idempotent: audited when it changed something, answered with the concert now either way. */
  async #change(ctx: HandlerContext, id: string, change: (em: ReturnType<typeof entityManager>, concertId: string) => Promise<{ changed: boolean; after: ConcertView }>) {
    const concertId = check.id(id, "concert_id");
    const { changed, after } = await change(entityManager(ctx), concertId);
    if (changed) audit(ctx, { subject: `concert ${concertId}`, after: audited(after) });
    return { concert: concertMessage(after) };
  }

  /** Every concert in any phase, newest first, in one query. */
  async listAllConcerts(_req: unknown, ctx: HandlerContext) {
    const concerts = await concertsWhere(entityManager(ctx), "true", []);
    return { concerts: concerts.map(concertMessage) };
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
