import type { Client } from "@connectrpc/connect";
import type { ConcertInternalService } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { callDependency } from "../platform/clients.js";

/** A concert's seats by state, over all its dates. */
export interface Supply {
  total: number;
  available: number;
  held: number;
  sold: number;
}

/** Where the queue learns what is left to sell. Throws NotFound for an unknown concert. */
export interface SupplySource {
  of(concertId: string): Promise<Supply>;
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

  constructor(
    private readonly concerts: Client<typeof ConcertInternalService>,
    private readonly maxAgeMs = 1_000,
    private readonly clock: () => number = Date.now,
  ) {}

  forget(concertId: string) {
    this.#cache.delete(concertId);
  }

  of(concertId: string): Promise<Supply> {
    const now = this.clock();
    const cached = this.#cache.get(concertId);
    if (cached && now - cached.at < this.maxAgeMs) return cached.result;
    const result = callDependency("concert", () => this.concerts.getConcertSupply({ concertId }));
    this.#cache.set(concertId, { at: now, result });
    result.catch(() => {
      if (this.#cache.get(concertId)?.result === result) this.#cache.delete(concertId);
    });
    return result;
  }
}
