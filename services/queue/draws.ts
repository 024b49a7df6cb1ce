import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import type { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { callDependency } from "../platform/clients.js";
import { logger } from "../platform/log.js";
import { commitmentOf, drawnOrder } from "./draw.js";
import type { QueueTokens } from "./queue-tokens.js";
import type { QueueStore, Ticket } from "./store.js";

/** A sale's published draw. */
export interface DrawRecord {
  seed: string;
  /** Ascending by the ids themselves. */
  entryIds: string[];
  drawnAt: Date;
}

/** Sales' draws in PostgreSQL (queue.draw), per deployment scope as the rooms are. */
export class Draws {
  constructor(
    private readonly orm: MikroORM,
    private readonly scope: string,
  ) {}

  async get(concertId: string): Promise<DrawRecord | undefined> {
    const [row] = await this.orm.em
      .getConnection()
      .execute<{ seed: string; entry_ids: string[]; drawn_at: string | Date }[]>(`select seed, entry_ids, drawn_at from "queue"."draw" where scope = ? and concert_id = ?`, [
        this.scope,
        concertId,
      ]);
    return row && { seed: row.seed, entryIds: row.entry_ids, drawnAt: new Date(row.drawn_at) };
  }

  /** Records the draw; the first record stands (every drawer of one frozen pre-queue writes the same one). */
  async record(concertId: string, draw: DrawRecord): Promise<void> {
    await this.orm.em
      .getConnection()
      .execute(`insert into "queue"."draw" (scope, concert_id, seed, entry_ids, drawn_at) values (?, ?, ?, ?::jsonb, ?) on conflict do nothing`, [
        this.scope,
        concertId,
        draw.seed,
        JSON.stringify(draw.entryIds),
        draw.drawnAt,
      ]);
  }
}

/** Where a sale's seed comes from: the concert service, which reveals it only once the sale has opened. */
export interface SeedSource {
  /** The commitment, the opening and, once opened, the seed (else undefined). */
  sale(concertId: string): Promise<{ commitment: string; saleOpensAt: Date | undefined; seed: string | undefined }>;
}

export function concertSeeds(concerts: Client<typeof ConcertInternalService>): SeedSource {
  return {
    async sale(concertId) {
      const sale = await callDependency("concert", () => concerts.getSale({ concertId }));
      return {
        commitment: sale.seedCommitment,
        saleOpensAt: sale.saleOpensAt && timestampDate(sale.saleOpensAt),
        seed: sale.seed || undefined,
      };
    },
  };
}

/** How many entries one call to the store places. */
const placeBatch = 5_000;

/**
 * The pre-queue's draw at the sale's opening: the frozen pre-queue's entry
 * ids, sorted by HMAC-SHA256 under the seed the concert service reveals,
 * recorded for GetSaleFairness, then put into the line in that order. Any
 * instance may run it, and run it again after a crash: the order is a
 * function of the seed and the list, so every run lands in the same place.
 */
export class SaleDraw {
  constructor(
    private readonly store: QueueStore,
    private readonly draws: Pick<Draws, "record">,
    private readonly seeds: SeedSource,
    private readonly tokens: QueueTokens,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Draws the room's frozen pre-queue; false when it cannot yet (the concert service has not revealed the seed). */
  async run(concertId: string): Promise<boolean> {
    const { draw, tickets } = await this.store.prequeue(concertId);
    if (draw !== "DRAWING") return true;
    const { seed, commitment } = await this.seeds.sale(concertId);
    if (!seed) return false;
    if (commitmentOf(seed) !== commitment) throw new Error(`the seed revealed for concert ${concertId} does not match its commitment`);
    const byId = new Map<string, Ticket>(tickets.map((ticket) => [this.tokens.entryId({ concertId, ...ticket }), ticket]));
    const order = drawnOrder(seed, [...byId.keys()]);
    await this.draws.record(concertId, { seed, entryIds: [...byId.keys()].sort(), drawnAt: new Date(this.clock()) });
    const now = this.clock();
    for (let from = 0; from === 0 || from < order.length; from += placeBatch) {
      const chunk = order.slice(from, from + placeBatch).map((id) => byId.get(id)!);
      await this.store.place(concertId, chunk, from + 1, from + placeBatch >= order.length, now);
    }
    logger("queue").info({ concertId, entries: order.length }, "the pre-queue was drawn; its order is published");
    return true;
  }
}

/** What GetSaleFairness shows: only the commitment until the draw, then the seed and the list. */
export interface Fairness {
  drawn: boolean;
  commitment: string;
  saleOpensAt: Date | undefined;
  draw?: DrawRecord;
}

/**
 * Clocks of queue instances may differ this much: a room nobody has entered is
 * only said to have had no pre-queue (and its seed shown) this long after the
 * opening, when no instance can still take a pre-queue entry.
 */
const openingSkewMs = 5_000;

/**
 * A sale's fairness record, for anyone to check. The seed is shown with the
 * draw's record; without one, only when the room can have had no pre-queue:
 * it opened without one, or nobody is in it well after the opening. Else
 * (the draw under way, or due) only the commitment: a seed shown while
 * pre-queue entries can still be made would let a fan re-enter until their
 * entry id draws well.
 */
export async function saleFairness(concertId: string, draws: Pick<Draws, "get">, seeds: SeedSource, store: QueueStore, now = Date.now()): Promise<Fairness> {
  const [sale, draw] = await Promise.all([seeds.sale(concertId), draws.get(concertId)]);
  const shown = { commitment: sale.commitment, saleOpensAt: sale.saleOpensAt };
  if (draw) return { ...shown, drawn: true, draw };
  if (!sale.seed || !sale.saleOpensAt) return { ...shown, drawn: false };
  const { draw: state } = await store.prequeue(concertId);
  const none = { ...shown, drawn: true, draw: { seed: sale.seed, entryIds: [], drawnAt: sale.saleOpensAt } };
  // OPEN with no record: it opened without a pre-queue (a draw records before it places).
  if (state === "OPEN") return none;
  if (state === "PREQUEUE" && now >= sale.saleOpensAt.getTime() + openingSkewMs && (await store.counts(concertId, now)).waiting === 0) return none;
  return { ...shown, drawn: false };
}
