import type { MikroORM } from "@mikro-orm/postgresql";
import { Concert } from "./concert.entity.js";
import { createConcert, defaultSeatCount, type ConcertDraft } from "./catalog.js";

const day = 24 * 3600 * 1000;

function demoConcerts(now: Date): ConcertDraft[] {
  const at = (days: number, hour: number) => {
    const date = new Date(now.getTime() + days * day);
    date.setUTCHours(hour, 0, 0, 0);
    return date;
  };
  const dates = (first: number, count: number, hour: number, price: number) =>
    Array.from({ length: count }, (_, i) => ({ startsAt: at(first + i, hour), seatCount: defaultSeatCount, price }));
  return [
    { title: "IU — The Golden Hour", venue: "Olympic Main Stadium, Seoul", schedules: dates(30, 3, 10, 150_000) },
    { title: "Seoul Philharmonic: Mahler 2", venue: "Lotte Concert Hall, Seoul", schedules: dates(45, 2, 11, 90_000) },
    { title: "Jazz at Midnight", venue: "Blue Note, Busan", schedules: dates(14, 4, 13, 55_000) },
  ];
}

/**
 * Loads the demo concerts into an empty catalog. Instances starting together
 * serialise on an advisory lock, so the demo is loaded once.
 */
export async function seedDemo(orm: MikroORM, now = new Date()): Promise<boolean> {
  return orm.em.fork().transactional(async (em) => {
    await em.getConnection().execute(`select pg_advisory_xact_lock(hashtext('boxoffice:concert:demo'))`, [], "all", em.getTransactionContext());
    if ((await em.count(Concert, {})) > 0) return false;
    for (const draft of demoConcerts(now)) await createConcert(em, draft);
    return true;
  });
}
