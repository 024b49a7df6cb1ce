import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError } from "@connectrpc/connect";
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema, Reason } from "../gen/boxoffice/common/v1/error_pb.js";
import {
  ConcertAdminService,
  ConcertInternalService,
  ConcertPhase,
  ConcertService,
  type Concert,
  type CreateConcertRequestSchema,
} from "../gen/boxoffice/concert/v1/concert_pb.js";
import { PaymentInternalService, PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { ReservationInternalService, ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Holds } from "../services/concert/holds.js";
import { concertModule } from "../services/concert/index.js";
import { SeatMaps } from "../services/concert/seat-maps.js";
import { openDatabase } from "../services/platform/database.js";
import { startEmbeddedPostgres } from "../services/platform/embedded-postgres.js";
import { reasonOf } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { createDatabase, dropDatabase } from "./databases.js";
import { bearer, client, failure, inDays, newUser, operator, startTestSuite, testSecrets } from "./support.js";

/**
 * A concert's life (issue 17, the concert service's side): drafts, sale times
 * and phases, the operator's changes, what fans and the queue are told, and
 * the rules a hold and a sale keep (the sale open, the date to come, the
 * concert not cancelled, the per-fan limit), through the API of a whole suite
 * on real PostgreSQL and on the embedded PGlite. Times are a few seconds ahead,
 * so phases are seen changing on the clock.
 */

const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Sleeps until a little after `ms` (epoch). */
const after = (ms: number) => sleep(Math.max(0, ms - Date.now()) + 150);
const at = (ms: number) => timestampFromDate(new Date(ms));
const ms = (timestamp: { seconds: bigint; nanos: number } | undefined) => timestampDate(timestamp as never).getTime();
const metadata = (error: ConnectError) => error.findDetails(ErrorDetailSchema)[0]?.metadata ?? {};

async function refused(call: Promise<unknown>, code: Code, reason: Reason): Promise<ConnectError> {
  const error = await failure(call);
  expect([Code[error.code], Reason[reasonOf(error) ?? 0]], error.rawMessage).toEqual([Code[code], Reason[reason]]);
  return error;
}

const databases: { name: string; env: Record<string, string> }[] = [
  { name: "PostgreSQL", env: {} },
  { name: "embedded PGlite", env: { DATABASE_URL: "" } },
];

describe.each(databases)("a concert's life on $name", ({ env }) => {
  let suite: Suite;
  beforeAll(async () => {
    suite = await startTestSuite(env);
  }, 60_000);
  afterAll(() => suite?.close());

  const admin = () => client(suite, ConcertAdminService);
  const catalog = () => client(suite, ConcertService);
  const concertInternal = () => client(suite, ConcertInternalService);
  const reservations = () => client(suite, ReservationInternalService);

  type Create = Omit<MessageInitShape<typeof CreateConcertRequestSchema>, "$typeName">;
  async function create(request: Partial<Create> = {}) {
    return admin().createConcert(
      { title: `Life ${randomUUID().slice(0, 8)}`, venue: "Hall", schedules: [{ startsAt: inDays(10), seatCount: 10, price: 100n }], ...request },
      operator,
    );
  }
  const supply = (concertId: string) => concertInternal().getConcertSupply({ concertId }, internal);
  const hold = (userId: string, concertId: string, scheduleId: string, seatNumbers: number[], reuseOwnHold = false) =>
    reservations().holdSeatsForUser({ userId, concertId, scheduleId, seatNumbers, reuseOwnHold }, internal);
  /** Holds and buys seats for a fan, by the internal calls the payment saga makes. */
  async function sell(userId: string, concertId: string, scheduleId: string, seatNumbers: number[]) {
    const { reservation } = await hold(userId, concertId, scheduleId, seatNumbers);
    return reservations().confirmReservation({ userId, reservationId: reservation!.id, paymentId: randomUUID(), amount: reservation!.amount }, internal);
  }
  async function allConcerts(): Promise<Map<string, Concert>> {
    const { concerts } = await admin().listAllConcerts({}, operator);
    return new Map(concerts.map((c) => [c.id, c]));
  }
  const phaseOf = async (concertId: string) => ConcertPhase[(await supply(concertId)).phase];

  it("goes through its phases on the clock; seats are held only while the sale is open and the date to come", async () => {
    const t0 = Date.now();
    const last = inDays(10);
    // A: a pre-queue at +2 s, the sale at +4 s, dates at +6 s and in 10 days.
    const a = await create({
      prequeueOpensAt: at(t0 + 2000),
      saleOpensAt: at(t0 + 4000),
      schedules: [
        { startsAt: at(t0 + 6000), seatCount: 3, price: 100n },
        { startsAt: last, seatCount: 5, price: 200n },
      ],
    });
    // B: on sale at once, closing at +3 s, its one date at +5 s.
    const b = await create({ saleClosesAt: at(t0 + 3000), schedules: [{ startsAt: at(t0 + 5000), seatCount: 4, price: 50n }] });
    const [aId, bId] = [a.concert!.id, b.concert!.id];
    const [aFirst, aSecond] = a.schedules.map((s) => s.id) as [string, string];
    const bDate = b.schedules[0]!.id;
    const fan = randomUUID();

    expect(ConcertPhase[a.concert!.phase]).toBe("SCHEDULED");
    expect(await phaseOf(bId)).toBe("ON_SALE");
    const notOpen = await refused(hold(fan, aId, aFirst, [1]), Code.FailedPrecondition, Reason.SALE_NOT_OPEN);
    expect(metadata(notOpen)).toEqual({ prequeue_opens_at: new Date(t0 + 2000).toISOString(), sale_opens_at: new Date(t0 + 4000).toISOString() });
    const aSupply = await supply(aId);
    expect([ms(aSupply.prequeueOpensAt), ms(aSupply.saleOpensAt), ms(aSupply.saleEndsAt)]).toEqual([t0 + 2000, t0 + 4000, ms(last)]);
    expect(ms((await supply(bId)).saleEndsAt)).toBe(t0 + 3000);
    await hold(fan, bId, bDate, [1]);

    await after(t0 + 2000);
    expect(await phaseOf(aId)).toBe("PREQUEUE");
    await refused(hold(fan, aId, aFirst, [1]), Code.FailedPrecondition, Reason.SALE_NOT_OPEN);

    await after(t0 + 3000);
    expect(await phaseOf(bId)).toBe("CLOSED");
    await refused(hold(randomUUID(), bId, bDate, [2]), Code.FailedPrecondition, Reason.SALE_CLOSED);

    await after(t0 + 4000);
    expect(await phaseOf(aId)).toBe("ON_SALE");
    await hold(fan, aId, aFirst, [1]);
    expect((await supply(aId)).available).toBe(3 + 5 - 1);

    await after(t0 + 5000);
    expect(await phaseOf(bId)).toBe("PAST");
    await refused(hold(randomUUID(), bId, bDate, [2]), Code.FailedPrecondition, Reason.DATE_STARTED);

    await after(t0 + 6000);
    // A's first date has started: its seats are no longer counted available, nor held; the second date's are.
    const started = await supply(aId);
    expect([ConcertPhase[started.phase], started.total, started.available]).toEqual(["ON_SALE", 8, 5]);
    expect((await catalog().listSchedules({ concertId: aId })).schedules.map((date) => [date.id, date.availableSeats])).toEqual([
      [aFirst, 0],
      [aSecond, 5],
    ]);
    await refused(hold(randomUUID(), aId, aFirst, [2]), Code.FailedPrecondition, Reason.DATE_STARTED);
    await hold(randomUUID(), aId, aSecond, [1]);
    expect((await supply(aId)).available).toBe(4);
  });

  it("refuses at create a date that has started and sale times that do not fit the dates, naming the field", async () => {
    const now = Date.now();
    const date = (offset: number) => ({ startsAt: at(now + offset), seatCount: 2, price: 10n });
    const cases: [Partial<Create>, string, string][] = [
      [{ schedules: [date(86_400_000), date(-1000)] }, "schedules[1].starts_at", "must be in the future"],
      [{ saleOpensAt: inDays(2), prequeueOpensAt: inDays(3), schedules: [{ startsAt: inDays(5), price: 1n }] }, "prequeue_opens_at", "after sale_opens_at"],
      [{ saleOpensAt: inDays(6), schedules: [{ startsAt: inDays(5), price: 1n }] }, "sale_opens_at", "before the first date"],
      [{ saleOpensAt: inDays(2), saleClosesAt: inDays(1), schedules: [{ startsAt: inDays(5), price: 1n }] }, "sale_closes_at", "after sale_opens_at"],
      [{ saleClosesAt: inDays(6), schedules: [{ startsAt: inDays(5), price: 1n }] }, "sale_closes_at", "after the last date"],
      [{ seatLimit: 101 }, "seat_limit", "between 1 and 100"],
      [{ seatLimit: -1 }, "seat_limit", "between 1 and 100"],
      [{ requestId: "x".repeat(101) }, "request_id", "at most 100"],
    ];
    for (const [request, field, problem] of cases) {
      const error = await refused(create(request), Code.InvalidArgument, Reason.INVALID_ARGUMENT);
      expect(error.rawMessage, field).toContain(`${field}: `);
      expect(error.rawMessage, field).toContain(problem);
    }
    // Unset: the sale opens at once, without a pre-queue, to the last date; four seats a fan.
    const [first, last] = [inDays(1), inDays(3)];
    const created = await create({ schedules: [{ startsAt: last, seatCount: 2, price: 70n }, { startsAt: first, seatCount: 3, price: 30n }] });
    const concert = created.concert!;
    expect(ConcertPhase[concert.phase]).toBe("ON_SALE");
    expect(ms(concert.prequeueOpensAt)).toBe(ms(concert.saleOpensAt));
    expect(Math.abs(ms(concert.saleOpensAt) - now)).toBeLessThan(5000);
    expect(concert.saleClosesAt).toBeUndefined();
    expect([concert.seatLimit, concert.minPrice, concert.maxPrice, concert.listed]).toEqual([4, 30n, 70n, true]);
    expect([ms(concert.firstStartsAt), ms(concert.lastStartsAt)]).toEqual([ms(first), ms(last)]);
    expect(created.schedules.map((s) => s.totalSeats)).toEqual([2, 3]);
  });

  it("CreateConcert with a request_id makes one concert, again and ten times at once; another request with the id is refused", async () => {
    const request: Partial<Create> = {
      title: `Idempotent ${randomUUID().slice(0, 8)}`,
      requestId: `create-${randomUUID()}`,
      schedules: [
        { startsAt: inDays(12), seatCount: 3, price: 10n },
        { startsAt: inDays(11), seatCount: 4, price: 20n },
      ],
    };
    const first = await create(request);
    await sleep(20);
    // Again later: sale_opens_at was unset, and stays so in what is compared (not "now" each time).
    const again = await create(request);
    expect(again.concert!.id).toBe(first.concert!.id);
    expect(again.schedules.map((s) => [s.id, s.totalSeats])).toEqual(first.schedules.map((s) => [s.id, s.totalSeats]));
    expect(ms(again.concert!.saleOpensAt)).toBe(ms(first.concert!.saleOpensAt));

    const reused = await refused(create({ ...request, venue: "Another Hall" }), Code.FailedPrecondition, Reason.IDEMPOTENCY_KEY_REUSED);
    expect(reused.rawMessage).toContain("request_id");

    const concurrent = { ...request, requestId: `create-${randomUUID()}`, title: `Concurrent ${randomUUID().slice(0, 8)}` };
    const answers = await Promise.all(Array.from({ length: 10 }, () => create(concurrent)));
    expect(new Set(answers.map((answer) => answer.concert!.id)).size).toBe(1);
    expect(new Set(answers.map((answer) => answer.schedules.map((s) => s.id).join()))).toHaveLength(1);
    const withTitle = [...(await allConcerts()).values()].filter((c) => c.title === concurrent.title);
    expect(withTitle.map((c) => c.id)).toEqual([answers[0]!.concert!.id]);
  });

  it("UpdateConcert changes a concert before its sale opens, not after; a draft is published, at once when its sale time has passed", async () => {
    const coming = await create({ saleOpensAt: inDays(1), schedules: [{ startsAt: inDays(5), seatCount: 2, price: 10n }] });
    const id = coming.concert!.id;
    const [prequeueOpensAt, saleOpensAt, saleClosesAt] = [inDays(0.5), inDays(2), inDays(4)];
    const { concert: changed } = await admin().updateConcert({ concertId: id, title: "Renamed", venue: "Other Hall", prequeueOpensAt, saleOpensAt, saleClosesAt, seatLimit: 6 }, operator);
    expect([changed!.title, changed!.venue, changed!.seatLimit, ConcertPhase[changed!.phase]]).toEqual(["Renamed", "Other Hall", 6, "SCHEDULED"]);
    expect([changed!.prequeueOpensAt, changed!.saleOpensAt, changed!.saleClosesAt].map(ms)).toEqual([prequeueOpensAt, saleOpensAt, saleClosesAt].map(ms));
    const { concert: cleared } = await admin().updateConcert({ concertId: id, clearSaleClosesAt: true }, operator);
    expect(cleared!.saleClosesAt).toBeUndefined();
    expect(cleared!.title).toBe("Renamed");
    for (const [request, field] of [
      [{ saleOpensAt: at(Date.now() - 60_000) }, "sale_opens_at"],
      [{ saleOpensAt: inDays(6) }, "sale_opens_at"],
      [{ prequeueOpensAt: inDays(3) }, "prequeue_opens_at"],
      [{ saleClosesAt: inDays(9) }, "sale_closes_at"],
      [{ seatLimit: 0 }, "seat_limit"],
      [{ title: "" }, "title"],
    ] as const) {
      const error = await refused(admin().updateConcert({ concertId: id, ...request }, operator), Code.InvalidArgument, Reason.INVALID_ARGUMENT);
      expect(error.rawMessage).toContain(field);
    }
    await refused(admin().updateConcert({ concertId: randomUUID(), title: "x" }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);

    const onSale = await create();
    await refused(admin().updateConcert({ concertId: onSale.concert!.id, title: "Too late" }, operator), Code.FailedPrecondition, Reason.SALE_STARTED);

    // A draft: not listed, not on sale, changed at will; published, its past sale time opens the sale at once.
    const draft = await create({ draft: true, schedules: [{ startsAt: inDays(4), seatCount: 2, price: 10n }] });
    const draftId = draft.concert!.id;
    expect(ConcertPhase[draft.concert!.phase]).toBe("DRAFT");
    expect((await catalog().listConcerts({})).concerts.map((c) => c.id)).not.toContain(draftId);
    await refused(hold(randomUUID(), draftId, draft.schedules[0]!.id, [1]), Code.FailedPrecondition, Reason.SALE_NOT_OPEN);
    await admin().updateConcert({ concertId: draftId, seatLimit: 2 }, operator);
    const published = await admin().publishConcert({ concertId: draftId }, operator);
    expect(ConcertPhase[published.concert!.phase]).toBe("ON_SALE");
    expect(ms(published.concert!.saleOpensAt)).toBeGreaterThanOrEqual(ms(draft.concert!.saleOpensAt));
    const again = await admin().publishConcert({ concertId: draftId }, operator);
    expect(ms(again.concert!.saleOpensAt)).toBe(ms(published.concert!.saleOpensAt));
    expect((await catalog().listConcerts({})).concerts.map((c) => c.id)).toContain(draftId);
    await hold(randomUUID(), draftId, draft.schedules[0]!.id, [1, 2]);

    // A draft published before its sale time keeps it.
    const later = await create({ draft: true, saleOpensAt: inDays(1), schedules: [{ startsAt: inDays(4), seatCount: 2, price: 10n }] });
    const { concert: scheduled } = await admin().publishConcert({ concertId: later.concert!.id }, operator);
    expect([ConcertPhase[scheduled!.phase], ms(scheduled!.saleOpensAt)]).toEqual(["SCHEDULED", ms(later.concert!.saleOpensAt)]);
    await refused(admin().publishConcert({ concertId: randomUUID() }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);
  });

  it("UnlistConcert takes a concert out of the catalog while its sale goes on; RelistConcert brings it back; both idempotent", async () => {
    const created = await create();
    const id = created.concert!.id;
    for (let i = 0; i < 2; i++) expect((await admin().unlistConcert({ concertId: id }, operator)).concert!.listed).toBe(false);
    expect((await catalog().listConcerts({})).concerts.map((c) => c.id)).not.toContain(id);
    expect((await allConcerts()).get(id)?.listed).toBe(false);
    await hold(randomUUID(), id, created.schedules[0]!.id, [1]);
    for (let i = 0; i < 2; i++) expect((await admin().relistConcert({ concertId: id }, operator)).concert!.listed).toBe(true);
    expect((await catalog().listConcerts({})).concerts.map((c) => c.id)).toContain(id);
    await refused(admin().unlistConcert({ concertId: randomUUID() }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);
  });

  it("CancelConcert cancels a concert with sales (its bookings CANCELLED with the reason, their seats free); nothing is held or sold after; idempotent", async () => {
    const sold = await create();
    const buyer = randomUUID();
    const { reservation: bought } = await sell(buyer, sold.concert!.id, sold.schedules[0]!.id, [1]);
    await admin().cancelConcert({ concertId: sold.concert!.id, reason: "no" }, operator);
    expect(await phaseOf(sold.concert!.id)).toBe("CANCELLED");
    const booking = (await reservations().getUserReservation({ userId: buyer, reservationId: bought!.id }, internal)).reservation!;
    expect([ReservationState[booking.state], booking.cancelReason]).toEqual(["CANCELLED", "no"]);
    expect((await supply(sold.concert!.id)).sold).toBe(0);

    const created = await create();
    const [id, date] = [created.concert!.id, created.schedules[0]!.id];
    const fan = randomUUID();
    const { reservation } = await hold(fan, id, date, [1, 2]);
    const { concert } = await admin().cancelConcert({ concertId: id, reason: "The band is ill" }, operator);
    expect(ConcertPhase[concert!.phase]).toBe("CANCELLED");
    const again = await admin().cancelConcert({ concertId: id, reason: "another reason" }, operator);
    expect(ConcertPhase[again.concert!.phase]).toBe("CANCELLED");
    const told = await supply(id);
    expect([ConcertPhase[told.phase], told.cancelReason]).toEqual(["CANCELLED", "The band is ill"]);
    await refused(hold(randomUUID(), id, date, [3]), Code.FailedPrecondition, Reason.CONCERT_CANCELLED);
    await refused(
      reservations().confirmReservation({ userId: fan, reservationId: reservation!.id, paymentId: randomUUID(), amount: reservation!.amount }, internal),
      Code.FailedPrecondition,
      Reason.CONCERT_CANCELLED,
    );
    await refused(admin().updateConcert({ concertId: id, title: "x" }, operator), Code.FailedPrecondition, Reason.CONCERT_CANCELLED);
    await refused(admin().publishConcert({ concertId: id }, operator), Code.FailedPrecondition, Reason.CONCERT_CANCELLED);
    expect((await catalog().listConcerts({})).concerts.map((c) => c.id)).not.toContain(id);
    expect(ConcertPhase[(await allConcerts()).get(id)!.phase]).toBe("CANCELLED");
    const tooLong = await refused(admin().cancelConcert({ concertId: sold.concert!.id, reason: "x".repeat(501) }, operator), Code.InvalidArgument, Reason.INVALID_ARGUMENT);
    expect(tooLong.rawMessage).toContain("reason");
    await refused(admin().cancelConcert({ concertId: randomUUID() }, operator), Code.NotFound, Reason.CONCERT_NOT_FOUND);
  });

  it("ListConcerts shows the listed, published concerts on sale or coming, on sale first by first date, then by sale opening; every field filled", async () => {
    // One clock reading for both dates: two of Date.now() a millisecond apart made them a day and a millisecond apart.
    const now = Date.now();
    const late = await create({
      schedules: [
        { startsAt: at(now + 20 * 86_400_000), seatCount: 2, price: 300n },
        { startsAt: at(now + 21 * 86_400_000), seatCount: 2, price: 100n },
      ],
      seatLimit: 7,
    });
    const early = await create({ schedules: [{ startsAt: inDays(10), seatCount: 2, price: 50n }] });
    const soldOut = await create({ schedules: [{ startsAt: inDays(12), seatCount: 1, price: 80n }] });
    await sell(randomUUID(), soldOut.concert!.id, soldOut.schedules[0]!.id, [1]);
    const soon = await create({ saleOpensAt: inDays(0.1), schedules: [{ startsAt: inDays(5), seatCount: 2, price: 10n }] });
    const sooner = await create({ prequeueOpensAt: inDays(-0.1), saleOpensAt: inDays(0.05), schedules: [{ startsAt: inDays(30), seatCount: 2, price: 10n }] });
    const draft = await create({ draft: true });
    const unlisted = await create();
    await admin().unlistConcert({ concertId: unlisted.concert!.id }, operator);
    const cancelled = await create();
    await admin().cancelConcert({ concertId: cancelled.concert!.id }, operator);

    const mine = new Set([late, early, soldOut, soon, sooner, draft, unlisted, cancelled].map((c) => c.concert!.id));
    const listed = (await catalog().listConcerts({})).concerts.filter((c) => mine.has(c.id));
    expect(listed.map((c) => c.id)).toEqual([early, soldOut, late, sooner, soon].map((c) => c.concert!.id));
    expect(listed.map((c) => ConcertPhase[c.phase])).toEqual(["ON_SALE", "SOLD_OUT", "ON_SALE", "PREQUEUE", "SCHEDULED"]);
    const shown = listed[2]!;
    expect(shown).toMatchObject({ title: late.concert!.title, venue: "Hall", minPrice: 100n, maxPrice: 300n, seatLimit: 7, listed: true });
    expect(shown.seedCommitment).toMatch(/^[0-9a-f]{64}$/);
    expect([ms(shown.firstStartsAt), ms(shown.lastStartsAt)]).toEqual([ms(late.concert!.firstStartsAt), ms(late.concert!.lastStartsAt)]);
    expect(ms(shown.lastStartsAt) - ms(shown.firstStartsAt)).toBe(86_400_000);
    expect(shown.prequeueOpensAt && shown.saleOpensAt).toBeTruthy();
    expect(JSON.stringify(listed, (_key, value) => (typeof value === "bigint" ? String(value) : value))).not.toMatch(/"seed"/);

    // ListAllConcerts: every one of them, newest first.
    const { concerts: all } = await admin().listAllConcerts({}, operator);
    expect(all.filter((c) => mine.has(c.id)).map((c) => c.id)).toEqual([cancelled, unlisted, draft, sooner, soon, soldOut, early, late].map((c) => c.concert!.id));
  });

  it("GetSale tells the seed only once the sale has opened, and it is the one committed to", async () => {
    const opensAt = Date.now() + 1500;
    const created = await create({ saleOpensAt: at(opensAt), schedules: [{ startsAt: inDays(2), seatCount: 2, price: 10n }] });
    const id = created.concert!.id;
    const before = await concertInternal().getSale({ concertId: id }, internal);
    expect([before.seed, before.seedCommitment, ms(before.saleOpensAt)]).toEqual(["", created.concert!.seedCommitment, opensAt]);
    await after(opensAt);
    const opened = await concertInternal().getSale({ concertId: id }, internal);
    expect(opened.seed).toMatch(/^[0-9a-f]{64}$/);
    expect(createHash("sha256").update(Buffer.from(opened.seed, "hex")).digest("hex")).toBe(opened.seedCommitment);
    expect(opened.seedCommitment).toBe(created.concert!.seedCommitment);
    // A draft's seed stays secret whatever its times.
    const draft = await create({ draft: true });
    expect((await concertInternal().getSale({ concertId: draft.concert!.id }, internal)).seed).toBe("");
    await refused(concertInternal().getSale({ concertId: randomUUID() }, internal), Code.NotFound, Reason.CONCERT_NOT_FOUND);
    await refused(concertInternal().getConcertSupply({ concertId: randomUUID() }, internal), Code.NotFound, Reason.CONCERT_NOT_FOUND);
  });

  it("a payment for a date that has started fails DATE_STARTED, and the fan's points come back", async () => {
    const startsAt = Date.now() + 2500;
    const created = await create({ schedules: [{ startsAt: at(startsAt), seatCount: 2, price: 400n }] });
    const user = await newUser(suite);
    await client(suite, PointService).chargePoints({ amount: 1000n, idempotencyKey: randomUUID() }, bearer(user.token));
    const { reservation } = await hold(user.userId, created.concert!.id, created.schedules[0]!.id, [1]);
    await after(startsAt);
    const { payment } = await client(suite, PaymentInternalService).payForUser(
      { userId: user.userId, concertId: created.concert!.id, reservationId: reservation!.id, idempotencyKey: randomUUID(), reservation },
      internal,
    );
    expect([PaymentState[payment!.state], Reason[payment!.failureReason]]).toEqual(["FAILED", "DATE_STARTED"]);
    expect((await client(suite, PointService).getBalance({}, bearer(user.token))).balance).toBe(1000n);
  });

  it("the per-fan limit counts the fan's live holds and purchases over every date; a retried booking is answered its own hold", async () => {
    const created = await create({
      schedules: [0, 1, 2].map((i) => ({ startsAt: inDays(10 + i), seatCount: 6, price: 10n })),
    });
    const id = created.concert!.id;
    const [d1, d2, d3] = created.schedules.map((s) => s.id) as [string, string, string];
    const fan = randomUUID();
    await sell(fan, id, d1, [1, 2]);
    const over = await refused(hold(fan, id, d2, [1, 2, 3]), Code.FailedPrecondition, Reason.FAN_LIMIT_REACHED);
    expect(metadata(over)).toEqual({ limit: "4", held: "2" });
    expect(over.rawMessage).toBe("you may buy at most 4 seats of this concert; you hold or own 2");
    const { reservation } = await hold(fan, id, d2, [1, 2]);
    await refused(hold(fan, id, d3, [1]), Code.FailedPrecondition, Reason.FAN_LIMIT_REACHED);
    // The booking retried after its answer was lost: its own hold, not the limit.
    const retried = await hold(fan, id, d2, [2, 1], true);
    expect([retried.reused, retried.reservation!.id]).toEqual([true, reservation!.id]);
    await reservations().releaseUserHold({ userId: fan, reservationId: reservation!.id }, internal);
    await hold(fan, id, d3, [5, 6]);
    // Another fan is not counted.
    await hold(randomUUID(), id, d3, [1, 2, 3, 4]);
  });

  it("one fan holding on six dates at once (limit 4, two seats each) never holds more than four seats, round after round", async () => {
    const rounds = 15;
    const created = await create({
      schedules: Array.from({ length: 6 }, (_, i) => ({ startsAt: inDays(10 + i), seatCount: 2 * rounds, price: 10n })),
    });
    const id = created.concert!.id;
    for (let round = 0; round < rounds; round++) {
      const fan = randomUUID();
      const seats = [2 * round + 1, 2 * round + 2];
      const results = await Promise.allSettled(created.schedules.map((s) => hold(fan, id, s.id, seats)));
      const held = results.filter((r) => r.status === "fulfilled").length * 2;
      const refusals = results.flatMap((r) => (r.status === "rejected" ? [Reason[reasonOf(r.reason) ?? 0]] : []));
      expect([held, refusals], `round ${round}`).toEqual([4, ["FAN_LIMIT_REACHED", "FAN_LIMIT_REACHED", "FAN_LIMIT_REACHED", "FAN_LIMIT_REACHED"]]);
    }
    expect((await supply(id)).held).toBe(4 * rounds);
  }, 60_000);
});

describe.each([
  {
    name: "PostgreSQL",
    open: async () => {
      const name = `boxoffice_concert_life_${process.pid}_${Date.now().toString(36)}`;
      return { url: await createDatabase(name), poolSize: 2, close: () => dropDatabase(name) };
    },
  },
  {
    name: "embedded PGlite",
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), "boxoffice-concert-life-"));
      const embedded = await startEmbeddedPostgres(dir);
      return { url: embedded.url, poolSize: 1, close: async () => (await embedded.stop(), rmSync(dir, { recursive: true, force: true })) };
    },
  },
])("upgrading a $name database whose concerts had no sale times", ({ open }) => {
  it("puts them on sale since they were created, each with its own seed and its commitment, and their price range", async () => {
    const { url, poolSize, close } = await open();
    const spec = concertModule.database!;
    try {
      const before = await openDatabase({ ...spec, migrations: spec.migrations.slice(0, 4) }, { url, poolSize });
      const [concert, other, schedule] = [randomUUID(), randomUUID(), randomUUID()];
      const db = before.em.getConnection();
      await db.execute(`insert into "concert"."concert" (id, title, venue, created_at) values (?, 'Old', 'Hall', now() - interval '1 hour'), (?, 'Other', 'Hall', now())`, [concert, other]);
      await db.execute(`insert into "concert"."schedule" (id, concert_id, starts_at, seat_count) values (?, ?, now() + interval '1 day', 3), (?, ?, now() + interval '1 day', 1)`, [
        schedule,
        concert,
        randomUUID(),
        other,
      ]);
      await db.execute(`insert into "concert"."seat" (schedule_id, number, price) values (?, 1, 300), (?, 2, 100), (?, 3, 200)`, [schedule, schedule, schedule]);
      await before.close();

      const upgraded = await openDatabase(spec, { url, poolSize });
      try {
        const rows = await upgraded.em.getConnection().execute<Record<string, unknown>[]>(
          `select id, status, listed, seat_limit, seed, seed_commitment, min_price::int, max_price::int, request_id, sale_closes_at,
                  sale_opens_at = created_at as sale_since_created, prequeue_opens_at = created_at as prequeue_since_created
             from "concert"."concert" order by created_at`,
        );
        expect(rows[0]).toMatchObject({ id: concert, status: "PUBLISHED", listed: true, seat_limit: 4, min_price: 100, max_price: 300, request_id: null, sale_closes_at: null });
        for (const row of rows) {
          expect(row).toMatchObject({ sale_since_created: true, prequeue_since_created: true });
          expect(row.seed).toMatch(/^[0-9a-f]{64}$/);
          expect(row.seed_commitment).toBe(createHash("sha256").update(Buffer.from(String(row.seed), "hex")).digest("hex"));
        }
        expect(rows[0]!.seed).not.toBe(rows[1]!.seed);
        // On sale as before: a hold goes through.
        const holds = new Holds(new SeatMaps(false), { seatsFreed: async () => {} }, 60_000);
        expect((await holds.hold(upgraded.em.fork(), { userId: randomUUID(), concertId: concert, scheduleId: schedule, seatNumbers: [1, 2] })).state).toBe("HELD");
      } finally {
        await upgraded.close();
      }
    } finally {
      await close();
    }
  }, 60_000);
});
