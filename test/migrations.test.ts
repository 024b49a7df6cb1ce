import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedPostgres } from "../services/platform/embedded-postgres.js";
import { afterAll, describe, expect, it } from "vitest";
import { Holds, holdStateNow } from "../services/concert/holds.js";
import { concertModule } from "../services/concert/index.js";
import { SeatMaps } from "../services/concert/seat-maps.js";
import { openDatabase, statementsOn } from "../services/platform/database.js";
import { modules } from "../services/modules.js";
import { createDatabase, dropDatabase } from "./databases.js";

const name = `boxoffice_migrations_${process.pid}_${Date.now().toString(36)}`;
afterAll(() => dropDatabase(name));

describe("committed migrations", () => {
  it.each(modules.filter((m) => m.database).map((m) => [m.name, m] as const))(
    "bring an empty %s schema exactly to its entities, applied once by three instances starting together",
    async (_name, module) => {
      const url = await createDatabase(name);
      const opened = await Promise.all([1, 2, 3].map(() => openDatabase(module.database!, { url, poolSize: 2 })));
      try {
        const orm = opened[0]!;
        const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, schema: module.database!.schema });
        // The ORM does not know the migrator's own bookkeeping table; everything else must match.
        const drift = diff.split("\n").filter((line) => line.trim() !== "" && !line.includes("mikro_orm_migrations"));
        expect(drift).toEqual([]);
        expect(await orm.migrator.getPending()).toEqual([]);
        const executed = await orm.migrator.getExecuted();
        expect(executed.map((m) => m.name)).toEqual(module.database!.migrations.map((m) => m.name));
      } finally {
        await Promise.all(opened.map((orm) => orm.close()));
      }
    },
  );
});

/** A database to upgrade, on the test PostgreSQL server or an embedded PGlite (the data folder of `npm start` before the change). */
const upgradeDatabases = [
  {
    name: "PostgreSQL",
    poolSize: 2,
    open: async () => {
      const upgradeName = `${name}_upgrade`;
      return { url: await createDatabase(upgradeName), close: () => dropDatabase(upgradeName) };
    },
  },
  {
    name: "embedded PGlite",
    poolSize: 1,
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), "boxoffice-upgrade-"));
      const embedded = await startEmbeddedPostgres(dir);
      return { url: embedded.url, close: async () => (await embedded.stop(), rmSync(dir, { recursive: true, force: true })) };
    },
  },
];

describe.each(upgradeDatabases)("upgrading a $name database at the schema before holds moved beside their seats", ({ open, poolSize }) => {
  it("keeps its live holds and sales: the records move to concert.hold, the old schema goes, and holds release, sell and expire as before", async () => {
    const { url, close } = await open();
    const concertSpec = concertModule.database!;
    try {
      // The concert schema as it stood, and the reservation service's table as its last migration made it.
      const before = await openDatabase({ ...concertSpec, migrations: concertSpec.migrations.slice(0, 3) }, { url, poolSize });
      const db = before.em.getConnection();
      const [concert, schedule] = [{ id: randomUUID() }, { id: randomUUID() }];
      // A concert with one date of five seats, as that schema stored it (today's createConcert writes the sale's columns too).
      await db.execute(`insert into "concert"."concert" (id, title, venue, created_at) values (?, 'Before', 'Hall', now())`, [concert.id]);
      await db.execute(`insert into "concert"."schedule" (id, concert_id, starts_at, seat_count) values (?, ?, now() + interval '1 day', 5)`, [schedule.id, concert.id]);
      await db.execute(`insert into "concert"."seat" (schedule_id, number, price) select ?, number, 100 from generate_series(1, 5) number`, [schedule.id]);
      const fan = randomUUID();
      const [live, sold, stale, payment] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
      // A crash of the old layout between selling the seats and recording the sale: seat 5 SOLD, its record still HELD.
      const [soldFirst, soldFirstPayment, otherFan] = [randomUUID(), randomUUID(), randomUUID()];
      await db.execute(`create schema "reservation"`);
      await db.execute(legacyReservationTable);
      await db.execute(
        `insert into "reservation"."reservation" (id, user_id, concert_id, schedule_id, seat_numbers, amount, state, expires_at, created_at, payment_id) values
           (?, ?, ?, ?, '[1]', 100, 'HELD', now() + interval '5 minutes', now(), null),
           (?, ?, ?, ?, '[2]', 100, 'CONFIRMED', now() - interval '1 minute', now(), ?),
           (?, ?, ?, ?, '[3]', 100, 'HELD', now() - interval '1 second', now(), null),
           (?, ?, ?, ?, '[5]', 100, 'HELD', now() + interval '5 minutes', now(), null)`,
        [live, fan, concert.id, schedule!.id, sold, fan, concert.id, schedule!.id, payment, stale, randomUUID(), concert.id, schedule!.id, soldFirst, otherFan, concert.id, schedule!.id],
      );
      await db.execute(
        `update "concert"."seat" set state = case number when 2 then 'SOLD' else 'HELD' end,
                reservation_id = case number when 1 then ?::uuid when 2 then ?::uuid else ?::uuid end,
                held_until = case number when 1 then now() + interval '5 minutes' when 2 then null else now() - interval '1 second' end
          where schedule_id = ? and number in (1, 2, 3)`,
        [live, sold, stale, schedule!.id],
      );
      await db.execute(`update "concert"."seat" set state = 'SOLD', reservation_id = ? where schedule_id = ? and number = 5`, [soldFirst, schedule!.id]);
      await before.close();

      const after = await openDatabase(concertSpec, { url, poolSize });
      try {
        const em = () => after.em.fork();
        const conn = em().getConnection();
        expect(await conn.execute(`select to_regclass('"reservation"."reservation"') as gone`)).toEqual([{ gone: null }]);
        const holds = new Holds(new SeatMaps(false), { seatsFreed: async () => {} }, 60_000);
        expect((await holds.get(statementsOn(em()), fan, sold)).state).toBe("CONFIRMED");
        expect(holdStateNow(await holds.get(statementsOn(em()), fan, live))).toBe("HELD");
        // The live hold is released, seats and record together; the sale stays; the stale hold is swept.
        expect((await holds.release(em(), fan, live)).state).toBe("RELEASED");
        expect(await holds.sweep(em())).toBe(1);
        const seats = await conn.execute<{ number: number; state: string }[]>(`select number, state from "concert"."seat" where schedule_id = ? order by number`, [schedule!.id]);
        expect(seats.map((seat) => seat.state)).toEqual(["AVAILABLE", "SOLD", "AVAILABLE", "AVAILABLE", "SOLD"]);
        // The sale the crash left half-recorded is confirmed when its payment is driven again.
        expect(await holds.confirm(em(), { userId: otherFan, reservationId: soldFirst, paymentId: soldFirstPayment, amount: 100 })).toMatchObject({
          state: "CONFIRMED",
          paymentId: soldFirstPayment,
        });
        // And new holds are sold as before.
        const fresh = await holds.hold(em(), { userId: fan, concertId: concert.id, scheduleId: schedule!.id, seatNumbers: [1, 4] });
        expect((await holds.confirm(em(), { userId: fan, reservationId: fresh.id, paymentId: randomUUID() })).state).toBe("CONFIRMED");
      } finally {
        await after.close();
      }
    } finally {
      await close();
    }
  });
});

/** The reservation service's table as its migration (Migration20261124020000_reservations, now retired) created it. */
const legacyReservationTable = `create table "reservation"."reservation" ("id" uuid not null, "user_id" uuid not null, "concert_id" uuid not null,
  "schedule_id" uuid not null, "seat_numbers" jsonb not null, "amount" bigint not null, "state" text not null, "expires_at" timestamptz not null,
  "created_at" timestamptz not null, "payment_id" uuid null, primary key ("id"));
  create unique index "reservation_one_hold_per_date" on "reservation"."reservation" ("user_id", "schedule_id") where "state" = 'HELD';`;
