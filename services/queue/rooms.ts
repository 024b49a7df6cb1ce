import type { MikroORM } from "@mikro-orm/postgresql";
import type { Policy, RoomSettings } from "./store.js";

/** A change an operator (or the sold-out check) makes to a room; unset fields stay. */
export interface RoomChange {
  paused?: boolean;
  soldOut?: boolean;
  closed?: boolean;
  overrides?: Partial<Policy>;
}

interface RoomRow {
  concert_id: string;
  paused: boolean;
  sold_out: boolean;
  closed: boolean;
  random_admission: boolean | null;
  max_active: number | null;
  rate_per_minute: number | null;
  session_ttl_ms: number | null;
  abandon_after_ms: number | null;
  version: string | number;
}

const columns = `concert_id, paused, sold_out, closed, random_admission, max_active, rate_per_minute, session_ttl_ms, abandon_after_ms, version`;
const overrideColumns = {
  maxActive: "max_active",
  ratePerMinute: "rate_per_minute",
  sessionTtlMs: "session_ttl_ms",
  abandonAfterMs: "abandon_after_ms",
  random: "random_admission",
} as const;

/** A room nobody has set anything for: version 0, older than any stored row. */
export const unsetRoom: RoomSettings = { paused: false, soldOut: false, closed: false, overrides: {}, version: 0 };

function settingsOf(row: RoomRow): RoomSettings {
  const overrides: Record<string, unknown> = {};
  for (const [field, column] of Object.entries(overrideColumns)) {
    if (row[column] !== null) overrides[field] = row[column];
  }
  return { paused: row.paused, soldOut: row.sold_out, closed: row.closed, overrides: overrides as Partial<Policy>, version: Number(row.version) };
}

/** A closed room is moved this long after it closed (its sessions run out), then no more. */
const closedRoomsKeptFor = `interval '1 day'`;

/**
 * The rooms and their operator settings in PostgreSQL (queue.room), the
 * source of truth: a store that loses its data is given them again by the
 * next tick, so a paused room stays paused and every room keeps moving.
 * Each method is one statement.
 */
export class Rooms {
  /** Rooms this process has listed: rows are never removed, so one insert per room and process. */
  readonly #listed = new Set<string>();

  /**
   * @param scope the deployment's key prefix (REDIS_KEY_PREFIX): deployments
   * that share a PostgreSQL and a Redis, told apart by it, keep their rooms apart too.
   */
  constructor(
    private readonly orm: MikroORM,
    private readonly scope: string,
  ) {}

  #execute<T>(sql: string, params: unknown[] = []): Promise<T> {
    return this.orm.em.getConnection().execute(sql, params as never[]) as Promise<T>;
  }

  /** Lists the room, so the admission worker moves it, before anyone is put in its line. */
  async list(concertId: string): Promise<void> {
    if (this.#listed.has(concertId)) return;
    await this.#execute(`insert into "queue"."room" (scope, concert_id) values (?, ?) on conflict do nothing`, [this.scope, concertId]);
    this.#listed.add(concertId);
  }

  async get(concertId: string): Promise<RoomSettings> {
    const [row] = await this.#execute<RoomRow[]>(`select ${columns} from "queue"."room" where scope = ? and concert_id = ?`, [this.scope, concertId]);
    return row ? settingsOf(row) : unsetRoom;
  }

  /** Every listed room with its settings, but those closed over a day ago: the admission worker's round. */
  async all(): Promise<Map<string, RoomSettings>> {
    const rows = await this.#execute<RoomRow[]>(
      `select ${columns} from "queue"."room" where scope = ? and (closed_at is null or closed_at > now() - ${closedRoomsKeptFor})`,
      [this.scope],
    );
    return new Map(rows.map((row) => [row.concert_id, settingsOf(row)]));
  }

  /** Applies the change and returns the settings after it, one version on. */
  async change(concertId: string, change: RoomChange): Promise<RoomSettings> {
    const values = new Map<string, unknown>();
    if (change.paused !== undefined) values.set("paused", change.paused);
    if (change.soldOut !== undefined) values.set("sold_out", change.soldOut);
    if (change.closed !== undefined) values.set("closed", change.closed);
    if (change.closed) values.set("closed_at", new Date());
    for (const [field, column] of Object.entries(overrideColumns) as [keyof Policy, string][]) {
      const value = change.overrides?.[field];
      if (value !== undefined) values.set(column, value);
    }
    const changed = [...values.keys()];
    const [row] = await this.#execute<RoomRow[]>(
      `insert into "queue"."room" as room (${["scope", "concert_id", ...changed].join(", ")}) values (${["?", "?", ...changed.map(() => "?")].join(", ")})
       on conflict (scope, concert_id) do update set ${[
         // When it first closed stays.
         ...changed.map((column) => (column === "closed_at" ? `closed_at = coalesce(room.closed_at, excluded.closed_at)` : `${column} = excluded.${column}`)),
         "version = room.version + 1",
         "updated_at = now()",
       ].join(", ")}
       returning ${columns}`,
      [this.scope, concertId, ...values.values()],
    );
    this.#listed.add(concertId);
    return settingsOf(row!);
  }
}
