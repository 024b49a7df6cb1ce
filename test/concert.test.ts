import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, ConcertService, SeatState } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { reasonOf, Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { admittedFan, bearer, client, failure, newUser, operator, startTestSuite } from "./support.js";

let suite: Suite;
let token: string;
/** A fan admitted to a concert of its own, for lookups behind the gate. */
let fan: Awaited<ReturnType<typeof admittedFan>>;
beforeAll(async () => {
  suite = await startTestSuite();
  token = (await newUser(suite)).token;
  fan = await admittedFan(suite, (await createConcert()).concert!.id);
});
afterAll(() => suite?.close());

const inDays = (days: number) => timestampFromDate(new Date(Date.now() + days * 24 * 3600 * 1000));

async function createConcert(title = `Test concert ${randomUUID().slice(0, 8)}`) {
  return client(suite, ConcertAdminService).createConcert(
    {
      title,
      venue: "Test Hall",
      schedules: [
        { startsAt: inDays(20), price: 70_000n },
        { startsAt: inDays(10), seatCount: 8, price: 120_000n },
      ],
    },
    operator,
  );
}

describe("CreateConcert and the catalog", () => {
  it("puts a concert on sale with its dates and seats", async () => {
    const created = await createConcert();
    expect(created.schedules.map((s) => s.totalSeats)).toEqual([50, 8]);

    const { concerts } = await client(suite, ConcertService, "connect").listConcerts({});
    expect(concerts.map((c) => c.id)).toContain(created.concert!.id);

    const { schedules } = await client(suite, ConcertService).listSchedules({ concertId: created.concert!.id });
    expect(schedules.map((s) => [s.totalSeats, s.availableSeats])).toEqual([
      [8, 8],
      [50, 50],
    ]);
    expect(schedules.every((s) => s.concertId === created.concert!.id)).toBe(true);

    const admitted = await admittedFan(suite, created.concert!.id);
    const { seats } = await client(suite, ConcertService).listSeats({ scheduleId: schedules[0]!.id }, admitted.headers);
    expect(seats.map((s) => s.number)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(seats.every((s) => s.price === 120_000n && s.state === SeatState.AVAILABLE)).toBe(true);
  });

  it("needs the operator credential: none, or a user token, is PermissionDenied", async () => {
    const admin = client(suite, ConcertAdminService);
    const request = { title: "x", schedules: [{ startsAt: inDays(1), price: 1n }] };
    for (const options of [{}, bearer(token), bearer("wrong-operator-key")]) {
      const error = await failure(admin.createConcert(request, options));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(reasonOf(error)).toBe(Reason.OPERATOR_ONLY);
    }
  });

  it("names the bad field of a malformed concert", async () => {
    const admin = client(suite, ConcertAdminService);
    const good = { startsAt: inDays(1), price: 10n };
    const cases: [object, string][] = [
      [{ title: "", schedules: [good] }, "title"],
      [{ title: "x".repeat(201), schedules: [good] }, "title"],
      [{ title: "ok", schedules: [] }, "schedules"],
      [{ title: "ok", schedules: [{ price: 10n }] }, "schedules[0].starts_at"],
      [{ title: "ok", schedules: [good, { ...good, seatCount: 5000 }] }, "schedules[1].seat_count"],
      [{ title: "ok", schedules: [{ ...good, price: 0n }] }, "schedules[0].price"],
      [{ title: "ok", schedules: [{ ...good, price: -5n }] }, "schedules[0].price"],
      [{ title: "a\u0000b", schedules: [good] }, "title"],
      [{ title: "ok", venue: "bad\u0007venue", schedules: [good] }, "venue"],
    ];
    for (const [request, field] of cases) {
      const error = await failure(admin.createConcert(request, operator));
      expect(error.code, field).toBe(Code.InvalidArgument);
      expect(error.rawMessage, field).toContain(field);
    }
  });
});

describe("lookups", () => {
  it("unknown concert or date is NotFound with its reason", async () => {
    const concerts = client(suite, ConcertService);
    const noConcert = await failure(concerts.listSchedules({ concertId: randomUUID() }));
    expect(noConcert.code).toBe(Code.NotFound);
    expect(reasonOf(noConcert)).toBe(Reason.CONCERT_NOT_FOUND);
    const noDate = await failure(concerts.listSeats({ scheduleId: randomUUID() }, fan.headers));
    expect(noDate.code).toBe(Code.NotFound);
    expect(reasonOf(noDate)).toBe(Reason.SCHEDULE_NOT_FOUND);
  });

  it("malformed ids are InvalidArgument naming the field", async () => {
    const concerts = client(suite, ConcertService, "connect");
    for (const concertId of ["", "123", "'; drop table concert.seat; --"]) {
      const error = await failure(concerts.listSchedules({ concertId }));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.rawMessage).toContain("concert_id");
    }
    const error = await failure(concerts.listSeats({ scheduleId: "x" }, fan.headers));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toContain("schedule_id");
  });

  it("ListSeats needs a user token", async () => {
    const created = await createConcert();
    const error = await failure(client(suite, ConcertService).listSeats({ scheduleId: created.schedules[0]!.id }));
    expect(error.code).toBe(Code.Unauthenticated);
  });

  it("ListSeats of another concert's date is PermissionDenied: a queue token admits to one concert", async () => {
    const other = await createConcert();
    const error = await failure(client(suite, ConcertService).listSeats({ scheduleId: other.schedules[0]!.id }, fan.headers));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(reasonOf(error)).toBe(Reason.NOT_ADMITTED);
  });
});
