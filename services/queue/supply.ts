import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { ConcertPhase, type ConcertInternalService, type GetConcertSupplyResponse } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { callDependency } from "../platform/clients.js";

/** A concert's sale as the waiting room goes by it: its times (ms) and whether it can happen at all. */
export interface Sale {
  /** Not a draft (published, or cancelled since): a draft's room cannot be entered, and its times may still change. */
  published: boolean;
  cancelled: boolean;
  cancelReason: string;
  prequeueOpensAt: number;
  saleOpensAt: number;
  /** The earlier of sale_closes_at and the start of the last date. */
  saleEndsAt: number;
}

/** A concert's seats by state, over all its dates, and its sale. */
export interface Supply {
  total: number;
  available: number;
  held: number;
  sold: number;
  sale: Sale;
}

function supplyOf(answer: GetConcertSupplyResponse): Supply {
  const ms = (at: typeof answer.saleOpensAt, otherwise: number) => (at ? timestampMs(at) : otherwise);
  const saleOpensAt = ms(answer.saleOpensAt, 0);
  return {
    total: answer.total,
    available: answer.available,
    held: answer.held,
    sold: answer.sold,
    sale: {
      published: answer.phase !== ConcertPhase.DRAFT && answer.phase !== ConcertPhase.UNSPECIFIED,
      cancelled: answer.phase === ConcertPhase.CANCELLED,
      cancelReason: answer.cancelReason,
      prequeueOpensAt: ms(answer.prequeueOpensAt, saleOpensAt),
      saleOpensAt,
      saleEndsAt: ms(answer.saleEndsAt, Number.MAX_SAFE_INTEGER),
    },
  };
}

/** Where the queue learns what is left to sell. Throws NotFound for an unknown concert. */
export interface SupplySource {
  of(concertId: string): Promise<Supply>;
  /** Throws NotFound for an unknown concert; a concert once found is not looked up again (concerts are never deleted). */
  exists(concertId: string): Promise<void>;
  /**
   * The concert's sale: as last read when that was recent (`of`'s cache),
   * else as last read while a fresh read runs, so that a crowd entering costs
   * no lookup per fan; read now only the first time. NotFound for an unknown concert.
   */
  sale(concertId: string): Promise<Sale>;
  /**
   * The supply as fresh as it can be had within `waitMs`: when a lookup takes
   * longer or fails, the last supply known, if it was asked for within
   * `maxAgeMs`. For the admission tick, which must keep the line moving while
   * the concert service is slow, but not admit on old news while it is down.
   */
  current(concertId: string, waitMs: number, maxAgeMs: number): Promise<Supply>;
  /** Drops what is remembered of the concert's supply, so the next read asks afresh. */
  forget(concertId: string): void;
}

/**
 * Supply read from the concert service, remembered for a short while so that
 * a crowd entering one concert costs one lookup, not one per fan (concurrent
 * callers share the lookup in flight). Failures are not remembered.
 */
export class ConcertSupply implements SupplySource {
  readonly #cache = new Map<string, { at: number; result: Promise<Supply> }>();
  /**
   * Concerts found before. A crowd entering needs only this: under a flash
   * sale's load, a supply lookup per second that runs into its deadline must not
   * fail every fan entering behind it.
   */
  readonly #known = new Set<string>();
  /** The newest supply each concert's lookups answered, and when that lookup was asked. */
  readonly #last = new Map<string, { supply: Supply; askedAt: number }>();

  constructor(
    private readonly concerts: Client<typeof ConcertInternalService>,
    private readonly maxAgeMs = 1_000,
    private readonly clock: () => number = Date.now,
  ) {}

  forget(concertId: string) {
    this.#cache.delete(concertId);
  }

  async exists(concertId: string): Promise<void> {
    if (this.#known.has(concertId)) return;
    await this.of(concertId);
  }

  async sale(concertId: string): Promise<Sale> {
    const known = this.#last.get(concertId);
    if (!known) return (await this.of(concertId)).sale;
    if (this.clock() - known.askedAt >= this.maxAgeMs) this.of(concertId).catch(() => undefined);
    return known.supply.sale;
  }

  async current(concertId: string, waitMs: number, maxAgeMs: number): Promise<Supply> {
    const lookup = this.of(concertId);
    const known = this.#last.get(concertId);
    if (!known || this.clock() - known.askedAt > maxAgeMs) return lookup;
    const last = known.supply;
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<Supply>((resolve) => (timer = setTimeout(() => resolve(last), waitMs)));
    try {
      return await Promise.race([lookup.catch(() => last), waited]);
    } finally {
      clearTimeout(timer);
    }
  }

  of(concertId: string): Promise<Supply> {
    const now = this.clock();
    const cached = this.#cache.get(concertId);
    if (cached && now - cached.at < this.maxAgeMs) return cached.result;
    const result = callDependency("concert", () => this.concerts.getConcertSupply({ concertId })).then(supplyOf);
    this.#cache.set(concertId, { at: now, result });
    result.then(
      (supply) => {
        this.#known.add(concertId);
        // Lookups may answer out of order: an older answer never replaces a newer one.
        if ((this.#last.get(concertId)?.askedAt ?? -Infinity) <= now) this.#last.set(concertId, { supply, askedAt: now });
      },
      () => {
        if (this.#cache.get(concertId)?.result === result) this.#cache.delete(concertId);
      },
    );
    return result;
  }
}
