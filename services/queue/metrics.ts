import type { Metrics } from "../platform/metrics.js";
import type { Rooms } from "./rooms.js";
import type { QueueStore, RoomCounts, RoomSettings } from "./store.js";
import { logger, why } from "../platform/log.js";

/**
 * The waiting rooms as Prometheus sees them, per concert: the line, the
 * admitted sessions, admissions in the last minute, fans who gave up, and
 * whether the room is paused or sold out. Read at each scrape (one store call
 * per room), never on the admission path; while the store is down the gauges
 * are left out and the rest of the scrape still answers.
 */
export function roomMetrics(metrics: Metrics, store: QueueStore, rooms: Rooms): void {
  let reading: Promise<Map<string, { settings: RoomSettings; counts: RoomCounts }>> | undefined;
  let readFor = -1;
  const read = () => {
    // One reading serves every gauge of a scrape.
    if (!reading || readFor !== metrics.scrape) {
      readFor = metrics.scrape;
      reading = (async () => {
        const all = new Map<string, { settings: RoomSettings; counts: RoomCounts }>();
        try {
          for (const [concertId, settings] of await rooms.all()) all.set(concertId, { settings, counts: await store.counts(concertId, Date.now()) });
        } catch (error) {
          logger("metrics").warn(`the waiting rooms could not be read: ${why(error)}`);
          all.clear();
        }
        return all;
      })();
    }
    return reading;
  };
  const perRoom = (name: string, help: string, value: (room: { settings: RoomSettings; counts: RoomCounts }) => number) =>
    metrics.gauge(name, help, ["concert_id"], async (gauge) => {
      for (const [concertId, room] of await read()) gauge.set({ concert_id: concertId }, value(room));
    });
  perRoom("boxoffice_queue_waiting", "Fans waiting in the concert's line", (room) => room.counts.waiting);
  perRoom("boxoffice_queue_admitted", "Admitted sessions open now", (room) => room.counts.admitted);
  perRoom("boxoffice_queue_admissions_last_minute", "Fans admitted in the last 60 s", (room) => room.counts.admittedLastMinute);
  perRoom("boxoffice_queue_abandoned", "Fans who lost their place for silence", (room) => room.counts.abandoned);
  perRoom("boxoffice_queue_paused", "1 while an operator has paused admission", (room) => (room.settings.paused ? 1 : 0));
  perRoom("boxoffice_queue_sold_out", "1 once the concert has no seats left", (room) => (room.settings.soldOut ? 1 : 0));
}
