import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReservationInternalService } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { ScanResult, TicketScannerService, TicketService, TicketState } from "../gen/boxoffice/ticket/v1/ticket_pb.js";
import { createConcert } from "../services/concert/concert-service.js";
import { Holds } from "../services/concert/holds.js";
import { concertModule } from "../services/concert/index.js";
import { SeatMaps } from "../services/concert/seat-maps.js";
import { orderNumber, TicketCodes, Tickets, type ScanOutcome } from "../services/concert/tickets.js";
import { loadConfig } from "../services/platform/config.js";
import { openDatabase } from "../services/platform/database.js";
import { Reason } from "../services/platform/errors.js";
import type { Suite } from "../services/platform/suite.js";
import { invalid, refused } from "./outcomes.js";
import { bearer, bothDatabases, client, concertOnSale, newUser, operator, scanner, startTestSuite, testSecrets } from "./support.js";

/**
 * Tickets and check-in at the door (issue 18, items 1 and 2): the codes, the
 * Tickets rules called directly on PostgreSQL and the embedded PGlite, and the
 * RPCs on two suite instances sharing one PostgreSQL database.
 */

const codes = new TicketCodes(testSecrets.TOKEN_SECRET);
const noSupply = { seatsFreed: async () => {} };

/** Flips one character of the code's text to another base64url character. */
function oneCharacterChanged(code: string, at: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const i = at < 0 ? code.length + at : at;
  const replacement = alphabet[(alphabet.indexOf(code[i]!) + 1) % alphabet.length]!;
  return code.slice(0, i) + replacement + code.slice(i + 1);
}

describe("ticket codes", () => {
  const claim = { reservationId: randomUUID(), scheduleId: randomUUID(), seatNumber: 42 };

  it("verify offline, on any instance given the same TOKEN_SECRET, and say only their seat", () => {
    const code = codes.sign(claim);
    expect(code).toMatch(/^t1\.[A-Za-z0-9_-]+$/);
    expect(code.length).toBeLessThan(150);
    expect(new TicketCodes(testSecrets.TOKEN_SECRET).verify(code)).toEqual(claim);
    // Another deployment's key does not sign our tickets.
    expect(new TicketCodes("another-token-secret-that-is-long-enough").verify(code)).toBeUndefined();
  });

  it("refuse any one-character change, garbage and other texts", () => {
    const code = codes.sign(claim);
    for (let at = 3; at < code.length; at++) expect(codes.verify(oneCharacterChanged(code, at)), `at ${at}`).toBeUndefined();
    for (const garbage of ["", "t1.", "t1.AAAA", code.slice(0, -1), code + "A", code.replace("t1.", "t2."), `${code.slice(0, 10)}=${code.slice(11)}`, "x".repeat(100_000)]) {
      expect(codes.verify(garbage)).toBeUndefined();
    }
  });

  it("order numbers are the booking's, the same every time, and readable", () => {
    const id = randomUUID();
    expect(orderNumber(id)).toMatch(/^BX-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
    expect(orderNumber(id)).toBe(orderNumber(id));
    expect(new Set(Array.from({ length: 1000 }, () => orderNumber(randomUUID()))).size).toBe(1000);
  });
});

describe("the scanner key", () => {
  it("is generated into secrets.json beside the operator key, and added to a secrets.json from before scanners, the same by every process", () => {
    const fresh = mkdtempSync(join(tmpdir(), "boxoffice-secrets-"));
    const old = mkdtempSync(join(tmpdir(), "boxoffice-secrets-"));
    try {
      const config = loadConfig({ DATA_DIR: fresh });
      const file = JSON.parse(readFileSync(join(fresh, "secrets.json"), "utf8")) as Record<string, string>;
      expect(config.scannerKey).toBe(file.scannerKey);
      expect(config.scannerKey).not.toBe(config.operatorKey);
      expect(config.scannerKey.length).toBeGreaterThanOrEqual(16);

      const before = { tokenSecret: "a".repeat(43), internalCredential: "b".repeat(32), operatorKey: "c".repeat(32) };
      writeFileSync(join(old, "secrets.json"), JSON.stringify(before));
      const first = loadConfig({ DATA_DIR: old });
      expect(first).toMatchObject(before);
      expect(JSON.parse(readFileSync(join(old, "secrets.json"), "utf8"))).toEqual({ ...before, scannerKey: first.scannerKey });
      expect(loadConfig({ DATA_DIR: old }).scannerKey).toBe(first.scannerKey);
      expect(loadConfig({ DATA_DIR: old, SCANNER_KEY: "from-the-environment" }).scannerKey).toBe("from-the-environment");
      expect(() => loadConfig({ DATA_DIR: old, SCANNER_KEY: "c".repeat(32) })).toThrow(/SCANNER_KEY must differ from OPERATOR_KEY/);
    } finally {
      rmSync(fresh, { recursive: true, force: true });
      rmSync(old, { recursive: true, force: true });
    }
  });

  it("of a deployment that sets the other secrets but no SCANNER_KEY is derived from TOKEN_SECRET: the same on every instance, and no file is written", () => {
    const env = { TOKEN_SECRET: "t".repeat(40), INTERNAL_CREDENTIAL: "i".repeat(20), OPERATOR_KEY: "o".repeat(20) };
    const [one, two] = [mkdtempSync(join(tmpdir(), "boxoffice-scanner-")), mkdtempSync(join(tmpdir(), "boxoffice-scanner-"))];
    try {
      const a = loadConfig({ ...env, DATA_DIR: one });
      const b = loadConfig({ ...env, DATA_DIR: two });
      expect(a.scannerKey).toBe(b.scannerKey);
      expect(a.scannerKey).not.toBe(a.operatorKey);
      expect(existsSync(join(one, "secrets.json"))).toBe(false);
      expect(loadConfig({ ...env, TOKEN_SECRET: "u".repeat(40), DATA_DIR: one }).scannerKey).not.toBe(a.scannerKey);
    } finally {
      rmSync(one, { recursive: true, force: true });
      rmSync(two, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------- the rules, on both databases

describe.each(bothDatabases)("tickets on $name", ({ open, poolSize }) => {
  let orm: MikroORM;
  let stop: () => Promise<void>;
  const tickets = new Tickets(codes);
  const holds = new Holds(new SeatMaps(false), noSupply, 60_000);
  const em = () => orm.em.fork();

  beforeAll(async () => {
    const database = await open();
    stop = database.stop;
    orm = await openDatabase(concertModule.database!, { url: database.url, poolSize });
  }, 60_000);
  afterAll(async () => {
    await orm?.close();
    await stop?.();
  });

  /** A concert with two dates (6 seats at 100 and 150), and a fan's paid booking of seats 2 and 5 on the first. */
  async function paidBooking() {
    const { concert, schedules } = await createConcert(em(), {
      title: "Tickets",
      venue: "Door Hall",
      schedules: [
        { startsAt: new Date(Date.now() + 864e5), seatCount: 6, price: 100 },
        { startsAt: new Date(Date.now() + 2 * 864e5), seatCount: 6, price: 150 },
      ],
    });
    const fan = randomUUID();
    const [scheduleId, otherDate] = [schedules[0]!.id, schedules[1]!.id];
    const held = await holds.hold(em(), { userId: fan, concertId: concert.id, scheduleId, seatNumbers: [5, 2] });
    await holds.confirm(em(), { userId: fan, reservationId: held.id, paymentId: randomUUID() });
    return { fan, concert, scheduleId, otherDate, reservationId: held.id };
  }

  const page = { pageSize: 0, pageToken: "" };
  /** An EntityManager that fails the test if anything asks it for the database. */
  const noDatabase = new Proxy({} as EntityManager, {
    get: () => {
      throw new Error("the database was asked");
    },
  });

  it("a paid booking has one ticket per seat, with a code that verifies offline, its order number and its date", async () => {
    const { fan, concert, scheduleId, reservationId } = await paidBooking();
    const { tickets: listed, nextPageToken } = await tickets.list(em(), fan, page);
    expect(nextPageToken).toBe("");
    expect(listed.map(({ code: _code, startsAt: _startsAt, ...rest }) => rest)).toEqual(
      [2, 5].map((seatNumber) => ({
        reservationId,
        scheduleId,
        seatNumber,
        orderNumber: orderNumber(reservationId),
        concertId: concert.id,
        concertTitle: "Tickets",
        venue: "Door Hall",
        price: 100,
        state: "VALID",
        used: undefined,
      })),
    );
    for (const ticket of listed) expect(codes.verify(ticket.code)).toEqual({ reservationId, scheduleId, seatNumber: ticket.seatNumber });
    // A hold not paid for has no tickets.
    const unpaid = randomUUID();
    await holds.hold(em(), { userId: unpaid, concertId: concert.id, scheduleId, seatNumbers: [1] });
    expect((await tickets.list(em(), unpaid, page)).tickets).toEqual([]);
  });

  it("a forged or altered code is FORGED without asking the database; a code for another date is WRONG_DATE", async () => {
    const { fan, scheduleId, otherDate } = await paidBooking();
    const [ticket] = (await tickets.list(em(), fan, page)).tickets;
    for (const code of [oneCharacterChanged(ticket!.code, 20), oneCharacterChanged(ticket!.code, -2), "not a ticket", new TicketCodes("x".repeat(40)).sign(ticket!)]) {
      expect(await tickets.scan(noDatabase, { code, scheduleId, gate: "North" })).toEqual({ result: "FORGED" });
    }
    const wrong = await tickets.scan(em(), { code: ticket!.code, scheduleId: otherDate, gate: "North" });
    expect(wrong).toEqual({ result: "WRONG_DATE", ticket: { reservationId: ticket!.reservationId, scheduleId, seatNumber: ticket!.seatNumber }, startsAt: ticket!.startsAt });
    // Neither used the ticket.
    expect((await tickets.scan(em(), { code: ticket!.code, scheduleId, gate: "North" })).result).toBe("ADMITTED");
  });

  it("of 20 concurrent scans of one code at four gates, exactly one ADMITS, and 19 say ALREADY_USED naming its time and gate", async () => {
    const { fan, scheduleId, reservationId } = await paidBooking();
    const [ticket, other] = (await tickets.list(em(), fan, page)).tickets;
    const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => tickets.scan(em(), { code: ticket!.code, scheduleId, gate: `Gate ${i % 4}` })));
    const admitted = outcomes.filter((o) => o.result === "ADMITTED");
    expect(admitted).toHaveLength(1);
    const first = (admitted[0] as Extract<ScanOutcome, { used: unknown }>).used;
    expect(outcomes.filter((o) => o.result === "ALREADY_USED").map((o) => (o as Extract<ScanOutcome, { used: unknown }>).used)).toEqual(Array(19).fill(first));
    // The hold row carries the used seat, and the scan its time and gate; the other seat's ticket is still valid.
    const [row] = await em().getConnection().execute<{ used_seats: number[] }[]>(`select used_seats from "concert"."hold" where id = ?`, [reservationId]);
    expect(row!.used_seats).toEqual([ticket!.seatNumber]);
    const scans = await em().getConnection().execute<{ seat_number: number; gate: string; used_at: Date }[]>(`select seat_number, gate, used_at from "concert"."ticket_scan" where reservation_id = ?`, [reservationId]);
    expect(scans.map((scan) => ({ seat: scan.seat_number, at: new Date(scan.used_at).getTime(), gate: scan.gate }))).toEqual([{ seat: ticket!.seatNumber, at: first.at.getTime(), gate: first.gate }]);
    const listed = (await tickets.list(em(), fan, page)).tickets;
    expect(listed.map((t) => [t.seatNumber, t.state, t.used])).toEqual([
      [ticket!.seatNumber, "USED", first],
      [other!.seatNumber, "VALID", undefined],
    ]);
    expect((await tickets.scan(em(), { code: other!.code, scheduleId, gate: "Gate 9" })).result).toBe("ADMITTED");
  });

  it("a genuine code of a hold that was never CONFIRMED (released, expired) is VOID, and marks nothing", async () => {
    const { concert, scheduleId, reservationId } = await paidBooking();
    const fan = randomUUID();
    const released = await holds.hold(em(), { userId: fan, concertId: concert.id, scheduleId, seatNumbers: [3] });
    await holds.release(em(), fan, released.id);
    const expiring = await new Holds(new SeatMaps(false), noSupply, 50).hold(em(), { userId: randomUUID(), concertId: concert.id, scheduleId, seatNumbers: [4] });
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const hold of [released, expiring]) {
      const claim = { reservationId: hold.id, scheduleId, seatNumber: hold.seatNumbers[0]! };
      for (let i = 0; i < 2; i++) expect(await tickets.scan(em(), { code: codes.sign(claim), scheduleId, gate: "South" })).toMatchObject({ result: "VOID", ticket: claim });
    }
    // So is a code for a seat the paid booking does not have (it has 2 and 5), or for a booking that does not exist.
    expect((await tickets.scan(em(), { code: codes.sign({ reservationId, scheduleId, seatNumber: 3 }), scheduleId, gate: "South" })).result).toBe("VOID");
    expect((await tickets.scan(em(), { code: codes.sign({ reservationId: randomUUID(), scheduleId, seatNumber: 1 }), scheduleId, gate: "South" })).result).toBe("VOID");
    const rows = await em()
      .getConnection()
      .execute<{ n: number }[]>(`select count(*)::int as n from "concert"."ticket_scan" where reservation_id = any(?::uuid[])`, [`{${released.id},${expiring.id}}`]);
    expect(rows[0]!.n).toBe(0);
  });
});

// ---------------------------------------------------------------- the RPCs, on two instances

describe("TicketService and TicketScannerService on two suite instances sharing PostgreSQL", () => {
  let a: Suite;
  let b: Suite;
  const internal = { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } };

  beforeAll(async () => {
    [a, b] = await Promise.all([startTestSuite(), startTestSuite()]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
  });

  /** A new fan's paid booking of `seatNumbers` on a new concert's first date (of two). */
  async function paidBooking(seatNumbers: number[]) {
    const { concertId, scheduleIds } = await concertOnSale(a, [
      { seatCount: 8, price: 250n },
      { seatCount: 8, price: 300n },
    ]);
    const fan = await newUser(a);
    const reservations = client(a, ReservationInternalService);
    const { reservation } = await reservations.holdSeatsForUser({ userId: fan.userId, concertId, scheduleId: scheduleIds[0]!, seatNumbers }, internal);
    await reservations.confirmReservation({ userId: fan.userId, reservationId: reservation!.id, paymentId: randomUUID() }, internal);
    return { fan, concertId, scheduleId: scheduleIds[0]!, otherDate: scheduleIds[1]!, reservationId: reservation!.id };
  }

  it("ListTickets lists a paid booking's tickets with valid codes; 20 scans across two instances admit once; then the ticket reads USED", async () => {
    const { fan, concertId, scheduleId, reservationId } = await paidBooking([4, 3]);
    const { tickets, nextPageToken } = await client(b, TicketService).listTickets({}, bearer(fan.token));
    expect(nextPageToken).toBe("");
    expect(tickets.map((t) => [t.seatNumber, t.state, t.reservationId, t.orderNumber, t.concertId, t.scheduleId, t.price, t.venue])).toEqual([
      [3, TicketState.VALID, reservationId, orderNumber(reservationId), concertId, scheduleId, 250n, "Test Hall"],
      [4, TicketState.VALID, reservationId, orderNumber(reservationId), concertId, scheduleId, 250n, "Test Hall"],
    ]);
    expect(tickets[0]!.concertTitle).toMatch(/^Test concert /);
    for (const ticket of tickets) expect(codes.verify(ticket.code)).toEqual({ reservationId, scheduleId, seatNumber: ticket.seatNumber });

    const [ticket] = tickets;
    const scans = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client(i % 2 ? b : a, TicketScannerService, i % 3 ? "grpc" : "connect").scanTicket({ code: ticket!.code, scheduleId, gate: `Gate ${i % 5}` }, scanner)),
    );
    const admitted = scans.filter((scan) => scan.result === ScanResult.ADMITTED);
    expect(admitted).toHaveLength(1);
    const first = { at: timestampMs(admitted[0]!.usedAt!), gate: admitted[0]!.usedGate };
    const others = scans.filter((scan) => scan.result !== ScanResult.ADMITTED);
    expect(others.map((scan) => [ScanResult[scan.result], timestampMs(scan.usedAt!), scan.usedGate])).toEqual(Array(19).fill(["ALREADY_USED", first.at, first.gate]));
    for (const scan of scans) {
      expect([scan.orderNumber, scan.seatNumber, scan.scheduleId, timestampMs(scan.startsAt!)]).toEqual([orderNumber(reservationId), 3, scheduleId, timestampMs(ticket!.startsAt!)]);
    }

    const after = (await client(a, TicketService).listTickets({}, bearer(fan.token))).tickets;
    expect(after.map((t) => [t.seatNumber, TicketState[t.state], t.usedAt && timestampMs(t.usedAt), t.gate])).toEqual([
      [3, "USED", first.at, first.gate],
      [4, "VALID", undefined, ""],
    ]);
    // Another fan sees none of them.
    expect((await client(a, TicketService).listTickets({}, bearer((await newUser(a)).token))).tickets).toEqual([]);
  });

  it("answers VOID, WRONG_DATE and FORGED as results, with what the scanner can show", async () => {
    const { fan, scheduleId, otherDate, reservationId } = await paidBooking([1]);
    const [ticket] = (await client(a, TicketService).listTickets({}, bearer(fan.token))).tickets;
    const scan = (code: string, on = scheduleId) => client(b, TicketScannerService).scanTicket({ code, scheduleId: on, gate: "East" }, scanner);

    const wrong = await scan(ticket!.code, otherDate);
    expect([ScanResult[wrong.result], wrong.orderNumber, wrong.seatNumber, wrong.scheduleId, timestampMs(wrong.startsAt!), wrong.usedAt]).toEqual([
      "WRONG_DATE",
      orderNumber(reservationId),
      1,
      scheduleId,
      timestampMs(ticket!.startsAt!),
      undefined,
    ]);
    const forged = await scan(oneCharacterChanged(ticket!.code, 40));
    expect(forged).toMatchObject({ result: ScanResult.FORGED, orderNumber: "", seatNumber: 0, scheduleId: "", usedGate: "" });
    expect((await scan("https://example.com/not-a-ticket")).result).toBe(ScanResult.FORGED);

    // A hold released before it was paid: no ticket was ever listed, but a genuine code for it admits nobody.
    const other = await newUser(a);
    const reservations = client(a, ReservationInternalService);
    const { concertId } = (await client(a, TicketService).listTickets({}, bearer(fan.token))).tickets[0]!;
    const { reservation } = await reservations.holdSeatsForUser({ userId: other.userId, concertId, scheduleId, seatNumbers: [2] }, internal);
    await reservations.releaseUserHold({ userId: other.userId, reservationId: reservation!.id }, internal);
    const voided = await scan(codes.sign({ reservationId: reservation!.id, scheduleId, seatNumber: 2 }));
    expect([ScanResult[voided.result], voided.orderNumber, voided.seatNumber]).toEqual(["VOID", orderNumber(reservation!.id), 2]);
    expect((await client(a, TicketService).listTickets({}, bearer(other.token))).tickets).toEqual([]);
    // The real ticket is untouched by all of that.
    expect((await scan(ticket!.code)).result).toBe(ScanResult.ADMITTED);
  });

  it("ScanTicket needs the scanner key: no credentials, a user token or the operator key are PERMISSION_DENIED SCANNER_ONLY", async () => {
    const { fan, scheduleId } = await paidBooking([2]);
    const [ticket] = (await client(a, TicketService).listTickets({}, bearer(fan.token))).tickets;
    const door = client(a, TicketScannerService);
    for (const options of [{}, bearer(fan.token), operator, bearer(`${testSecrets.SCANNER_KEY}x`), { headers: { "x-internal-credential": testSecrets.INTERNAL_CREDENTIAL } }]) {
      await refused(door.scanTicket({ code: ticket!.code, scheduleId, gate: "West" }, options), Code.PermissionDenied, Reason.SCANNER_ONLY);
    }
    // Nothing was admitted by the refused calls; the scanner key opens ScanTicket only, not an admin RPC.
    expect((await door.scanTicket({ code: ticket!.code, scheduleId, gate: "West" }, scanner)).result).toBe(ScanResult.ADMITTED);
    await refused(client(a, (await import("../gen/boxoffice/concert/v1/concert_pb.js")).ConcertAdminService).listSeatCounts({}, scanner), Code.PermissionDenied, Reason.OPERATOR_ONLY);
    await refused(client(a, TicketService).listTickets({}), Code.Unauthenticated, Reason.TOKEN_MISSING);
  });

  it("answers unreadable requests with INVALID_ARGUMENT naming the field", async () => {
    const { fan, scheduleId } = await paidBooking([6]);
    const [ticket] = (await client(a, TicketService).listTickets({}, bearer(fan.token))).tickets;
    const door = client(a, TicketScannerService);
    await invalid(door.scanTicket({ code: "", scheduleId, gate: "Main" }, scanner), "code");
    await invalid(door.scanTicket({ code: ticket!.code, scheduleId: "tomorrow", gate: "Main" }, scanner), "schedule_id");
    await invalid(door.scanTicket({ code: ticket!.code, scheduleId: "", gate: "Main" }, scanner), "schedule_id");
    await invalid(door.scanTicket({ code: ticket!.code, scheduleId, gate: "" }, scanner), "gate");
    await invalid(door.scanTicket({ code: ticket!.code, scheduleId, gate: "g".repeat(101) }, scanner), "gate");
    await invalid(door.scanTicket({ code: ticket!.code, scheduleId, gate: "bad\u0000gate" }, scanner), "gate");
    await invalid(client(a, TicketService).listTickets({ pageSize: 101 }, bearer(fan.token)), "page_size");
    await invalid(client(a, TicketService).listTickets({ pageToken: "garbage" }, bearer(fan.token)), "page_token");
    // None of them used the ticket.
    expect((await door.scanTicket({ code: ticket!.code, scheduleId, gate: "Main" }, scanner)).result).toBe(ScanResult.ADMITTED);
  });

  it("pages by booking, newest first, each page with every ticket of its bookings", async () => {
    const first = await paidBooking([1, 2]);
    // The same fan books on another concert later.
    const { concertId, scheduleIds } = await concertOnSale(a, [{ seatCount: 4, price: 10n }]);
    const reservations = client(a, ReservationInternalService);
    const { reservation } = await reservations.holdSeatsForUser({ userId: first.fan.userId, concertId, scheduleId: scheduleIds[0]!, seatNumbers: [3] }, internal);
    await reservations.confirmReservation({ userId: first.fan.userId, reservationId: reservation!.id, paymentId: randomUUID() }, internal);

    const service = client(a, TicketService);
    const one = await service.listTickets({ pageSize: 1 }, bearer(first.fan.token));
    expect(one.tickets.map((t) => [t.reservationId, t.seatNumber])).toEqual([[reservation!.id, 3]]);
    const two = await service.listTickets({ pageSize: 1, pageToken: one.nextPageToken }, bearer(first.fan.token));
    expect(two.tickets.map((t) => [t.reservationId, t.seatNumber])).toEqual([
      [first.reservationId, 1],
      [first.reservationId, 2],
    ]);
    expect(two.nextPageToken).toBe("");
  });
});
