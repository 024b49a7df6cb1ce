import type { Admission } from "../platform/access.js";
import { DependencyDown, Forbidden, NotAuthenticated, Reason, Refused } from "../platform/errors.js";
import { estimatedWaitMs, overlay } from "./policy.js";
import type { QueueTicket, QueueTokens } from "./queue-tokens.js";
import { unsetRoom, type Rooms } from "./rooms.js";
import type { EntryState, EntryView, Pace, Policy, QueueStore, RoomCounts, RoomSettings } from "./store.js";
import type { Sale, SupplySource } from "./supply.js";

/** A queue token's waiting info, as fans see it. */
export interface RoomStatus {
  concertId: string;
  /** LOST never reaches a fan: it is told EXPIRED, with the reason; PREQUEUED is told WAITING with no place yet. */
  state: Exclude<EntryState, "LOST" | "PREQUEUED">;
  position: number;
  estimatedWaitMs: number | undefined;
  admittedUntil: number | undefined;
  /** Why, where there is something to say (paused; place lost; pre-queue; by lot; closed). */
  reason?: Reason;
  detail?: string;
  /** In the pre-queue: when the sale opens and the draw is made. */
  saleOpensAt?: number;
  /** The entry's id in the sale's draw. */
  entryId?: string;
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
  draw: "OPEN",
  prequeuedUpTo: 0,
  overrides: {},
};

const at = (ms: number) => new Date(ms).toISOString();

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

  /**
   * Enters the user into the concert's waiting room (or finds their live
   * place): from the pre-queue's opening until the sale ends. Before the sale
   * opens the entry waits in the pre-queue, for the draw.
   */
  async enter(userId: string, concertId: string): Promise<{ queueToken: string; status: RoomStatus }> {
    const sale = await this.supply.sale(concertId); // NotFound for a concert that does not exist
    const now = this.clock();
    mayEnter(sale, now);
    await this.rooms.list(concertId);
    const { seq, view, pace } = await this.store.enter(concertId, userId, now, sale.saleOpensAt);
    const ticket = { concertId, userId, seq };
    const queueToken = seq > 0 ? this.tokens.sign(ticket) : "";
    return { queueToken, status: this.#status(concertId, view, pace, now, sale, seq > 0 ? ticket : undefined) };
  }

  /** The waiting info of a queue token; looking counts as presence. */
  async status(queueToken: string): Promise<RoomStatus> {
    const ticket = this.#ticket(queueToken);
    const now = this.clock();
    const [{ views, pace }, sale] = await Promise.all([this.store.views(ticket.concertId, [ticket], now, true), this.#sale(ticket.concertId)]);
    return this.#status(ticket.concertId, views[0]!, pace, now, await this.#explaining(ticket.concertId, views, sale, now), ticket);
  }

  /** The sale, to explain a status with; a status is still told while the concert service cannot say. */
  #sale(concertId: string): Promise<Sale | undefined> {
    return this.supply.sale(concertId).catch(() => undefined);
  }

  /** The sale, read afresh when a room closed that the sale as last read says is open (just cancelled): the reason must be right. */
  async #explaining(concertId: string, views: EntryView[], sale: Sale | undefined, now: number): Promise<Sale | undefined> {
    if (!sale || sale.cancelled || now >= sale.saleEndsAt || !views.some((view) => view.state === "CLOSED")) return sale;
    this.supply.forget(concertId);
    return this.supply
      .of(concertId)
      .then((supply) => supply.sale)
      .catch(() => sale);
  }

  /**
   * Many tokens of one concert in one store round trip (the watch streams), in
   * order; undefined for a token that is not valid for the concert.
   */
  async statuses(concertId: string, queueTokens: string[]): Promise<(RoomStatus | undefined)[]> {
    const tickets = queueTokens.map((token) => this.tokens.verify(token));
    const valid = tickets.filter((ticket): ticket is QueueTicket => ticket?.concertId === concertId);
    const now = this.clock();
    const [{ views, pace }, read] = await Promise.all([this.store.views(concertId, valid, now, true), this.#sale(concertId)]);
    const sale = await this.#explaining(concertId, views, read, now);
    let next = 0;
    return tickets.map((ticket) => (ticket?.concertId === concertId ? this.#status(concertId, views[next++]!, pace, now, sale, ticket) : undefined));
  }

  /** Gives the place up; an admitted session frees its slot at once. */
  async leave(queueToken: string): Promise<RoomStatus> {
    const ticket = this.#ticket(queueToken);
    const now = this.clock();
    return this.#status(ticket.concertId, await this.store.leave(ticket.concertId, ticket, now), noPace, now, undefined, ticket);
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
      case "PREQUEUED":
        throw new Refused(Reason.NOT_ADMITTED, "not admitted yet: the sale has not opened, and the pre-queue's order is drawn when it does", {
          position: "0",
        });
      case "SOLD_OUT":
        throw new Refused(Reason.SOLD_OUT, "the concert is sold out");
      case "CLOSED":
        throw new Refused(Reason.SALE_CLOSED, "the sale has ended");
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

  #status(concertId: string, view: EntryView, pace: Pace, now: number, sale: Sale | undefined, ticket: QueueTicket | undefined): RoomStatus {
    const status: RoomStatus = {
      concertId,
      state: view.state === "LOST" ? "EXPIRED" : view.state === "PREQUEUED" ? "WAITING" : view.state,
      position: view.position,
      estimatedWaitMs: undefined,
      admittedUntil: view.state === "ADMITTED" ? view.admittedUntil : undefined,
      // An entry made in the pre-queue has an id in the sale's draw.
      entryId: ticket && (view.state === "PREQUEUED" || ticket.seq <= pace.prequeuedUpTo) ? this.tokens.entryId(ticket) : undefined,
    };
    switch (view.state) {
      case "WAITING":
        if (pace.paused) Object.assign(status, { reason: Reason.QUEUE_PAUSED, detail: "admission is paused by the organiser; your place is kept" });
        else if (overlay(this.defaults, pace.overrides).random) {
          Object.assign(status, { position: 0, reason: Reason.RANDOM_ADMISSION, detail: "fans are admitted by lot from everyone waiting; stay on this page" });
          break;
        }
        status.estimatedWaitMs = estimatedWaitMs(view.position, pace, overlay(this.defaults, pace.overrides), now);
        break;
      case "PREQUEUED":
        Object.assign(status, {
          reason: Reason.SALE_NOT_OPEN,
          saleOpensAt: sale?.saleOpensAt,
          detail:
            sale && now < sale.saleOpensAt
              ? `the sale opens at ${at(sale.saleOpensAt)}; then everyone in the pre-queue gets a place in line by a random draw, whenever they arrived`
              : "the sale has opened; your place in line is being drawn",
        });
        break;
      case "CLOSED":
        Object.assign(
          status,
          sale?.cancelled
            ? { reason: Reason.CONCERT_CANCELLED, detail: `the concert was cancelled${sale.cancelReason ? `: ${sale.cancelReason}` : ""}` }
            : { reason: Reason.SALE_CLOSED, detail: "the sale has ended" },
        );
        break;
      case "LOST":
        Object.assign(status, { reason: Reason.QUEUE_TOKEN_EXPIRED, detail: placeLost });
        break;
    }
    return status;
  }
}

/** Who may enter a room: from the pre-queue's opening until the sale ends, of a published concert. */
function mayEnter(sale: Sale, now: number): void {
  if (sale.cancelled) throw new Refused(Reason.CONCERT_CANCELLED, `the concert was cancelled${sale.cancelReason ? `: ${sale.cancelReason}` : ""}`);
  const times = { prequeue_opens_at: at(sale.prequeueOpensAt), sale_opens_at: at(sale.saleOpensAt) };
  if (!sale.published) throw new Refused(Reason.SALE_NOT_OPEN, "the concert is not on sale yet");
  if (now < sale.prequeueOpensAt) {
    throw new Refused(Reason.SALE_NOT_OPEN, `the waiting room opens at ${times.prequeue_opens_at}; the sale at ${times.sale_opens_at}`, times);
  }
  if (now >= sale.saleEndsAt) throw new Refused(Reason.SALE_CLOSED, "the sale has ended");
}
