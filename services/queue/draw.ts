import { createHash, createHmac } from "node:crypto";

/**
 * The pre-queue's draw, as GetSaleFairness documents it: the order is the
 * entry ids sorted by HMAC-SHA256(key = the seed's 32 bytes, message = the
 * entry id in ASCII), ascending as bytes; the 1-based index is the drawn
 * place. The seed's commitment is SHA-256 of those 32 bytes, in hex.
 * (services/queue/verify-draw.ts recomputes both without this module.)
 */
export const drawMethod =
  "place = 1-based index of the entry id when the list is sorted ascending by HMAC-SHA256(key = hex-decoded seed, message = entry id as ASCII); commitment = hex SHA-256 of the hex-decoded seed";

export function commitmentOf(seedHex: string): string {
  return createHash("sha256").update(Buffer.from(seedHex, "hex")).digest("hex");
}

/** The entry ids in drawn order. */
export function drawnOrder(seedHex: string, entryIds: string[]): string[] {
  const key = Buffer.from(seedHex, "hex");
  const keyed = entryIds.map((id) => ({ id, mac: createHmac("sha256", key).update(id, "ascii").digest() }));
  keyed.sort((a, b) => Buffer.compare(a.mac, b.mac) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return keyed.map((entry) => entry.id);
}
