import { createHmac, timingSafeEqual } from "node:crypto";

/** What a queue token names: one entry of one user in one concert's waiting room. */
export interface QueueTicket {
  concertId: string;
  userId: string;
  seq: number;
}

const tokenPattern = /^q1\.([0-9a-f-]{36})\.([0-9a-f-]{36})\.([1-9][0-9]{0,15})\.([A-Za-z0-9_-]{22})$/;

/**
 * Queue tokens are `q1.<concert>.<user>.<seq>.<mac>`: the MAC (HMAC-SHA256,
 * 128 bits kept) binds the token to the user, the concert and the entry, so a
 * token cannot be guessed, forged or moved to another fan or concert. The same
 * entry always gives the same token, which makes entering again idempotent.
 */
export class QueueTokens {
  readonly #key: Buffer;

  constructor(secret: string) {
    // A key of its own, derived from the shared secret, so a queue token is never a valid anything-else.
    this.#key = createHmac("sha256", secret).update("boxoffice queue token v1").digest();
  }

  sign(ticket: QueueTicket): string {
    const body = `${ticket.concertId}.${ticket.userId}.${ticket.seq}`;
    return `q1.${body}.${this.#mac(body)}`;
  }

  /** The ticket a token names, or undefined when it is malformed or forged. */
  verify(token: string): QueueTicket | undefined {
    const match = tokenPattern.exec(token);
    if (!match) return undefined;
    const [, concertId, userId, seq, mac] = match as unknown as [string, string, string, string, string];
    const expected = this.#mac(`${concertId}.${userId}.${seq}`);
    if (!timingSafeEqual(Buffer.from(mac), Buffer.from(expected))) return undefined;
    return { concertId, userId, seq: Number(seq) };
  }

  /**
   * The entry's id in a sale's draw: 128 bits of an HMAC of the entry under
   * this service's key, in hex. Random to anyone else, and it does not name the
   * fan; the same entry always has the same id, so it needs no storing.
   */
  entryId(ticket: QueueTicket): string {
    return createHmac("sha256", this.#key).update(`entry.${ticket.concertId}.${ticket.userId}.${ticket.seq}`).digest().subarray(0, 16).toString("hex");
  }

  /** 128 bits of HMAC-SHA256, as 22 base64url characters. */
  #mac(body: string): string {
    return createHmac("sha256", this.#key).update(body).digest().subarray(0, 16).toString("base64url");
  }
}
