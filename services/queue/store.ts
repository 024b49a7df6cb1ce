/**
 * The waiting room's state, behind one interface with two implementations:
 * Redis (shared by every instance of the queue service) and in-process memory
 * (the embedded default). Every method is atomic for its concert: two calls
 * never interleave halfway, whichever instance makes them.
 *
 * Times are epoch milliseconds passed in by the caller, so that tests and the
 * worker decide what "now" is.
 */

/**
 * Where an entry stands. PREQUEUED: waiting in the pre-queue, before the sale
 * opens and its draw puts the pre-queue in order (no place yet). CLOSED: the
 * sale ended. LOST is the store's own: it has no entry for the
 * ticket at all, because it lost its data (a Redis restart without
 * persistence, a failover to an empty replica, an eviction; a restart of the
 * in-process store). Fans see it as EXPIRED, told to enter again.
 */
export type EntryState = "WAITING" | "PREQUEUED" | "ADMITTED" | "EXPIRED" | "LEFT" | "COMPLETED" | "SOLD_OUT" | "CLOSED" | "LOST";

/**
 * How far a room's draw has got. PREQUEUE: entries go into the pre-queue.
 * DRAWING: the sale has opened, the pre-queue is frozen and waits to be put in
 * the drawn order; newcomers join the line behind it; nobody is admitted yet.
 * OPEN: the line is in order and moves. The first store call at or after the
 * sale's opening moves PREQUEUE to DRAWING; a room first seen after it starts OPEN.
 */
export type DrawState = "PREQUEUE" | "DRAWING" | "OPEN";

/** The admission rules of one concert's waiting room. */
export interface Policy {
  /** Most admitted sessions at once. */
  maxActive: number;
  /** Most admissions in any 60 s window; 0 = unlimited. */
  ratePerMinute: number;
  /** How long an admitted session lasts, ms. */
  sessionTtlMs: number;
  /** A waiting fan silent this long loses the place, ms. */
  abandonAfterMs: number;
  /** Admit by lot among those waiting instead of from the head (the random queueing method). */
  random: boolean;
}

/**
 * What operators decide about a room, and whether it is sold out. PostgreSQL
 * keeps it (services/queue/rooms.ts); the store holds a copy for its atomic
 * steps, replaced only by a newer version, and taken afresh at every tick, so a
 * store that lost its data is whole again after one tick.
 */
export interface RoomSettings {
  paused: boolean;
  soldOut: boolean;
  /** The sale has ended (closed, cancelled, or every date started): nobody waits or enters any more. */
  closed: boolean;
  overrides: Partial<Policy>;
  /** Rises with every change. */
  version: number;
}

/** One fan's place, as a queue token sees it. */
export interface EntryView {
  state: EntryState;
  /** 1-based place in line while WAITING, else 0. */
  position: number;
  /** While ADMITTED: when the session ends (ms), else 0. */
  admittedUntil: number;
}

/** What the line's recent pace is, for estimating waits. */
export interface Pace {
  /** Admissions in the last 60 s. */
  admittedLastMinute: number;
  /**
   * When they happened (ms), ascending: all of them when few, else a sample
   * spread evenly over them by rank (the first and the last included), to
   * interpolate between.
   */
  recentSample: number[];
  /** Where the room's draw is (PREQUEUE for a room nobody entered yet). */
  draw: DrawState;
  /** Entries up to this seq were made in the pre-queue (set when it froze; 0 while it is open or when there was none). */
  prequeuedUpTo: number;
  /** When the first admission of this room happened (ms), 0 if none yet. */
  firstAdmissionAt: number;
  /** Sessions admitted now. */
  admitted: number;
  /** When they end (ms), ascending, sampled the same way (at least the first and the last). */
  sessionEndsSample: number[];
  paused: boolean;
  /** False when the last tick found no seat to sell. */
  supplyOpen: boolean;
  /** The room's policy overrides, as the store's copy has them. */
  overrides: Partial<Policy>;
}

/** An entry as a token names it: the user and the entry's sequence number. */
export interface Ticket {
  userId: string;
  seq: number;
}

export interface Entered {
  /** The entry's sequence number in this room (it goes into the queue token). 0 when sold out. */
  seq: number;
  view: EntryView;
  /** The room's pace, read in the same step (for the estimated wait). */
  pace: Pace;
}

export interface TickInput {
  now: number;
  /** When the sale opens (ms): nobody is admitted before, and the first tick after freezes the pre-queue. Unset: open. */
  saleOpensAt?: number;
  /** False while the concert has no AVAILABLE seat: nobody new is admitted. */
  supplyOpen: boolean;
  /**
   * Most entries of each kind (admitted, expired, abandoned) this step moves,
   * so that one atomic call stays short; a tick takes steps until one moves
   * less than a full batch (see AdmissionWorker).
   */
  batch: number;
  /** The room's settings as PostgreSQL has them; applied first when newer than the store's copy. */
  settings: RoomSettings;
  /**
   * A gap since the room's last tick longer than this means nobody could be
   * seen meanwhile (the store or every queue instance was away): nobody is
   * then dropped for silence until abandon_after has passed again.
   */
  stalledAfterMs: number;
}

export interface TickResult {
  admitted: number;
  expired: number;
  abandoned: number;
  /** The store had no copy of the room's settings (a new room, or lost data) and took this tick's. */
  restored: boolean;
  /** The pre-queue is frozen and waits for its draw (see QueueStore.prequeue and place). */
  drawPending: boolean;
}

export interface RoomCounts {
  waiting: number;
  admitted: number;
  admittedLastMinute: number;
  abandoned: number;
}

export interface QueueStore {
  /**
   * Puts the user in line, or returns their live entry (WAITING, or ADMITTED
   * and not run out) unchanged. A user whose last entry ended gets a new one at
   * the back. In a sold-out room nobody enters: seq 0 and SOLD_OUT.
   * Entering counts as presence. Before `saleOpensAt` a new entry goes into
   * the pre-queue (PREQUEUED); from it (by default, at once), into the line behind the pre-queue.
   */
  enter(concertId: string, userId: string, now: number, saleOpensAt?: number): Promise<Entered>;

  /** The entry the ticket names; `touch` counts it as presence for a waiting fan. */
  view(concertId: string, ticket: Ticket, now: number, touch: boolean): Promise<EntryView>;

  /** Many tickets of one room at once, in order, with the room's pace: one round trip. */
  views(concertId: string, tickets: Ticket[], now: number, touch: boolean): Promise<{ views: EntryView[]; pace: Pace }>;

  /** Gives the ticket's place up (LEFT); an admitted session frees its slot at once. Returns the view after. */
  leave(concertId: string, ticket: Ticket, now: number): Promise<EntryView>;

  /** Ends the user's admitted session (COMPLETED) and frees the slot. False when there was none. */
  complete(concertId: string, userId: string, now: number): Promise<boolean>;

  /**
   * One admission step for a room: takes the settings when newer, ends
   * sessions past their time, drops waiting fans silent past abandon_after,
   * then admits from the head while admitted < max_active, within the rate,
   * unless paused, sold out or supply is closed, or the settings were only
   * just restored (from the next tick on). At most `batch` of each: its cost
   * grows with the entries it moves, not with the length of the line.
   */
  tick(concertId: string, policyDefaults: Policy, input: TickInput): Promise<TickResult>;

  /** Takes the settings when newer than the store's copy (an operator's change, at once); a sold-out room's line is emptied. */
  apply(concertId: string, settings: RoomSettings): Promise<void>;

  /**
   * The room's draw state and, while DRAWING, the frozen pre-queue (every
   * entry in it when the sale opened, also those who left since), in arrival order.
   */
  prequeue(concertId: string): Promise<{ draw: DrawState; tickets: Ticket[] }>;

  /**
   * Puts part of the frozen pre-queue into the line in the drawn order: the
   * tickets are the drawn places `firstPlace`, `firstPlace + 1`, … (1-based);
   * entries no longer waiting keep their place number unused. `last` opens the
   * room. Idempotent (a second drawer, or one after a crash, changes nothing
   * more); a no-op unless DRAWING. Placed fans count as present from `now`.
   */
  place(concertId: string, tickets: Ticket[], firstPlace: number, last: boolean, now: number): Promise<void>;

  /** The room's counts. */
  counts(concertId: string, now: number): Promise<RoomCounts>;

  /**
   * True when the store had no mark of its life (it is new, or it lost its
   * data) and this call set one; false when the mark was there, or another
   * caller set it first. So that one instance says so, once.
   */
  markLife(): Promise<boolean>;

  /** Throws DependencyDown while the store cannot be reached (health probes). */
  ping(): Promise<void>;

  close(): Promise<void>;
}
