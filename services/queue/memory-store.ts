import { randomInt } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { DrawState, EntryState, EntryView, Entered, Pace, Policy, QueueStore, RoomCounts, RoomSettings, Ticket, TickInput, TickResult } from "./store.js";
import { minuteMs, overlay, sampleSize } from "./policy.js";
import { logger, why } from "../platform/log.js";

/**
 * Counts present sequence numbers below a bound in O(log n): a Fenwick tree
 * over the entries' sequence numbers, grown by doubling.
 */
class Ranks {
  #tree = new Int32Array(1024);

  add(seq: number, delta: number) {
    while (seq >= this.#tree.length) this.#grow();
    for (let i = seq; i < this.#tree.length; i += i & -i) this.#tree[i]! += delta;
  }

  /** The k-th present number (1-based k, at most the count present). */
  find(k: number): number {
    let at = 0;
    for (let step = this.#tree.length >> 1; step > 0; step >>= 1) {
      const next = at + step;
      if (next < this.#tree.length && this.#tree[next]! < k) {
        at = next;
        k -= this.#tree[next]!;
      }
    }
    return at + 1;
  }

  /** How many present sequence numbers are ≤ seq. */
  upTo(seq: number): number {
    let sum = 0;
    for (let i = Math.min(seq, this.#tree.length - 1); i > 0; i -= i & -i) sum += this.#tree[i]!;
    return sum;
  }

  #grow() {
    // Nodes below the old length keep their ranges; the node at the old length
    // covers everything before it; the nodes after it cover only new, empty seqs.
    const tree = new Int32Array(this.#tree.length * 2);
    tree.set(this.#tree);
    tree[this.#tree.length] = this.upTo(this.#tree.length - 1);
    this.#tree = tree;
  }
}

interface Entry {
  seq: number;
  state: EntryState;
  admittedUntil: number;
  /** While in the line: its place there (the drawn place for the pre-queue, else seq); 0 in the pre-queue. */
  place?: number;
}

/** A room as written to disk at shutdown. */
interface RoomSnapshot {
  seq: number;
  line: [number, string][];
  seen: [string, number][];
  admitted: [string, number][];
  recent: number[];
  entries: [string, Entry][];
  settings: RoomSettings | undefined;
  draw?: DrawState;
  pre?: [string, number][];
  prequeuedUpTo?: number;
  placed?: number;
  supplyOpen: boolean;
  abandoned: number;
  firstAdmissionAt: number;
  lastSessionEnd: number;
  lastTickAt: number;
  presenceFrom: number;
}

class Room {
  seq = 0;
  /** Waiting users by place, and the lowest place that may still be waiting. */
  line = new Map<number, string>();
  head = 1;
  ranks = new Ranks();
  /** Waiting users by last presence; Map order is oldest presence first (a touch re-inserts). */
  seen = new Map<string, number>();
  admitted = new Map<string, number>();
  /** Admission times within the last minute, oldest first. */
  recent: number[] = [];
  entries = new Map<string, Entry>();
  /** The copy of the room's settings; undefined until the first tick or operator change. */
  settings: RoomSettings | undefined;
  /** See DrawState; undefined until the first entry or tick. */
  draw: DrawState | undefined;
  /** The pre-queue: user -> seq, in arrival order. */
  pre = new Map<string, number>();
  /** See Pace.prequeuedUpTo. */
  prequeuedUpTo = 0;
  /** Entries of the frozen pre-queue the draw has placed so far (the pre-queue stays whole until its last chunk). */
  placed = 0;
  supplyOpen = true;
  abandoned = 0;
  firstAdmissionAt = 0;
  /** When the last admitted session ends. */
  lastSessionEnd = 0;
  /** The last tick, and since when presence has been counted without a gap (see TickInput.stalledAfterMs). */
  lastTickAt = 0;
  presenceFrom = 0;

  get soldOut() {
    return this.settings?.soldOut ?? false;
  }

  /** The state a waiting entry of an ended sale reads, if it has ended. */
  get ended(): EntryState | undefined {
    if (this.settings?.closed) return "CLOSED";
    return this.soldOut ? "SOLD_OUT" : undefined;
  }

  /** The draw state as of now: the first call at or after the opening freezes the pre-queue. */
  drawState(now: number, saleOpensAt: number): DrawState {
    if (now >= saleOpensAt) {
      if (this.draw === "PREQUEUE") {
        this.draw = "DRAWING";
        this.prequeuedUpTo = this.seq;
      } else if (this.draw === undefined) this.draw = "OPEN";
    } else if (this.draw === undefined) {
      this.draw = "PREQUEUE";
    }
    return this.draw;
  }

  /** Into the line at `place`. */
  addWaiting(userId: string, entry: Entry, place: number, now: number) {
    entry.place = place;
    this.line.set(place, userId);
    this.ranks.add(place, 1);
    this.head = Math.min(this.head, place);
    this.seen.set(userId, now);
  }

  /** Takes settings newer than the copy; true when there was no copy. */
  apply(settings: RoomSettings): boolean {
    const had = this.settings;
    if (had && had.version >= settings.version) return false;
    this.settings = settings;
    if (settings.soldOut || settings.closed) {
      this.line.clear();
      this.seen.clear();
      this.pre.clear();
      this.ranks = new Ranks();
    }
    return had === undefined;
  }

  view(ticket: Ticket, now: number): EntryView {
    const entry = this.entries.get(ticket.userId);
    if (!entry) return ended("LOST");
    if (entry.seq !== ticket.seq) return ended("EXPIRED");
    switch (entry.state) {
      case "WAITING": {
        const over = this.ended;
        if (over) return ended(over);
        // While the draw places the pre-queue, its unplaced entries may be ahead; no one is further back than their place number.
        if (entry.place) return { state: "WAITING", position: Math.min(this.ranks.upTo(entry.place) + this.pre.size - this.placed, entry.place), admittedUntil: 0 };
        return ended(this.pre.has(ticket.userId) ? "PREQUEUED" : "EXPIRED");
      }
      case "ADMITTED":
        return entry.admittedUntil > now ? { state: "ADMITTED", position: 0, admittedUntil: entry.admittedUntil } : ended("EXPIRED");
      default:
        return ended(entry.state);
    }
  }

  /** Everything but the ranks, which the line gives back. */
  snapshot(): RoomSnapshot {
    return {
      seq: this.seq,
      line: [...this.line],
      seen: [...this.seen],
      admitted: [...this.admitted],
      recent: this.recent,
      entries: [...this.entries],
      settings: this.settings,
      draw: this.draw,
      pre: [...this.pre],
      prequeuedUpTo: this.prequeuedUpTo,
      placed: this.placed,
      supplyOpen: this.supplyOpen,
      abandoned: this.abandoned,
      firstAdmissionAt: this.firstAdmissionAt,
      lastSessionEnd: this.lastSessionEnd,
      lastTickAt: this.lastTickAt,
      presenceFrom: this.presenceFrom,
    };
  }

  static restore(saved: RoomSnapshot): Room {
    const room = new Room();
    Object.assign(room, {
      ...saved,
      line: new Map(saved.line),
      seen: new Map(saved.seen),
      admitted: new Map(saved.admitted),
      entries: new Map(saved.entries),
      pre: new Map(saved.pre ?? []),
    });
    room.head = room.seq + 1;
    for (const [place, userId] of room.line) {
      room.ranks.add(place, 1);
      room.head = Math.min(room.head, place);
      // A snapshot from before places: the place was the seq.
      const entry = room.entries.get(userId);
      if (entry && !entry.place) entry.place = place;
    }
    return room;
  }

  /** The first and the last live session's end (sessions are kept in the order they were admitted). */
  #sessionEnds(now: number): number[] {
    let first: number | undefined;
    for (const until of this.admitted.values()) {
      if (until > now) {
        first = until;
        break;
      }
    }
    if (first === undefined) return [];
    return this.lastSessionEnd > first ? [first, this.lastSessionEnd] : [first];
  }

  touch(userId: string, now: number) {
    if (!this.seen.has(userId)) return;
    this.seen.delete(userId);
    this.seen.set(userId, now);
  }

  removeWaiting(userId: string, entry: Entry) {
    if (entry.place) {
      this.line.delete(entry.place);
      this.ranks.add(entry.place, -1);
      entry.place = 0;
    }
    this.seen.delete(userId);
    // A pre-queue frozen for its draw keeps every entry it had (the published list).
    if (this.draw !== "DRAWING") this.pre.delete(userId);
  }

  trimRecent(now: number) {
    let drop = 0;
    while (drop < this.recent.length && this.recent[drop]! <= now - minuteMs) drop++;
    if (drop > 0) this.recent.splice(0, drop);
  }

  /** Reads without trimming, so that a reader's clock never changes what the next tick may admit. */
  pace(now: number): Pace {
    let low = 0;
    let high = this.recent.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this.recent[mid]! <= now - minuteMs) low = mid + 1;
      else high = mid;
    }
    return {
      admittedLastMinute: this.recent.length - low,
      recentSample: sampled(this.recent, low),
      firstAdmissionAt: this.firstAdmissionAt,
      admitted: this.admitted.size,
      sessionEndsSample: this.#sessionEnds(now),
      paused: this.settings?.paused ?? false,
      supplyOpen: this.supplyOpen,
      draw: this.draw ?? "PREQUEUE",
      prequeuedUpTo: this.prequeuedUpTo,
      overrides: this.settings?.overrides ?? {},
    };
  }
}

/** values[from..], all of them when few, else 16 spread evenly by rank (the first and the last included). */
function sampled(values: number[], from: number): number[] {
  const count = values.length - from;
  if (count <= sampleSize) return values.slice(from);
  return Array.from({ length: sampleSize }, (_, k) => values[from + Math.floor((k * (count - 1)) / (sampleSize - 1))]!);
}

function ended(state: EntryState): EntryView {
  return { state, position: 0, admittedUntil: 0 };
}

/**
 * The embedded default: one process's memory, for `npm start` without
 * REDIS_URL. Given a file, it is written there when the store closes (a
 * shutdown, a deploy) and read back, once, by the next start, so fans keep
 * their places across a restart; the file is removed when read, so a crash
 * later never brings back an older line.
 */
export class MemoryQueueStore implements QueueStore {
  readonly #rooms = new Map<string, Room>();
  #marked = false;

  constructor(private readonly file?: string) {
    if (!file) return;
    let saved: Record<string, RoomSnapshot>;
    try {
      saved = JSON.parse(readFileSync(file, "utf8")) as Record<string, RoomSnapshot>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      logger("queue").warn({ file }, `${file} is unreadable (${why(error)}); the waiting rooms start empty`);
      rmSync(file, { force: true });
      return;
    }
    rmSync(file, { force: true });
    for (const [concertId, room] of Object.entries(saved)) this.#rooms.set(concertId, Room.restore(room));
    this.#marked = true;
  }

  /** The room, kept from now on. */
  #room(concertId: string): Room {
    let room = this.#rooms.get(concertId);
    if (!room) this.#rooms.set(concertId, (room = new Room()));
    return room;
  }

  /** The room to read: nobody entered or configured a room that does not exist yet, so an empty one stands in. */
  #read(concertId: string): Room {
    return this.#rooms.get(concertId) ?? new Room();
  }

  async enter(concertId: string, userId: string, now: number, saleOpensAt = 0): Promise<Entered> {
    const room = this.#room(concertId);
    const entry = room.entries.get(userId);
    if (entry) {
      const view = room.view({ userId, seq: entry.seq }, now);
      if (view.state === "WAITING" || view.state === "ADMITTED" || view.state === "PREQUEUED") {
        room.touch(userId, now);
        return { seq: entry.seq, view, pace: room.pace(now) };
      }
      if (entry.state === "ADMITTED") room.admitted.delete(userId);
    }
    const over = room.ended;
    if (over) return { seq: 0, view: ended(over), pace: room.pace(now) };
    const draw = room.drawState(now, saleOpensAt);
    const seq = ++room.seq;
    const created: Entry = { seq, state: "WAITING", admittedUntil: 0 };
    room.entries.set(userId, created);
    // The pre-queue is not dropped for silence: its presence counts from the draw.
    if (draw === "PREQUEUE") room.pre.set(userId, seq);
    else room.addWaiting(userId, created, seq, now);
    return { seq, view: room.view({ userId, seq }, now), pace: room.pace(now) };
  }

  async view(concertId: string, ticket: Ticket, now: number, touch: boolean): Promise<EntryView> {
    const room = this.#read(concertId);
    const view = room.view(ticket, now);
    if (touch && view.state === "WAITING") room.touch(ticket.userId, now);
    return view;
  }

  async views(concertId: string, tickets: Ticket[], now: number, touch: boolean) {
    const views: EntryView[] = [];
    for (const ticket of tickets) views.push(await this.view(concertId, ticket, now, touch));
    return { views, pace: this.#read(concertId).pace(now) };
  }

  async leave(concertId: string, ticket: Ticket, now: number): Promise<EntryView> {
    const room = this.#read(concertId);
    const entry = room.entries.get(ticket.userId);
    if (entry && entry.seq === ticket.seq && (entry.state === "WAITING" || entry.state === "ADMITTED")) {
      if (entry.state === "WAITING") room.removeWaiting(ticket.userId, entry);
      else room.admitted.delete(ticket.userId);
      entry.state = "LEFT";
      entry.admittedUntil = 0;
    }
    return room.view(ticket, now);
  }

  async complete(concertId: string, userId: string, now: number): Promise<boolean> {
    const room = this.#read(concertId);
    const entry = room.entries.get(userId);
    if (!entry || entry.state !== "ADMITTED" || entry.admittedUntil <= now) return false;
    room.admitted.delete(userId);
    entry.state = "COMPLETED";
    entry.admittedUntil = 0;
    return true;
  }

  async tick(concertId: string, defaults: Policy, { now, saleOpensAt = 0, supplyOpen, batch, settings, stalledAfterMs }: TickInput): Promise<TickResult> {
    const room = this.#room(concertId);
    const restored = room.apply(settings);
    const draw = room.drawState(now, saleOpensAt);
    const policy = overlay(defaults, room.settings!.overrides);
    room.supplyOpen = supplyOpen;
    // No tick for a while (the process was down): presence could not be counted meanwhile.
    if (room.lastTickAt > 0 && now - room.lastTickAt > stalledAfterMs) room.presenceFrom = now;
    room.lastTickAt = now;
    const result: TickResult = { admitted: 0, expired: 0, abandoned: 0, restored, drawPending: draw === "DRAWING" };

    for (const [userId, until] of room.admitted) {
      if (result.expired >= batch) break;
      if (until > now) continue;
      room.admitted.delete(userId);
      const entry = room.entries.get(userId);
      if (entry?.state === "ADMITTED") entry.state = "EXPIRED";
      result.expired++;
    }

    for (const [userId, seen] of room.seen) {
      if (seen > now - policy.abandonAfterMs || now - room.presenceFrom < policy.abandonAfterMs || result.abandoned >= batch) break;
      const entry = room.entries.get(userId)!;
      room.removeWaiting(userId, entry);
      entry.state = "EXPIRED";
      result.abandoned++;
    }
    room.abandoned += result.abandoned;

    room.trimRecent(now);
    // As on Redis: a copy just restored admits from the next tick on; nobody before the pre-queue is in its drawn order.
    if (supplyOpen && !restored && draw === "OPEN" && now >= saleOpensAt && !room.settings!.paused && !room.ended) {
      let free = Math.min(policy.maxActive - room.admitted.size, batch);
      if (policy.ratePerMinute > 0) free = Math.min(free, policy.ratePerMinute - room.recent.length);
      while (free > 0 && room.line.size > 0) {
        let place: number;
        if (policy.random) {
          place = room.ranks.find(randomInt(room.line.size) + 1);
        } else {
          while (!room.line.has(room.head)) room.head++;
          place = room.head;
        }
        const userId = room.line.get(place)!;
        const entry = room.entries.get(userId)!;
        room.removeWaiting(userId, entry);
        entry.state = "ADMITTED";
        entry.admittedUntil = now + policy.sessionTtlMs;
        room.admitted.set(userId, entry.admittedUntil);
        room.lastSessionEnd = entry.admittedUntil;
        room.recent.push(now);
        if (room.firstAdmissionAt === 0) room.firstAdmissionAt = now;
        result.admitted++;
        free--;
      }
    }
    return result;
  }

  async apply(concertId: string, settings: RoomSettings) {
    this.#room(concertId).apply(settings);
  }

  async prequeue(concertId: string): Promise<{ draw: DrawState; tickets: Ticket[] }> {
    const room = this.#read(concertId);
    const draw = room.draw ?? "PREQUEUE";
    return { draw, tickets: draw === "DRAWING" ? [...room.pre].map(([userId, seq]) => ({ userId, seq })) : [] };
  }

  async place(concertId: string, tickets: Ticket[], firstPlace: number, last: boolean, now: number): Promise<void> {
    const room = this.#read(concertId);
    if (room.draw !== "DRAWING") return;
    // As on Redis: the frozen pre-queue stays whole until the last chunk, and an entry already placed is skipped.
    tickets.forEach(({ userId, seq }, i) => {
      const entry = room.entries.get(userId);
      if (!room.pre.has(userId) || entry?.seq !== seq || entry.state !== "WAITING" || entry.place) return;
      room.addWaiting(userId, entry, firstPlace + i, now);
      room.placed++;
    });
    if (last) {
      room.draw = "OPEN";
      room.pre.clear();
      room.placed = 0;
    }
  }

  async counts(concertId: string, now: number): Promise<RoomCounts> {
    const room = this.#read(concertId);
    let admitted = 0;
    for (const until of room.admitted.values()) if (until > now) admitted++;
    return { waiting: room.line.size + room.pre.size - room.placed, admitted, admittedLastMinute: room.pace(now).admittedLastMinute, abandoned: room.abandoned };
  }

  async markLife() {
    const first = !this.#marked;
    this.#marked = true;
    return first;
  }

  async ping() {}

  async close() {
    if (!this.file) return;
    const saved = Object.fromEntries([...this.#rooms].map(([concertId, room]) => [concertId, room.snapshot()]));
    mkdirSync(dirname(this.file), { recursive: true });
    const partial = `${this.file}.${process.pid}.tmp`;
    writeFileSync(partial, JSON.stringify(saved), { mode: 0o600 });
    renameSync(partial, this.file);
  }
}
