import type { EntityManager } from "@mikro-orm/postgresql";
import { createHash, createPrivateKey, createPublicKey, hkdfSync, sign, verify, type KeyObject } from "node:crypto";
import { statementsOn } from "../platform/database.js";
import { newestFirst } from "../platform/pagination.js";
import { columns, record, type HoldRow } from "./holds.js";

/** What a ticket code says, and all it says: one seat of one booking, for one date. */
export interface TicketClaim {
  reservationId: string;
  scheduleId: string;
  seatNumber: number;
}

const prefix = "t1.";
const version = 1;
/** version (1 byte), reservation id (16), schedule id (16), seat number (uint32, big-endian). */
const payloadBytes = 1 + 16 + 16 + 4;
const signatureBytes = 64;
/** The DER of an Ed25519 private key in PKCS#8 (RFC 8410) up to its 32-byte seed. */
const pkcs8Ed25519 = Buffer.from("302e020100300506032b657004220420", "hex");

const uuidBytes = (id: string) => Buffer.from(id.replace(/-/g, ""), "hex");
function uuidOf(bytes: Buffer): string {
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Signs and checks ticket codes: `t1.` and the base64url of a compact payload
 * (version, reservation id, schedule id, seat number) and its Ed25519
 * signature. The key pair is derived from TOKEN_SECRET (HKDF-SHA256 to the
 * 32-byte seed), so every instance signs and checks alike with nothing to look
 * up or share, and a door checks a code without the database. A code cannot
 * be guessed: the reservation id in it is a random UUID, and the signature
 * covers every byte.
 */
export class TicketCodes {
  readonly #privateKey: KeyObject;
  readonly #publicKey: KeyObject;

  constructor(tokenSecret: string) {
    const seed = Buffer.from(hkdfSync("sha256", tokenSecret, "boxoffice", "boxoffice ticket code v1", 32));
    this.#privateKey = createPrivateKey({ key: Buffer.concat([pkcs8Ed25519, seed]), format: "der", type: "pkcs8" });
    this.#publicKey = createPublicKey(this.#privateKey);
  }

  sign(claim: TicketClaim): string {
    const payload = Buffer.alloc(payloadBytes);
    payload.writeUInt8(version, 0);
    uuidBytes(claim.reservationId).copy(payload, 1);
    uuidBytes(claim.scheduleId).copy(payload, 17);
    payload.writeUInt32BE(claim.seatNumber, 33);
    return prefix + Buffer.concat([payload, sign(null, payload, this.#privateKey)]).toString("base64url");
  }

  /** The claim of a code this service signed; undefined for anything else (not a code, altered, signed with another key). */
  verify(code: string): TicketClaim | undefined {
    if (!code.startsWith(prefix) || code.length !== prefix.length + Math.ceil(((payloadBytes + signatureBytes) * 4) / 3)) return undefined;
    const text = code.slice(prefix.length);
    const bytes = Buffer.from(text, "base64url");
    // Node's decoder skips what is not base64url, and a last character's unused bits: only the one spelling counts.
    if (bytes.length !== payloadBytes + signatureBytes || bytes.toString("base64url") !== text) return undefined;
    const payload = bytes.subarray(0, payloadBytes);
    if (payload.readUInt8(0) !== version || !verify(null, payload, this.#publicKey, bytes.subarray(payloadBytes))) return undefined;
    return { reservationId: uuidOf(payload.subarray(1, 17)), scheduleId: uuidOf(payload.subarray(17, 33)), seatNumber: payload.readUInt32BE(33) };
  }
}

/** Crockford's base32: no I, L, O or U to misread. */
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/**
 * A booking's order number for people, "BX-7K3Q-9D2M": 40 bits of the SHA-256
 * of its reservation id in Crockford base32. The same on every instance with
 * nothing stored; short enough to read out, so not a key (two bookings in
 * about a million may share one).
 */
export function orderNumber(reservationId: string): string {
  const bits = createHash("sha256").update(`boxoffice order\0${reservationId}`).digest().readBigUInt64BE(0) >> 24n;
  let text = "";
  for (let i = 7; i >= 0; i--) text += crockford[Number((bits >> BigInt(5 * i)) & 31n)];
  return `BX-${text.slice(0, 4)}-${text.slice(4)}`;
}

export type TicketState = "VALID" | "USED" | "VOID";

/** A ticket as its fan sees it. */
export interface TicketRecord extends TicketClaim {
  code: string;
  orderNumber: string;
  concertId: string;
  concertTitle: string;
  venue: string;
  startsAt: Date;
  price: number;
  state: TicketState;
  /** When USED. */
  used?: { at: Date; gate: string };
}

/** One scan at a door: the code as read, the date the door admits to, and where it stands. */
export interface Scan {
  code: string;
  scheduleId: string;
  gate: string;
}

/** What a scan decided; every outcome about the ticket is an answer, not an error. */
export type ScanOutcome =
  | { result: "ADMITTED" | "ALREADY_USED"; ticket: TicketClaim; startsAt: Date | undefined; used: { at: Date; gate: string } }
  | { result: "VOID" | "WRONG_DATE"; ticket: TicketClaim; startsAt: Date | undefined }
  | { result: "FORGED" };

const when = (value: string | Date) => new Date(value);

/**
 * Tickets: one per seat of a paid booking (a hold that was CONFIRMED), valid
 * while its hold stays CONFIRMED, and admitted at the door exactly once.
 */
export class Tickets {
  constructor(private readonly codes: TicketCodes) {}

  /** The tickets of a fan's paid bookings, a page of bookings at a time, newest first. */
  async list(em: EntityManager, userId: string, page: { pageSize: number; pageToken: string }): Promise<{ tickets: TicketRecord[]; nextPageToken: string }> {
    const db = statementsOn(em);
    const found = await newestFirst<HoldRow>(db, { from: `"concert"."hold"`, columns, where: "user_id = $1 and payment_id is not null", params: [userId] }, page);
    const bookings = { rows: found.rows.map(record), nextPageToken: found.nextPageToken };
    if (bookings.rows.length === 0) return { tickets: [], nextPageToken: bookings.nextPageToken };
    const rows = await em.getConnection().execute<
      { reservation_id: string; number: number; price: string; starts_at: string | Date; title: string; venue: string; used_at: string | Date | null; gate: string | null }[]
    >(
      `select hold.id as reservation_id, seat.number, seat.price, schedule.starts_at, concert.title, concert.venue, scan.used_at, scan.gate
         from "concert"."hold" hold
         join "concert"."schedule" schedule on schedule.id = hold.schedule_id
         join "concert"."concert" concert on concert.id = hold.concert_id
         cross join lateral jsonb_array_elements_text(hold.seat_numbers) bought(number)
         join "concert"."seat" seat on seat.schedule_id = hold.schedule_id and seat.number = bought.number::int
         left join "concert"."ticket_scan" scan on scan.reservation_id = hold.id and scan.seat_number = seat.number
        where hold.id = any(?::uuid[])`,
      [`{${bookings.rows.map((hold) => hold.id).join(",")}}`],
    );
    const seats = new Map(rows.map((row) => [`${row.reservation_id}/${row.number}`, row]));
    const tickets = bookings.rows.flatMap((hold) =>
      [...hold.seatNumbers]
        .sort((a, b) => a - b)
        .flatMap((seatNumber): TicketRecord[] => {
          const seat = seats.get(`${hold.id}/${seatNumber}`);
          if (!seat) return [];
          const claim = { reservationId: hold.id, scheduleId: hold.scheduleId, seatNumber };
          const used = seat.used_at === null ? undefined : { at: when(seat.used_at), gate: seat.gate ?? "" };
          return [
            {
              ...claim,
              code: this.codes.sign(claim),
              orderNumber: orderNumber(hold.id),
              concertId: hold.concertId,
              concertTitle: seat.title,
              venue: seat.venue,
              startsAt: when(seat.starts_at),
              price: Number(seat.price),
              state: hold.state !== "CONFIRMED" ? "VOID" : used ? "USED" : "VALID",
              used,
            },
          ];
        }),
    );
    return { tickets, nextPageToken: bookings.nextPageToken };
  }

  /**
   * Admits a ticket at most once. A code that does not verify is FORGED and a
   * code for another date WRONG_DATE, decided before the database is asked.
   * Then one statement marks the seat used on its hold row, only while the
   * hold is CONFIRMED and the seat not used yet, and records the scan
   * (concert.ticket_scan) from that. Concurrent scans of one ticket, on any
   * instances, all update the one hold row: the first takes its lock, and
   * each of the others waits for it and then re-checks the condition on the
   * row as committed, finds the seat used and changes nothing. (Marking the
   * hold row, not only inserting the scan, is what makes a cancellation's
   * conditional update of the hold meet every scan on that row.) A scan that
   * changed nothing reads why in a second statement, whose snapshot sees the
   * first scan: a waiting statement's own snapshot predates it.
   */
  async scan(em: EntityManager, scan: Scan): Promise<ScanOutcome> {
    const ticket = this.codes.verify(scan.code);
    if (!ticket) return { result: "FORGED" };
    const db = em.getConnection();
    const startsAt = `(select starts_at from "concert"."schedule" where id = ?) as starts_at`;
    if (ticket.scheduleId !== scan.scheduleId) {
      const [date] = await db.execute<{ starts_at: string | Date | null }[]>(`select ${startsAt}`, [ticket.scheduleId]);
      return { result: "WRONG_DATE", ticket, startsAt: date?.starts_at ? when(date.starts_at) : undefined };
    }
    const [admitted] = await db.execute<{ used_at: string | Date; gate: string; starts_at: string | Date | null }[]>(
      `with marked as (
         update "concert"."hold" hold set used_seats = array_append(hold.used_seats, ?::int)
          where hold.id = ? and hold.schedule_id = ? and hold.state = 'CONFIRMED'
            and hold.seat_numbers @> to_jsonb(?::int) and not (?::int = any(hold.used_seats))
         returning hold.id),
       scanned as (
         insert into "concert"."ticket_scan" (reservation_id, seat_number, used_at, gate)
         select id, ?::int, now(), ? from marked
         returning used_at, gate)
       select used_at, gate, ${startsAt} from scanned`,
      [ticket.seatNumber, ticket.reservationId, ticket.scheduleId, ticket.seatNumber, ticket.seatNumber, ticket.seatNumber, scan.gate, ticket.scheduleId],
    );
    if (admitted) return { result: "ADMITTED", ticket, startsAt: admitted.starts_at ? when(admitted.starts_at) : undefined, used: { at: when(admitted.used_at), gate: admitted.gate } };
    const [why] = await db.execute<{ used_at: string | Date | null; gate: string | null; starts_at: string | Date | null }[]>(
      `select scan.used_at, scan.gate, ${startsAt}
         from (select 1) one left join "concert"."ticket_scan" scan on scan.reservation_id = ? and scan.seat_number = ?`,
      [ticket.scheduleId, ticket.reservationId, ticket.seatNumber],
    );
    const date = why?.starts_at ? when(why.starts_at) : undefined;
    // A ticket once admitted stays used; one never admitted whose hold is not CONFIRMED admits nobody.
    if (why?.used_at) return { result: "ALREADY_USED", ticket, startsAt: date, used: { at: when(why.used_at), gate: why.gate ?? "" } };
    return { result: "VOID", ticket, startsAt: date };
  }
}
