import type { Admission } from "../platform/access.js";
import { Forbidden, NotAuthenticated, Reason, Refused } from "../platform/errors.js";
import { estimatedWaitMs } from "./policy.js";
import type { QueueTicket, QueueTokens } from "./queue-tokens.js";
import type { EntryState, EntryView, Pace, Policy, QueueStore, RoomStats } from "./store.js";
import type { SupplySource } from "./supply.js";

/** A queue token's waiting info, as fans see it. */
export interface RoomStatus {
  concertId: string;
  state: EntryState;
  position: number;
  estimatedWaitMs: number | undefined;
  admittedUntil: number | undefined;
}

const noPace: Pace = { admittedLastMinute: 0, firstAdmissionAt: 0, paused: false };

/**
 * The waiting room's rules as fans and operators meet them: entering, looking
 * at one's place, leaving, and proving admission at the gate. State lives in the
 * QueueStore; the admission worker moves the line.
 */
export class WaitingRoom {
  constructor(
    private readonly store: QueueStore,
    private readonly tokens: QueueTokens,
    private readonly supply: SupplySource,
    private readonly defaults: Policy,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Enters the user into the concert's waiting room (or finds their live place). */
  async enter(userId: string, concertId: string): Promise<{ queueToken: string; status: RoomStatus }> {
    await this.supply.exists(concertId); // NotFound for a concert that does not exist
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
    return this.store.stats(concertId, this.defaults, this.clock());
  }

  async setPaused(concertId: string, paused: boolean): Promise<void> {
    await this.supply.exists(concertId);
    await this.store.setPaused(concertId, paused);
  }

  async setPolicy(concertId: string, change: Partial<Policy>): Promise<Policy> {
    await this.supply.exists(concertId);
    return this.store.setPolicy(concertId, this.defaults, change);
  }

  #ticket(queueToken: string): QueueTicket {
    const ticket = this.tokens.verify(queueToken);
    if (!ticket) throw new NotAuthenticated(Reason.QUEUE_TOKEN_INVALID, "the queue token is not valid");
    return ticket;
  }

  #status(concertId: string, view: EntryView, pace: Pace, now: number): RoomStatus {
    return {
      concertId,
      state: view.state,
      position: view.position,
      estimatedWaitMs: view.state === "WAITING" ? estimatedWaitMs(view.position, pace, now) : undefined,
      admittedUntil: view.state === "ADMITTED" ? view.admittedUntil : undefined,
    };
  }
}
