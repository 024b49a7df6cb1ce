import { ConcertPhase } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { InvalidInput, Reason, Refused } from "../platform/errors.js";

export const concertStatuses = ["DRAFT", "PUBLISHED", "CANCELLED"] as const;
export type ConcertStatus = (typeof concertStatuses)[number];

/** A concert's sale as its rules see it: its state and its times. */
export interface Sale {
  status: ConcertStatus;
  prequeueOpensAt: Date;
  saleOpensAt: Date;
  saleClosesAt: Date | null;
  firstStartsAt: Date;
  lastStartsAt: Date;
}

/**
 * Where a concert is in its life at `now`: the one definition, which every
 * answer and refusal goes by. `soldOut`: every seat of the dates still to come
 * is SOLD (a caller that does not count seats passes nothing and gets ON_SALE
 * at most).
 */
export function phaseOf(sale: Sale, now: Date, soldOut = false): ConcertPhase {
  if (sale.status === "CANCELLED") return ConcertPhase.CANCELLED;
  if (sale.status === "DRAFT") return ConcertPhase.DRAFT;
  if (sale.lastStartsAt <= now) return ConcertPhase.PAST;
  if (sale.saleClosesAt !== null && sale.saleClosesAt <= now) return ConcertPhase.CLOSED;
  if (now < sale.prequeueOpensAt) return ConcertPhase.SCHEDULED;
  if (now < sale.saleOpensAt) return ConcertPhase.PREQUEUE;
  return soldOut ? ConcertPhase.SOLD_OUT : ConcertPhase.ON_SALE;
}

/** The phases before the sale opens: a concert may be changed, and no seat held. */
export const beforeSale: ReadonlySet<ConcertPhase> = new Set([ConcertPhase.DRAFT, ConcertPhase.SCHEDULED, ConcertPhase.PREQUEUE]);

/** The phases ListConcerts shows (of published, listed concerts). */
export const cataloguedPhases: ReadonlySet<ConcertPhase> = new Set([ConcertPhase.SCHEDULED, ConcertPhase.PREQUEUE, ConcertPhase.ON_SALE, ConcertPhase.SOLD_OUT]);

/** When the sale ends: at sale_closes_at, or when the last date starts, whichever comes first. */
export function saleEndsAt(sale: Sale): Date {
  return sale.saleClosesAt !== null && sale.saleClosesAt < sale.lastStartsAt ? sale.saleClosesAt : sale.lastStartsAt;
}

/**
 * The same rule in SQL, for the statements that hold seats, with `concert` and
 * `schedule` in scope: the date's seats may be held now. It is true exactly when
 * `holdRefusal` below is undefined (prequeue_opens_at is never after sale_opens_at).
 */
export const holdableNow = `(concert.status = 'PUBLISHED' and concert.sale_opens_at <= now()
  and (concert.sale_closes_at is null or concert.sale_closes_at > now()) and schedule.starts_at > now() and schedule.cancelled_at is null)`;
/** And for the statement that sells them: the concert and the date are not cancelled and the date has not started. */
export const sellableNow = `(concert.status <> 'CANCELLED' and schedule.starts_at > now() and schedule.cancelled_at is null)`;

/** Why seats of a date starting at `startsAt` cannot be sold now (a held seat is sold until the date starts); undefined when they can. */
export function saleRefusal(sale: Sale, startsAt: Date, now: Date): Refused | undefined {
  if (sale.status === "CANCELLED") return new Refused(Reason.CONCERT_CANCELLED, "the concert was cancelled");
  if (startsAt <= now) return new Refused(Reason.DATE_STARTED, "that date has started; its seats can no longer be held or bought");
  return undefined;
}

/** Why seats of a date starting at `startsAt` cannot be held now; undefined when they can. */
export function holdRefusal(sale: Sale, startsAt: Date, now: Date): Refused | undefined {
  const refusal = saleRefusal(sale, startsAt, now);
  if (refusal) return refusal;
  const phase = phaseOf(sale, now);
  if (beforeSale.has(phase)) {
    return new Refused(Reason.SALE_NOT_OPEN, `the sale opens at ${sale.saleOpensAt.toISOString()}`, {
      prequeue_opens_at: sale.prequeueOpensAt.toISOString(),
      sale_opens_at: sale.saleOpensAt.toISOString(),
    });
  }
  if (phase === ConcertPhase.CLOSED || phase === ConcertPhase.PAST) return new Refused(Reason.SALE_CLOSED, "the sale has closed");
  return undefined;
}

/** The sale times a concert keeps, at create and after every update. */
export interface SaleTimes {
  prequeueOpensAt: Date;
  saleOpensAt: Date;
  saleClosesAt: Date | null;
}

/** Checks sale times against the concert's dates, naming the field at fault. */
export function checkSaleTimes(times: SaleTimes, firstStartsAt: Date, lastStartsAt: Date): void {
  if (times.prequeueOpensAt > times.saleOpensAt) throw new InvalidInput("prequeue_opens_at", "must not be after sale_opens_at");
  if (times.saleOpensAt >= firstStartsAt) throw new InvalidInput("sale_opens_at", "must be before the first date starts");
  if (times.saleClosesAt !== null) {
    if (times.saleClosesAt <= times.saleOpensAt) throw new InvalidInput("sale_closes_at", "must be after sale_opens_at");
    if (times.saleClosesAt > lastStartsAt) throw new InvalidInput("sale_closes_at", "must not be after the last date starts");
  }
}

/** What a concert row holds of its sale, as selected by `saleColumns`. */
export interface SaleRow {
  status: ConcertStatus;
  prequeue_opens_at: string | Date;
  sale_opens_at: string | Date;
  sale_closes_at: string | Date | null;
  first_starts_at: string | Date;
  last_starts_at: string | Date;
  /** The database's clock when the row was read. */
  now: string | Date;
}

/** The columns of `SaleRow`, with the concert as `concert`. */
export const saleColumns = `concert.status, concert.prequeue_opens_at, concert.sale_opens_at, concert.sale_closes_at,
  (select min(starts_at) from "concert"."schedule" where concert_id = concert.id) as first_starts_at,
  (select max(starts_at) from "concert"."schedule" where concert_id = concert.id) as last_starts_at, now() as now`;

export function saleOf(row: SaleRow): Sale {
  return {
    status: row.status,
    prequeueOpensAt: new Date(row.prequeue_opens_at),
    saleOpensAt: new Date(row.sale_opens_at),
    saleClosesAt: row.sale_closes_at === null ? null : new Date(row.sale_closes_at),
    firstStartsAt: new Date(row.first_starts_at),
    lastStartsAt: new Date(row.last_starts_at),
  };
}
