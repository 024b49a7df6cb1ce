import type { EntityManager } from "@mikro-orm/postgresql";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { ConcertPhase } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { InvalidInput, NotFound, Reason, Refused } from "../platform/errors.js";
import { seatStateNow } from "./holds.js";
import { beforeSale, checkSaleTimes, phaseOf, saleColumns, saleOf, type Sale, type SaleRow, type SaleTimes } from "./sale.js";

/**
 * The catalog's store: concerts, their dates and seats as operators create and
 * change them and as fans and the queue read them. Each change is one statement
 * or one short transaction; the sale's rules are in sale.ts.
 */

export const defaultSeatCount = 50;
export const defaultSeatLimit = 4;
/** Fans may cancel a paid booking until a day before its date starts, unless the concert says otherwise. */
export const defaultCancelCutoffSeconds = 24 * 3600;

export interface ScheduleDraft {
  startsAt: Date;
  /** With a plan: the plan's seats. */
  seatCount: number;
  /** Without a plan: every seat's. */
  price: number;
  /** Unset: seatCount numbered seats at one price, in one unnamed section, row and tier. */
  plan?: SeatPlanDraft;
}

/** A date's seat plan, checked (concert-service.ts): every row's tier is one of the tiers. */
export interface SeatPlanDraft {
  sections: { name: string; rows: { label: string; tier: string; seats: string[] }[] }[];
  tiers: { name: string; price: number }[];
}

/** A seat as a plan lays it out; numbered 1..N in plan order (sections, rows, seats). */
export interface PlannedSeat {
  number: number;
  section: string;
  row_label: string;
  row_position: number;
  label: string;
  place: number;
  tier: string;
  price: number;
}

export function seatsOfPlan(plan: SeatPlanDraft): PlannedSeat[] {
  const prices = new Map(plan.tiers.map((tier) => [tier.name, tier.price]));
  const seats: PlannedSeat[] = [];
  for (const section of plan.sections) {
    section.rows.forEach((row, r) => {
      row.seats.forEach((label, s) => {
        seats.push({ number: seats.length + 1, section: section.name, row_label: row.label, row_position: r + 1, label, place: s + 1, tier: row.tier, price: prices.get(row.tier)! });
      });
    });
  }
  return seats;
}

/** The prices a date's seats are sold at. */
const pricesOf = (spec: ScheduleDraft) => (spec.plan ? [...new Set(seatsOfPlan(spec.plan).map((seat) => seat.price))] : [spec.price]);

export interface ConcertDraft {
  title: string;
  venue: string;
  schedules: ScheduleDraft[];
  /** Unset: when the sale opens (no pre-queue). */
  prequeueOpensAt?: Date;
  /** Unset: at once, by the database's clock. */
  saleOpensAt?: Date;
  /** Unset: when the last date starts. */
  saleClosesAt?: Date;
  seatLimit?: number;
  /** Unset: defaultCancelCutoffSeconds. */
  cancelCutoffSeconds?: number;
  /** Created as a draft, to be published later. */
  draft?: boolean;
  /** Makes the create idempotent: the same draft with it again answers the concert it created. */
  requestId?: string;
}

export interface CreatedConcert {
  concert: { id: string };
  /** The dates, in the order of the draft's schedules. */
  schedules: { id: string }[];
  /** Created by an earlier call with the same request id. */
  replayed: boolean;
}

/** A concert as it is now, with its phase by the database's clock. */
export interface ConcertView {
  id: string;
  title: string;
  venue: string;
  listed: boolean;
  seatLimit: number;
  cancelCutoffSeconds: number;
  seedCommitment: string;
  minPrice: number;
  maxPrice: number;
  cancelReason: string | null;
  sale: Sale;
  phase: ConcertPhase;
  /** The database's clock when it was read. */
  now: Date;
}

interface ConcertRow extends SaleRow {
  id: string;
  title: string;
  venue: string;
  listed: boolean;
  seat_limit: number;
  cancel_cutoff_seconds: number;
  seed_commitment: string;
  min_price: string | number;
  max_price: string | number;
  cancel_reason: string | null;
  sold_out: boolean;
}

const concertColumns = `concert.id, concert.title, concert.venue, concert.listed, concert.seat_limit, concert.cancel_cutoff_seconds, concert.seed_commitment,
  concert.min_price, concert.max_price, concert.cancel_reason, ${saleColumns}`;
/** Every seat of the dates still to come is SOLD (true too when none is to come: the phase is PAST then). */
const soldOut = `not exists (select 1 from "concert"."schedule" coming join "concert"."seat" seat on seat.schedule_id = coming.id
  where coming.concert_id = concert.id and coming.starts_at > now() and coming.cancelled_at is null and seat.state <> 'SOLD') as sold_out`;

function view(row: ConcertRow): ConcertView {
  const sale = saleOf(row);
  const now = new Date(row.now);
  return {
    id: row.id,
    title: row.title,
    venue: row.venue,
    listed: row.listed,
    seatLimit: row.seat_limit,
    cancelCutoffSeconds: row.cancel_cutoff_seconds,
    seedCommitment: row.seed_commitment,
    minPrice: Number(row.min_price),
    maxPrice: Number(row.max_price),
    cancelReason: row.cancel_reason,
    sale,
    phase: phaseOf(sale, now, row.sold_out),
    now,
  };
}

/** The concerts matching `where` (SQL over `concert`), in one query. */
export async function concertsWhere(em: EntityManager, where: string, params: unknown[], order = "concert.created_at desc, concert.id desc", lock = ""): Promise<ConcertView[]> {
  const rows = await em.execute<ConcertRow[]>(`select ${concertColumns}, ${soldOut} from "concert"."concert" concert where ${where} order by ${order} ${lock}`, params);
  return rows.map(view);
}

/** One concert as it is now; NotFound when there is none. */
export async function concertNow(em: EntityManager, concertId: string, lock = ""): Promise<ConcertView> {
  const [concert] = await concertsWhere(em, "concert.id = ?", [concertId], "concert.id", lock);
  if (!concert) throw new NotFound(Reason.CONCERT_NOT_FOUND, `no concert with id ${concertId}`);
  return concert;
}

/** The SHA-256 (hex) of a canonical form of the draft as the operator gave it: unset times stay unset. */
function requestHash(draft: ConcertDraft): string {
  const time = (date: Date | undefined) => date?.toISOString() ?? null;
  const canonical = [
    draft.title,
    draft.venue,
    // A plan is appended only when given, so that a draft without one hashes as it did.
    draft.schedules.map((spec) => [time(spec.startsAt), spec.seatCount, spec.price, ...(spec.plan ? [spec.plan] : [])]),
    time(draft.prequeueOpensAt),
    time(draft.saleOpensAt),
    time(draft.saleClosesAt),
    draft.seatLimit ?? defaultSeatLimit,
    draft.draft ?? false,
    // Appended only when given, so that a draft from before the cutoff existed hashes as it did.
    ...(draft.cancelCutoffSeconds === undefined ? [] : [draft.cancelCutoffSeconds]),
  ];
  return createHash("sha256").update(JSON.stringify(canonical)).digest("hex");
}

/**
 * Creates a concert, its dates and every seat in one statement. With a request
 * id, the concert that id created is answered instead when the draft is the same
 * (also to a call running at the same time: the unique index makes it wait for
 * the first and then find it), and refused when it is not. Dates that have
 * started and sale times that do not fit the dates are refused, naming the field.
 */
export async function createConcert(em: EntityManager, draft: ConcertDraft, now = new Date()): Promise<CreatedConcert> {
  const hash = draft.requestId === undefined ? null : requestHash(draft);
  const earlier = await createdBefore(em, draft, hash);
  if (earlier) return earlier;
  draft.schedules.forEach((spec, i) => {
    if (spec.startsAt <= now) throw new InvalidInput(`schedules[${i}].starts_at`, "must be in the future");
  });
  const starts = draft.schedules.map((spec) => spec.startsAt.getTime());
  const saleOpensAt = draft.saleOpensAt ?? now;
  checkSaleTimes({ prequeueOpensAt: draft.prequeueOpensAt ?? saleOpensAt, saleOpensAt, saleClosesAt: draft.saleClosesAt ?? null }, new Date(Math.min(...starts)), new Date(Math.max(...starts)));
  const seed = randomBytes(32);
  const prices = draft.schedules.flatMap(pricesOf);
  const schedules = draft.schedules.map((spec) => ({
    id: randomUUID(),
    starts_at: spec.startsAt.toISOString(),
    seat_count: spec.plan ? seatsOfPlan(spec.plan).length : spec.seatCount,
    price: spec.price,
    planned: spec.plan !== undefined,
  }));
  // The seats of the dates with a plan, laid out here; the others' are numbered in the statement.
  const planned = draft.schedules.flatMap((spec, i) => (spec.plan ? seatsOfPlan(spec.plan).map((seat) => ({ schedule_id: schedules[i]!.id, ...seat })) : []));
  // Unset sale times are the database's now(), the clock every hold is decided by, so a concert on sale at once is so for the first hold.
  const [row] = await em.execute<{ id: string }[]>(
    `with opening as (select coalesce(?::timestamptz, now()) as sale_opens_at),
     concert as (
       insert into "concert"."concert" (id, title, venue, created_at, status, listed, prequeue_opens_at, sale_opens_at, sale_closes_at, seat_limit,
                                        cancel_cutoff_seconds, seed, seed_commitment, min_price, max_price, request_id, request_hash)
       select ?, ?, ?, ?, ?, true, least(coalesce(?::timestamptz, opening.sale_opens_at), opening.sale_opens_at), opening.sale_opens_at, ?::timestamptz, ?,
              ?, ?, ?, ?, ?, ?, ?
         from opening
       on conflict (request_id) do nothing
       returning id),
     spec as (select * from jsonb_to_recordset(?::jsonb) as spec(id uuid, starts_at timestamptz, seat_count int, price bigint, planned boolean)),
     plan as (select * from jsonb_to_recordset(?::jsonb)
                as plan(schedule_id uuid, number int, section text, row_label text, row_position int, label text, place int, tier text, price bigint)),
     dates as (
       insert into "concert"."schedule" (id, concert_id, starts_at, seat_count) select spec.id, concert.id, spec.starts_at, spec.seat_count from concert, spec),
     seats as (
       insert into "concert"."seat" (schedule_id, number, price, state, section, row_label, row_position, label, place, tier)
       select spec.id, number, spec.price, 'AVAILABLE', '', '', 1, number::text, number, ''
         from concert, spec, generate_series(1, spec.seat_count) number where not spec.planned
       union all
       select plan.schedule_id, plan.number, plan.price, 'AVAILABLE', plan.section, plan.row_label, plan.row_position, plan.label, plan.place, plan.tier
         from concert, plan)
     select id from concert`,
    [
      draft.saleOpensAt ?? null,
      randomUUID(),
      draft.title,
      draft.venue,
      now,
      draft.draft ? "DRAFT" : "PUBLISHED",
      draft.prequeueOpensAt ?? null,
      draft.saleClosesAt ?? null,
      draft.seatLimit ?? defaultSeatLimit,
      draft.cancelCutoffSeconds ?? defaultCancelCutoffSeconds,
      seed.toString("hex"),
      createHash("sha256").update(seed).digest("hex"),
      Math.min(...prices),
      Math.max(...prices),
      draft.requestId ?? null,
      hash,
      JSON.stringify(schedules),
      JSON.stringify(planned),
    ],
  );
  if (row) return { concert: { id: row.id }, schedules: schedules.map(({ id }) => ({ id })), replayed: false };
  // A create with the same request id committed while this one waited on the unique index.
  const winner = await createdBefore(em, draft, hash);
  if (!winner) throw new Error(`request_id ${draft.requestId} conflicted, yet no concert has it`);
  return winner;
}

/** The concert the draft's request id created, when it was this draft; refused when it was another; undefined when none. */
async function createdBefore(em: EntityManager, draft: ConcertDraft, hash: string | null): Promise<CreatedConcert | undefined> {
  if (draft.requestId === undefined) return undefined;
  const rows = await em.execute<{ id: string; request_hash: string; schedule_id: string; starts_at: string | Date; seat_count: number }[]>(
    `select concert.id, concert.request_hash, schedule.id as schedule_id, schedule.starts_at, schedule.seat_count
       from "concert"."concert" concert join "concert"."schedule" schedule on schedule.concert_id = concert.id
      where concert.request_id = ? order by schedule.starts_at, schedule.id`,
    [draft.requestId],
  );
  if (rows.length === 0) return undefined;
  if (rows[0]!.request_hash !== hash) throw new Refused(Reason.IDEMPOTENCY_KEY_REUSED, "this request_id was used to create another concert");
  // The same draft: its dates, matched to the draft's schedules in the order given.
  const stored = rows.map((row) => ({ id: row.schedule_id, startsAt: new Date(row.starts_at).getTime(), seatCount: row.seat_count }));
  const schedules = draft.schedules.map((spec) => {
    const at = stored.findIndex((s) => s.startsAt === spec.startsAt.getTime() && s.seatCount === spec.seatCount);
    return { id: stored.splice(at, 1)[0]!.id };
  });
  return { concert: { id: rows[0]!.id }, schedules, replayed: true };
}

export interface ScheduleRow {
  id: string;
  startsAt: Date;
  seatCount: number;
  available: number;
  /** Cancelled by the organiser, with the reason fans are told. */
  cancelled: boolean;
  cancelReason: string;
}

/** A concert's dates, soonest first, with the seats free on each counted (none on a date that has started), in one query. */
export async function schedulesOf(em: EntityManager, concertId: string): Promise<ScheduleRow[]> {
  const rows = await em.execute<{ id: string; starts_at: string | Date; seat_count: number; available: string; cancel_reason: string | null; cancelled: boolean }[]>(
    `select schedule.id, schedule.starts_at, schedule.seat_count,
            (select count(*) from "concert"."seat" seat where seat.schedule_id = schedule.id and ${seatStateNow} = 'AVAILABLE'
                and schedule.starts_at > now() and schedule.cancelled_at is null) as available,
            schedule.cancel_reason, schedule.cancelled_at is not null as cancelled
       from "concert"."schedule" schedule where schedule.concert_id = ? order by schedule.starts_at, schedule.id`,
    [concertId],
  );
  return rows.map((row) => ({
    id: row.id,
    startsAt: new Date(row.starts_at),
    seatCount: row.seat_count,
    available: Number(row.available),
    cancelled: row.cancelled,
    cancelReason: row.cancel_reason ?? "",
  }));
}

export interface Supply {
  sale: Sale;
  phase: ConcertPhase;
  cancelReason: string | null;
  total: number;
  /** Free seats of the dates to come. */
  available: number;
  held: number;
  sold: number;
}

/** A date whose seats count as supply: not cancelled by the organiser. */
const onSaleDate = `schedule.cancelled_at is null`;

/** A concert's seats counted by state (of the dates not cancelled) and its sale, in one query; undefined when there is no such concert. */
export async function supplyOf(em: EntityManager, concertId: string): Promise<Supply | undefined> {
  const [row] = await em.execute<(SaleRow & { cancel_reason: string | null; total: string; available: string; held: string; sold: string; sold_out: boolean })[]>(
    `select concert.cancel_reason, ${saleColumns},
            count(*) filter (where ${onSaleDate}) as total,
            count(*) filter (where ${onSaleDate} and schedule.starts_at > now() and ${seatStateNow} = 'AVAILABLE') as available,
            count(*) filter (where ${onSaleDate} and ${seatStateNow} = 'HELD') as held,
            count(*) filter (where ${onSaleDate} and seat.state = 'SOLD') as sold,
            count(*) filter (where ${onSaleDate} and schedule.starts_at > now() and seat.state <> 'SOLD') = 0 as sold_out
       from "concert"."concert" concert
       join "concert"."schedule" schedule on schedule.concert_id = concert.id
       join "concert"."seat" seat on seat.schedule_id = schedule.id
      where concert.id = ?
      group by concert.id`,
    [concertId],
  );
  // A concert has at least one date with at least one seat, so no row means no concert.
  if (!row) return undefined;
  const sale = saleOf(row);
  return {
    sale,
    phase: phaseOf(sale, new Date(row.now), row.sold_out),
    cancelReason: row.cancel_reason,
    total: Number(row.total),
    available: Number(row.available),
    held: Number(row.held),
    sold: Number(row.sold),
  };
}

/** The sale's opening and seed commitment, and the seed once the sale has opened for a concert that was published; undefined for no concert. */
export async function saleSecretOf(em: EntityManager, concertId: string): Promise<{ saleOpensAt: Date; seedCommitment: string; seed: string } | undefined> {
  const [row] = await em.execute<{ sale_opens_at: string | Date; seed_commitment: string; seed: string }[]>(
    `select sale_opens_at, seed_commitment, case when status <> 'DRAFT' and sale_opens_at <= now() then seed else '' end as seed
       from "concert"."concert" where id = ?`,
    [concertId],
  );
  return row && { saleOpensAt: new Date(row.sale_opens_at), seedCommitment: row.seed_commitment, seed: row.seed };
}

/** What UpdateConcert may change; unset stays. `saleClosesAt: null` removes the sale's end. */
export interface ConcertChange {
  title?: string;
  venue?: string;
  prequeueOpensAt?: Date;
  saleOpensAt?: Date;
  saleClosesAt?: Date | null;
  seatLimit?: number;
  cancelCutoffSeconds?: number;
}

/**
 * Changes a concert before its sale opens (any time while a draft), in one
 * transaction: the row is locked, the phase and the resulting times checked,
 * the row written.
 */
export async function updateConcert(em: EntityManager, concertId: string, change: ConcertChange): Promise<{ before: ConcertView; after: ConcertView }> {
  const before = await em.transactional(async (tx) => {
    // FOR NO KEY UPDATE: confirmations (FOR KEY SHARE) go on meanwhile; another change or a cancel waits.
    const concert = await concertNow(tx, concertId, "for no key update of concert");
    if (concert.sale.status === "CANCELLED") throw new Refused(Reason.CONCERT_CANCELLED, "the concert was cancelled");
    if (!beforeSale.has(concert.phase)) throw new Refused(Reason.SALE_STARTED, "the sale has opened: the concert can no longer be changed");
    if (change.saleOpensAt && change.saleOpensAt <= concert.now) throw new InvalidInput("sale_opens_at", "must be in the future");
    const times: SaleTimes = {
      prequeueOpensAt: change.prequeueOpensAt ?? concert.sale.prequeueOpensAt,
      saleOpensAt: change.saleOpensAt ?? concert.sale.saleOpensAt,
      saleClosesAt: change.saleClosesAt === undefined ? concert.sale.saleClosesAt : change.saleClosesAt,
    };
    checkSaleTimes(times, concert.sale.firstStartsAt, concert.sale.lastStartsAt);
    await tx.execute(
      `update "concert"."concert" set title = ?, venue = ?, prequeue_opens_at = ?, sale_opens_at = ?, sale_closes_at = ?, seat_limit = ?, cancel_cutoff_seconds = ? where id = ?`,
      [
        change.title ?? concert.title,
        change.venue ?? concert.venue,
        times.prequeueOpensAt,
        times.saleOpensAt,
        times.saleClosesAt,
        change.seatLimit ?? concert.seatLimit,
        change.cancelCutoffSeconds ?? concert.cancelCutoffSeconds,
        concertId,
      ],
    );
    return concert;
  });
  return { before, after: await concertNow(em, concertId) };
}

/**
 * Publishes a draft, in one statement. A sale_opens_at already past opens the
 * sale at once: it becomes the moment of publishing, so the seed is never told
 * (GetSale) for a time the concert was not published.
 */
export async function publishConcert(em: EntityManager, concertId: string): Promise<{ changed: boolean; after: ConcertView }> {
  const before = await concertNow(em, concertId);
  if (before.sale.status === "DRAFT") {
    // A sale whose opening has passed opens now: it must still fit the dates (the draft may have waited long).
    const saleOpensAt = new Date(Math.max(before.sale.saleOpensAt.getTime(), before.now.getTime()));
    checkSaleTimes({ ...before.sale, saleOpensAt }, before.sale.firstStartsAt, before.sale.lastStartsAt);
  }
  const changed = await em.execute<{ id: string }[]>(
    `update "concert"."concert" set status = 'PUBLISHED', sale_opens_at = greatest(sale_opens_at, now()) where id = ? and status = 'DRAFT' returning id`,
    [concertId],
  );
  const after = await concertNow(em, concertId);
  if (after.sale.status === "CANCELLED") throw new Refused(Reason.CONCERT_CANCELLED, "the concert was cancelled");
  return { changed: changed.length > 0, after };
}

/** Lists or unlists a concert, in one statement; idempotent. */
export async function listConcert(em: EntityManager, concertId: string, listed: boolean): Promise<{ changed: boolean; after: ConcertView }> {
  const changed = await em.execute<{ id: string }[]>(`update "concert"."concert" set listed = ? where id = ? and listed <> ? returning id`, [listed, concertId, listed]);
  return { changed: changed.length > 0, after: await concertNow(em, concertId) };
}
