import type { Admission } from "../platform/access.js";
import { DependencyDown, Forbidden, NotAuthenticated, Reason, Refused } from "../platform/errors.js";
import { estimatedWaitMs, overlay } from "./policy.js";
import type { QueueTicket, QueueTokens } from "./queue-tokens.js";
import { unsetRoom, type Rooms } from "./rooms.js";
import type { EntryState, EntryView, Pace, Policy, QueueStore, RoomCounts, RoomSettings } from "./store.js";
import type { SupplySource } from "./supply.js";

/** A queue token's waiting info, as fans see it. */
export interface RoomStatus {
  concertId: string;
  /** LOST never reaches a fan: it is told EXPIRED, with the reason. */
  state: Exclude<EntryState, "LOST">;
  position: number;
  estimatedWaitMs: number | undefined;
  admittedUntil: number | undefined;
  /** Why, where there is something to say (paused; place lost). */
  reason?: Reason;
  detail?: string;
}

/** A room's counts and the settings in force (GetQueueStats). */
export interface RoomStats extends RoomCounts {
  paused: boolean;
  soldOut: boolean;
  policy: Policy;
  /** What the fan at the back of the line is told to expect; undefined while nobody waits, or while unknown. */
  waitAtBackMs: number | undefined;
}

const noPace: Pace = {
  admittedLastMinute: 0,
  recentSample: [],
  firstAdmissionAt: 0,
  admitted: 0,
  sessionEndsSample: [],
  paused: false,
  supplyOpen: true,
  overrides: {},
};

const placeLost = "your place was lost when the waiting room was reset; enter the queue again";

/**
 * The waiting room's rules as fans and operators meet them: entering, looking
 * at one's place, leaving, and proving admission at the gate. State lives in the
 * QueueStore; the admission worker moves the line.
 */
export class WaitingRoom {
  constructor(
    private readonly store: QueueStore,
    private readonly rooms: Rooms,
    private readonly tokens: QueueTokens,
    private readonly supply: SupplySource,
    private readonly defaults: Policy,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Enters the user into the concert's waiting room (or finds their live place). */
  async enter(userId: string, concertId: string): Promise<{ queueToken: string; status: RoomStatus }> {
    await this.supply.exists(concertId); // NotFound for a concert that does not exist
    await this.rooms.list(concertId);
    const now = this.clock();
    const { seq, view, pace } = await this.store.enter(concertId, userId, now);
    const queueToken = seq > 0 ? this.tokens.sign({ concertId, userId, seq }) : "";
    return { queueToken, status: this.#status(concertId, view, pace, now) };
  }

  /** The waiting info of a queue token; looking counts as presence. */
  async status(queueToken: string): Promise<RoomStatus> {
    const ticket = this.#ticket(queueToken);
    const now = this.clock();
    const { views, pace } = await this.store.views(ticket.concertId, [ticket], now, true);
    return this.#status(ticket.concertId, views[0]!, pace, now);
  }

  /**
   * Many tokens of one concert in one store round trip (the watch streams), in
   * order; undefined for a token that is not valid for the concert.
   */
  async statuses(concertId: string, queueTokens: string[]): Promise<(RoomStatus | undefined)[]> {
    const tickets = queueTokens.map((token) => this.tokens.verify(token));
    const valid = tickets.filter((ticket): ticket is QueueTicket => ticket?.concertId === concertId);
    const now = this.clock();
    const { views, pace } = await this.store.views(concertId, valid, now, true);
    let next = 0;
    return tickets.map((ticket) => (ticket?.concertId === concertId ? this.#status(concertId, views[next++]!, pace, now) : undefined));
  }

  /** Gives the place up; an admitted session frees its slot at once. */
  async leave(queueToken: string): Promise<RoomStatus> {
    const ticket = this.#ticket(queueToken);
    const now = this.clock();
    return this.#status(ticket.concertId, await this.store.leave(ticket.concertId, ticket, now), noPace, now);
  }

  /** The gate: proves the token is admitted now (for this user and concert when given), or says why not. */
  async admission(queueToken: string, expect: { userId?: string; concertId?: string } = {}): Promise<Admission> {
    const ticket = this.tokens.verify(queueToken);
    if (!ticket) throw new Forbidden(Reason.QUEUE_TOKEN_INVALID, "the queue token is not valid");
    if (expect.userId && ticket.userId !== expect.userId) {
      throw new Forbidden(Reason.QUEUE_TOKEN_INVALID, "the queue token belongs to another user");
    }
    if (expect.concertId && ticket.concertId !== expect.concertId) {
      throw new Forbidden(Reason.NOT_ADMITTED, "the queue token is for another concert");
    }
    const view = await this.store.view(ticket.concertId, ticket, this.clock(), false);
    switch (view.state) {
      case "ADMITTED":
        return { userId: ticket.userId, concertId: ticket.concertId, queueToken, admittedUntil: new Date(view.admittedUntil) };
      case "WAITING":
        throw new Refused(Reason.NOT_ADMITTED, `not admitted yet: ${view.position - 1} ahead in the queue`, {
          position: String(view.position),
        });
      case "SOLD_OUT":
        throw new Refused(Reason.SOLD_OUT, "the concert is sold out");
      case "LOST":
        throw new Refused(Reason.QUEUE_TOKEN_EXPIRED, placeLost, { state: "EXPIRED" });
      default:
        throw new Refused(Reason.QUEUE_TOKEN_EXPIRED, `the queue session has ended (${view.state}); enter the queue again`, {
          state: view.state,
        });
    }
  }

  /** Ends the user's admitted session (after payment). */
  async complete(userId: string, concertId: string): Promise<boolean> {
    return this.store.complete(concertId, userId, this.clock());
  }

  async stats(concertId: string): Promise<RoomStats> {
    await this.supply.exists(concertId);
    return this.#stats(concertId, await this.rooms.get(concertId));
  }

  /**
   * Many rooms' stats at once (the operator console): one query for the
   * settings, then each room's counts from the store. Concerts are not looked
   * up: one whose room was never listed reads as an empty room.
   */
  async statsOf(concertIds: string[]): Promise<RoomStats[]> {
    const all = await this.rooms.all();
    return Promise.all(concertIds.map((concertId) => this.#stats(concertId, all.get(concertId) ?? unsetRoom)));
  }

  async #stats(concertId: string, settings: RoomSettings): Promise<RoomStats> {
    const now = this.clock();
    const [counts, { pace }] = await Promise.all([this.store.counts(concertId, now), this.store.views(concertId, [], now, false)]);
    const policy = overlay(this.defaults, settings.overrides);
    // The estimate of the last place, from the room's pace as the store sees it (what the fan there is told).
    const waitAtBackMs = counts.waiting > 0 ? estimatedWaitMs(counts.waiting, pace, overlay(this.defaults, pace.overrides), now) : undefined;
    return { ...counts, paused: settings.paused, soldOut: settings.soldOut, policy, waitAtBackMs };
  }

  /** Pauses or resumes admission; whether it was paused before, and is after (for the audit). */
  async setPaused(concertId: string, paused: boolean): Promise<{ before: boolean; after: boolean }> {
    const { before, after } = await this.#change(concertId, { paused });
    return { before: before.paused, after: after.paused };
  }

  /** Changes the room's policy; the policy in force before and after. */
  async setPolicy(concertId: string, overrides: Partial<Policy>): Promise<{ before: Policy; after: Policy }> {
    const { before, after } = await this.#change(concertId, { overrides });
    return { before: overlay(this.defaults, before.overrides), after: overlay(this.defaults, after.overrides) };
  }

  /**
   * An operator's change is kept in PostgreSQL, then copied into the store at
   * once for every instance; if the store is down, the change still holds: the
   * first tick after it is back copies it.
   */
  async #change(concertId: string, change: Parameters<Rooms["change"]>[1]) {
    await this.supply.exists(concertId);
    const before = await this.rooms.get(concertId);
    const after = await this.rooms.change(concertId, change);
    await this.store.apply(concertId, after).catch((error: unknown) => {
      if (!(error instanceof DependencyDown)) throw error;
    });
    return { before, after };
  }

  #ticket(queueToken: string): QueueTicket {
    const ticket = this.tokens.verify(queueToken);
    if (!ticket) throw new NotAuthenticated(Reason.QUEUE_TOKEN_INVALID, "the queue token is not valid");
    return ticket;
  }

  #status(concertId: string, view: EntryView, pace: Pace, now: number): RoomStatus {
    const status: RoomStatus = {
      concertId,
      state: view.state === "LOST" ? "EXPIRED" : view.state,
      position: view.position,
      estimatedWaitMs: undefined,
      admittedUntil: view.state === "ADMITTED" ? view.admittedUntil : undefined,
    };
    if (view.state === "WAITING") {
      status.estimatedWaitMs = estimatedWaitMs(view.position, pace, overlay(this.defaults, pace.overrides), now);
      if (pace.paused) Object.assign(status, { reason: Reason.QUEUE_PAUSED, detail: "admission is paused by the organiser; your place is kept" });
    }
    if (view.state === "LOST") Object.assign(status, { reason: Reason.QUEUE_TOKEN_EXPIRED, detail: placeLost });
    return status;
  }
}
