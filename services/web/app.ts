/// <reference lib="dom" />
// The fan's booking page: plain DOM over Connect-Web (HTTP/1.1, same origin).
// Bundled by services/web/index.ts with esbuild when the server starts.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient, type CallOptions } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { Reason } from "../../gen/boxoffice/common/v1/error_pb.js";
import { ConcertPhase, ConcertService, SeatState, type Concert, type Schedule, type Seat } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState, type Payment } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { DrawState, QueueService, QueueState, type GetSaleFairnessResponse, type QueueStatus } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { ReservationService, ReservationState, type Reservation } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TicketService, TicketState, type Ticket } from "../../gen/boxoffice/ticket/v1/ticket_pb.js";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import QRCode from "qrcode";
import { explain, explainReason, reasonOf, reconnectingMessage, sentence, when } from "./messages.js";

const transport = createConnectTransport({ baseUrl: location.origin });
const api = {
  tokens: createClient(TokenService, transport),
  concerts: createClient(ConcertService, transport),
  coordinator: createClient(CoordinatorService, transport),
  queue: createClient(QueueService, transport),
  points: createClient(PointService, transport),
  payments: createClient(PaymentService, transport),
  reservations: createClient(ReservationService, transport),
  tickets: createClient(TicketService, transport),
};

const tokenKey = "boxoffice.userToken";
/** Most seats one hold may have (ReserveSeats takes 1..4). */
const seatsPerHold = 4;
/** Most seats the fan may select at once: the concert's per-fan limit (over all its dates), within what one hold may have. */
const maxSeats = () => Math.min(seatsPerHold, state.concert?.seatLimit || seatsPerHold);

/** Everything the page knows; each render reads from here. */
const state = {
  userToken: "",
  concert: undefined as Concert | undefined,
  queueToken: "",
  queueStatus: undefined as QueueStatus | undefined,
  /** The fan's pre-queue entry id for this queue token, as the waiting room last told it (kept after the draw, to check it). */
  entryId: "",
  schedule: undefined as Schedule | undefined,
  seats: [] as Seat[],
  selected: new Set<number>(),
  /** Seats the fan already has for this concert (live holds and paid bookings, over all its dates), as last read. */
  owned: 0,
  reservation: undefined as Reservation | undefined,
  watch: undefined as AbortController | undefined,
  /** The concerts as last listed, by id (what the waiting room knows of the sale: its commitment). */
  concerts: new Map<string, Concert>(),
  /** When the list is read again: at the next pre-queue or sale opening among the listed concerts. */
  concertsTimer: undefined as ReturnType<typeof setTimeout> | undefined,
};

// ---- small DOM helpers ----

const $ = <T extends HTMLElement = HTMLElement>(testId: string) => document.querySelector<T>(`[data-testid="${testId}"]`)!;
const section = (id: string) => document.getElementById(id)!;
const show = (id: string, visible = true) => (section(id).hidden = !visible);

function element<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: (Node | string)[]) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function say(message: string) {
  $("message").textContent = message;
  if (message) $("notice").textContent = "";
}

function notify(notice: string) {
  $("notice").textContent = notice;
  if (notice) $("message").textContent = "";
}

/** Runs an action from a button: disabled while it runs, any error shown as a human message. */
async function act(button: HTMLButtonElement | undefined, action: () => Promise<void>) {
  if (button) button.disabled = true;
  try {
    await action();
  } catch (error) {
    say(explain(error));
    await recover(reasonOf(error));
  } finally {
    if (button?.isConnected) button.disabled = false;
    renderSeatControls();
  }
}

/** After a refusal, brings the page back to what is true now. */
async function recover(reason: Reason | undefined) {
  if (reason === Reason.SEAT_UNAVAILABLE) {
    state.selected.clear();
    await loadSeats().catch(() => undefined);
  } else if (reason === Reason.HOLD_EXPIRED || reason === Reason.HOLD_RELEASED) {
    dropHold();
    await loadSeats().catch(() => undefined);
  } else if (reason === Reason.TOKEN_EXPIRED || reason === Reason.TOKEN_INVALID || reason === Reason.USER_NOT_FOUND) {
    localStorage.removeItem(tokenKey);
  }
}

// ---- formatting ----

const points = (amount: bigint) => `${amount.toLocaleString("en")} points`;
const seatList = (numbers: number[]) => (numbers.length === 1 ? `Seat ${numbers[0]}` : `Seats ${numbers.slice(0, -1).join(", ")} and ${numbers.at(-1)}`);
const dateTime = (ts: Timestamp | undefined) =>
  ts ? new Date(timestampMs(ts)).toLocaleString("en", { dateStyle: "medium", timeStyle: "short" }) : "";

function clock(ms: number) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

/** A countdown that may be long: 0:08, 12:34, 1:02:03, 2 d 03:04:05. */
function longClock(ms: number) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const [days, hours, minutes, seconds] = [Math.floor(total / 86400), Math.floor(total / 3600) % 24, Math.floor(total / 60) % 60, total % 60];
  const pad = (n: number) => String(n).padStart(2, "0");
  if (days > 0) return `${days} d ${pad(hours)}:${pad(minutes)}:${pad(seconds)}`;
  if (hours > 0) return `${hours}:${pad(minutes)}:${pad(seconds)}`;
  return `${minutes}:${pad(seconds)}`;
}

const ms = (ts: Timestamp | undefined) => (ts ? timestampMs(ts) : undefined);
/** A time in full, to the second (the sale's opening in the waiting room). */
const exactTime = (ts: Timestamp | undefined) =>
  ts ? new Date(timestampMs(ts)).toLocaleString("en", { dateStyle: "medium", timeStyle: "medium" }) : "";

/** "55,000 – 150,000 points", "100 points", or "" while the service tells no price. */
function priceRange(concert: Concert) {
  const [low, high] = [concert.minPrice, concert.maxPrice];
  if (low <= 0n && high <= 0n) return "";
  if (low === high || high <= 0n) return points(low);
  return `${low.toLocaleString("en")} – ${high.toLocaleString("en")} points`;
}

/**
 * The phase a concert is in, as the page treats it. A service that tells no
 * phase (one from before sale events) lists only concerts on sale.
 */
const phaseOf = (concert: Concert) => (concert.phase === ConcertPhase.UNSPECIFIED ? ConcertPhase.ON_SALE : concert.phase);

/** The concert's sale in words: on sale, when its pre-queue and sale open, sold out. */
function saleText(concert: Concert) {
  const prequeue = dateTime(concert.prequeueOpensAt);
  const sale = dateTime(concert.saleOpensAt);
  switch (phaseOf(concert)) {
    case ConcertPhase.ON_SALE:
      return concert.saleClosesAt ? `On sale now, until ${dateTime(concert.saleClosesAt)}` : "On sale now";
    case ConcertPhase.PREQUEUE:
      return `Pre-queue open — sale opens ${sale}`;
    case ConcertPhase.SCHEDULED:
      return prequeue && prequeue !== sale && ms(concert.prequeueOpensAt)! < ms(concert.saleOpensAt)! ? `Pre-queue opens ${prequeue}, sale opens ${sale}` : `Sale opens ${sale || prequeue}`;
    case ConcertPhase.SOLD_OUT:
      return "Sold out";
    case ConcertPhase.CLOSED:
      return "Sale closed";
    case ConcertPhase.PAST:
      return "Past";
    case ConcertPhase.CANCELLED:
      return "Cancelled";
    case ConcertPhase.DRAFT:
      return "Not published yet";
    default:
      return "";
  }
}

/** When the concert's dates are: one date, or the first to the last. */
function datesText(concert: Concert) {
  const [first, last] = [dateTime(concert.firstStartsAt), dateTime(concert.lastStartsAt)];
  if (!first) return "";
  return last && last !== first ? `${first} to ${last}` : first;
}

function aboutSeconds(seconds: number) {
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `about ${Math.round(seconds / 60)} min`;
  return `about ${(seconds / 3600).toFixed(1)} h`;
}

const queueStateText: Record<QueueState, string> = {
  [QueueState.UNSPECIFIED]: "Unknown",
  [QueueState.WAITING]: "Waiting",
  [QueueState.ADMITTED]: "Admitted — it's your turn!",
  [QueueState.EXPIRED]: "Your place or session expired",
  [QueueState.LEFT]: "You left the queue",
  [QueueState.COMPLETED]: "Done — your booking is complete",
  [QueueState.SOLD_OUT]: "Sold out",
  [QueueState.CLOSED]: "The sale has ended",
};

const seatStateName = (seat: Seat) => {
  if (state.reservation?.seatNumbers.includes(seat.number) && seat.state !== SeatState.AVAILABLE) return "mine";
  return ({ [SeatState.AVAILABLE]: "available", [SeatState.HELD]: "held", [SeatState.SOLD]: "sold" } as Record<number, string>)[seat.state] ?? "unknown";
};

function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // Pages served over plain http to another host are not a secure context: no randomUUID there.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---- credentials ----

const user = (): CallOptions => ({ headers: { authorization: `Bearer ${state.userToken}` } });
const gated = (): CallOptions => ({ headers: { authorization: `Bearer ${state.userToken}`, "x-queue-token": state.queueToken } });

/** A user token: a fresh one for the stored fan, or a new fan. Kept in localStorage. */
async function signIn() {
  const stored = localStorage.getItem(tokenKey);
  let issued;
  try {
    issued = await api.tokens.issueUserToken({}, stored ? { headers: { authorization: `Bearer ${stored}` } } : {});
  } catch (error) {
    if (!stored) throw error;
    issued = await api.tokens.issueUserToken({}); // the stored token is expired or from another server: start over
  }
  state.userToken = issued.token;
  localStorage.setItem(tokenKey, issued.token);
  $("user-id").textContent = `fan ${issued.userId.slice(0, 8)}`;
  $("user-id").title = issued.userId;
  await refreshBalance();
}

async function refreshBalance() {
  const { balance } = await api.points.getBalance({}, user());
  $("balance").textContent = balance.toLocaleString("en");
}

// ---- concerts and the waiting room ----

async function loadConcerts() {
  const { concerts } = await api.concerts.listConcerts({});
  state.concerts = new Map(concerts.map((concert) => [concert.id, concert]));
  const list = $("concerts");
  list.replaceChildren();
  if (concerts.length === 0) list.append(element("li", {}, "No concerts on sale or coming up right now."));
  for (const concert of concerts) list.append(concertItem(concert));
  readConcertsAgain(concerts);
}

/** One concert of the list: its title and venue, its sale, its dates and prices, and the button to queue. */
function concertItem(concert: Concert) {
  const phase = phaseOf(concert);
  const label = {
    [ConcertPhase.ON_SALE]: "Join the queue",
    [ConcertPhase.PREQUEUE]: "Enter the pre-queue",
    [ConcertPhase.SCHEDULED]: `Opens ${dateTime(concert.prequeueOpensAt ?? concert.saleOpensAt)}`,
    [ConcertPhase.SOLD_OUT]: "Sold out",
  }[phase as number] ?? "Closed";
  // A scheduled concert's button stays usable: the service answers when it opens (REASON_SALE_NOT_OPEN).
  const open = phase === ConcertPhase.ON_SALE || phase === ConcertPhase.PREQUEUE || phase === ConcertPhase.SCHEDULED;
  const join = element("button", { type: "button", textContent: label, disabled: !open });
  const about = phase === ConcertPhase.PREQUEUE ? ", pre-queue open" : phase === ConcertPhase.SCHEDULED ? `, opens ${dateTime(concert.prequeueOpensAt ?? concert.saleOpensAt)}` : "";
  join.setAttribute("aria-label", `Join the queue for ${concert.title}${about}`);
  join.dataset.testid = `join-${concert.id}`;
  join.addEventListener("click", () => void act(join, () => joinQueue(concert)));

  const sale = element("span", { className: "concert-sale", textContent: saleText(concert) });
  sale.dataset.testid = `concert-sale-${concert.id}`;
  sale.dataset.phase = ConcertPhase[phase];
  const price = element("span", { textContent: priceRange(concert) });
  price.dataset.testid = `concert-price-${concert.id}`;
  const dates = element("span", { textContent: datesText(concert) });
  dates.dataset.testid = `concert-dates-${concert.id}`;
  const facts = [sale, price, dates].filter((node) => node.textContent);
  const details = element("div", { className: "muted" });
  facts.forEach((node, i) => details.append(...(i ? [" · ", node] : [node])));

  const item = element("li", {}, element("div", {}, element("div", {}, element("strong", {}, concert.title), concert.venue ? ` · ${concert.venue}` : ""), details), join);
  item.dataset.testid = `concert-${concert.id}`;
  item.dataset.phase = ConcertPhase[phase];
  return item;
}

/**
 * Reads the list again soon after a listed concert's pre-queue or sale opens
 * (its phase and button change then), else every 5 minutes; with a few
 * seconds' jitter, so that the pages open for a big sale do not all ask at the
 * moment it opens.
 */
function readConcertsAgain(concerts: Concert[]) {
  clearTimeout(state.concertsTimer);
  const now = Date.now();
  const next = concerts
    .flatMap((concert) => [ms(concert.prequeueOpensAt), ms(concert.saleOpensAt)])
    .filter((at): at is number => at !== undefined && at > now)
    .reduce((soonest, at) => Math.min(soonest, at), now + 300_000);
  const delay = next - now + 500 + Math.random() * 5_000;
  state.concertsTimer = setTimeout(() => void loadConcerts().catch(() => readConcertsAgain([])), delay);
}

async function joinQueue(concert: Concert) {
  say("");
  state.watch?.abort();
  reconnecting(false);
  const { queueToken, status } = await api.tokens.issueQueueToken({ concertId: concert.id }, user());
  Object.assign(state, { concert, queueToken, schedule: undefined, seats: [], owned: 0, reservation: undefined, entryId: "", queueStatus: undefined });
  state.selected.clear();
  for (const id of ["dates", "seatmap", "hold", "result"]) show(id, false);
  $("draw-result").textContent = "";
  $("queue-concert").textContent = concert.title;
  show("queue");
  renderQueue(status!);
  void watchQueue();
}

/** The states after which the waiting room has nothing more to tell this token. */
const finalStates = new Set([QueueState.ADMITTED, QueueState.EXPIRED, QueueState.LEFT, QueueState.COMPLETED, QueueState.SOLD_OUT, QueueState.CLOSED]);

/**
 * How long to wait before watching again after the `attempt`-th end in a row:
 * exponential backoff (250 ms doubling, at most 10 s) with full jitter, so the
 * pages a restart dropped all at once do not all come back at once.
 */
const reconnectDelay = (attempt: number) => Math.random() * Math.min(10_000, 250 * 2 ** attempt);

/** Resolves after `ms`, or at once when `signal` aborts (the fan joined another queue). */
function sleep(ms: number, signal: AbortSignal) {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * Follows WatchQueueStatus until a final state. Any other end (a server
 * restarting or deploying ends streams with Unavailable, a network drop, a
 * clean end while still WAITING) is followed by watching again: the place
 * belongs to the queue token, not to the stream. Only a refusal with a reason
 * (an expired or invalid token) stops the loop early.
 */
async function watchQueue() {
  const watch = (state.watch = new AbortController());
  for (let attempt = 0; !watch.signal.aborted; attempt++) {
    try {
      for await (const { status } of api.coordinator.watchQueueStatus({}, { ...gated(), signal: watch.signal })) {
        attempt = 0;
        reconnecting(false);
        renderQueue(status!);
      }
    } catch (error) {
      if (watch.signal.aborted) return;
      const reason = reasonOf(error);
      if (reason !== undefined && reason !== Reason.DEPENDENCY_UNAVAILABLE) {
        reconnecting(false);
        say(explain(error));
        return;
      }
    }
    if (watch.signal.aborted) return;
    if (state.queueStatus && finalStates.has(state.queueStatus.state)) break;
    reconnecting(true);
    await sleep(reconnectDelay(attempt), watch.signal);
  }
  if (watch.signal.aborted || state.watch !== watch) return;
  const final = state.queueStatus?.state;
  if (final === QueueState.ADMITTED) await act(undefined, loadSchedules);
  else if (final === QueueState.SOLD_OUT) say(explainReason(Reason.SOLD_OUT)!);
  else if (final === QueueState.EXPIRED) say(sentence(state.queueStatus!.detail) || "Your place in the waiting room expired. Join the queue again.");
  else if (final === QueueState.CLOSED) {
    say(closedText(state.queueStatus!));
    void loadConcerts().catch(() => undefined); // the concert's phase changed
  }
}

/** Why the waiting room closed (the organiser's cancellation and its reason, or the sale's end), as the service says it. */
function closedText(status: QueueStatus) {
  return sentence(status.detail) || explainReason(status.reason === Reason.UNSPECIFIED ? Reason.SALE_CLOSED : status.reason)!;
}

/** Shows, in the waiting room, that the page lost its stream and is getting it back. */
function reconnecting(on: boolean) {
  const line = $("queue-connection");
  line.hidden = !on;
  line.textContent = on ? reconnectingMessage : "";
}

/** WAITING in the pre-queue: entered before the sale opened, no place until the draw. */
const inPrequeue = (status: QueueStatus | undefined) => status?.state === QueueState.WAITING && status.reason === Reason.SALE_NOT_OPEN;
/** WAITING in a room that admits by lot: no place in line to tell. */
const byLot = (status: QueueStatus) => status.state === QueueState.WAITING && status.reason === Reason.RANDOM_ADMISSION;

function renderQueue(status: QueueStatus) {
  state.queueStatus = status;
  if (status.entryId) state.entryId = status.entryId;
  const prequeue = inPrequeue(status);
  const lot = byLot(status);
  const cancelled = status.state === QueueState.CLOSED && status.reason === Reason.CONCERT_CANCELLED;
  $("queue-state").textContent = prequeue ? "Waiting in the pre-queue" : lot ? "Waiting — admitted by lot" : cancelled ? "Cancelled by the organiser" : queueStateText[status.state];
  $("queue-state").dataset.state = QueueState[status.state];
  if (status.reason === Reason.UNSPECIFIED) delete $("queue-state").dataset.reason;
  else $("queue-state").dataset.reason = Reason[status.reason];
  const waiting = status.state === QueueState.WAITING && !prequeue && !lot;
  $("queue-position").textContent = prequeue ? "Drawn at random when the sale opens" : lot ? "None — fans are admitted by lot" : waiting ? `#${status.position}` : "—";
  $("queue-ahead").textContent = waiting ? String(status.peopleAhead) : "—";
  $("queue-wait").textContent = lot ? sentence(status.detail) || explainReason(Reason.RANDOM_ADMISSION)! : waiting ? waitText(status) : "—";
  renderPrequeue(status);
  tick();
}

/**
 * The pre-queue's part of the waiting room: the countdown to the sale, that the
 * draw makes arriving early no advantage, the fan's entry id and how to check
 * the draw. Shown while in the pre-queue and, for an entry that was in it,
 * after the draw too (to check it).
 */
function renderPrequeue(status: QueueStatus) {
  const prequeue = inPrequeue(status);
  const box = $("prequeue");
  box.hidden = !prequeue && !state.entryId;
  if (box.hidden) return;
  $("sale-clock").hidden = !prequeue;
  $("sale-opens-at").textContent = exactTime(status.saleOpensAt ?? state.concert?.saleOpensAt);
  $("prequeue-fairness").textContent = prequeue
    ? "When the sale opens, everyone in the pre-queue gets a random place in line, so arriving early gives no advantage. Keep this page open: you need not do anything."
    : "The sale has opened: everyone who was in the pre-queue was given a random place in line. You can check the draw.";
  $("entry-id").textContent = state.entryId || "—";
  const commitment = state.concert?.seedCommitment ?? "";
  $("seed-commitment").textContent = commitment;
  $("commitment-line").hidden = !commitment;
  $("draw-curl").textContent = `curl -H 'content-type: application/json' -d '{"concertId":"${state.concert?.id ?? ""}"}' ${location.origin}/boxoffice.queue.v1.QueueService/GetSaleFairness`;
}

/** The wait a WAITING fan reads: paused by the organiser (no estimate then), the estimate, or not known yet. */
function waitText(status: QueueStatus) {
  if (status.reason === Reason.QUEUE_PAUSED) return sentence(status.detail) || explainReason(Reason.QUEUE_PAUSED)!;
  const wait = status.estimatedWait;
  return wait ? aboutSeconds(Number(wait.seconds) + wait.nanos / 1e9) : "calculating…";
}

// ---- dates and seats ----

async function loadSchedules() {
  const { schedules } = await api.concerts.listSchedules({ concertId: state.concert!.id });
  const list = $("dates");
  list.replaceChildren();
  for (const schedule of schedules) {
    const label = dateTime(schedule.startsAt);
    const left = schedule.availableSeats > 0 ? `${schedule.availableSeats} of ${schedule.totalSeats} seats left` : "sold out";
    const admitted = state.queueStatus?.state === QueueState.ADMITTED;
    const pick = element("button", { type: "button", textContent: "Choose", disabled: schedule.availableSeats === 0 || !admitted });
    pick.setAttribute("aria-label", `Choose ${label}`);
    pick.dataset.testid = `date-${schedule.id}`;
    pick.addEventListener("click", () => void act(pick, () => pickDate(schedule)));
    list.append(element("li", {}, element("span", {}, element("strong", {}, label), ` · ${left}`), pick));
  }
  show("dates");
}

async function pickDate(schedule: Schedule) {
  say("");
  state.schedule = schedule;
  state.selected.clear();
  $("seatmap-date").textContent = dateTime(schedule.startsAt);
  await Promise.all([loadSeats(), countOwned()]);
  renderSeatControls();
  show("seatmap");
}

/** Counts the seats the fan already has for this concert (the per-fan limit spans its dates), for best-available's choice of count. */
async function countOwned() {
  const concertId = state.concert?.id;
  if (!concertId || !state.concert?.seatLimit) return;
  const now = Date.now();
  const live = (r: Reservation) => r.state === ReservationState.CONFIRMED || (r.state === ReservationState.HELD && (ms(r.expiresAt) ?? 0) > now);
  try {
    state.owned = (await allReservations()).filter((r) => r.concertId === concertId && live(r)).reduce((sum, r) => sum + r.seatNumbers.length, 0);
  } catch {
    state.owned = 0; // the service decides in the end (FAN_LIMIT_REACHED)
  }
}

async function loadSeats() {
  if (!state.schedule) return;
  const { seats } = await api.concerts.listSeats({ scheduleId: state.schedule.id }, gated());
  state.seats = seats;
  renderSeats();
}

/** Whether the date has a seat plan: seats in named sections (a date without one has a single unnamed section and row). */
const planned = () => state.seats.some((seat) => seat.section !== "" || seat.row !== "");

/** The date's price tiers in plan order, with their price and a colour each. */
function tiers() {
  const found = new Map<string, bigint>();
  for (const seat of state.seats) if (!found.has(seat.tier)) found.set(seat.tier, seat.price);
  return [...found].map(([name, price], i) => ({ name, price, colour: tierColours[i % tierColours.length]! }));
}
const tierColours = ["#d97706", "#0e7490", "#be185d", "#4d7c0f", "#7c3aed", "#b91c1c"];

/** The seat's place in words: "Stalls, row A, seat 5" (or "Seat 5" without a plan). */
const seatName = (seat: Seat) => (seat.section || seat.row ? `${seat.section}${seat.section ? ", " : ""}row ${seat.row}, seat ${seat.label}` : `Seat ${seat.number}`);

/**
 * Which seats these are, for the hold and the payment: their numbers without
 * a plan ("1, 2"), else by section and row ("Stalls · row A · seats 5, 6").
 */
function describeSeats(numbers: number[]) {
  const seats = numbers.map((n) => state.seats.find((seat) => seat.number === n));
  if (!planned() || seats.some((seat) => !seat)) return numbers.join(", ");
  const groups = new Map<string, Seat[]>();
  for (const seat of seats as Seat[]) {
    const key = `${seat.section} · row ${seat.row}`;
    groups.set(key, [...(groups.get(key) ?? []), seat]);
  }
  return [...groups]
    .map(([key, list]) => `${key} · ${list.length === 1 ? "seat" : "seats"} ${list.sort((a, b) => a.place - b.place).map((seat) => seat.label).join(", ")}`)
    .join("; ");
}

function seatButton(seat: Seat, colour: string | undefined) {
  const name = seatStateName(seat);
  const selected = state.selected.has(seat.number);
  const text = planned() ? seat.label : String(seat.number);
  const button = element("button", { type: "button", className: "seat", textContent: text, disabled: name !== "available" });
  button.dataset.testid = `seat-${seat.number}`;
  button.dataset.state = name;
  if (seat.tier) button.dataset.tier = seat.tier;
  if (colour) button.style.setProperty("--tier", colour);
  button.setAttribute("aria-pressed", String(selected));
  const tier = seat.tier ? `${seat.tier}, ` : "";
  button.setAttribute("aria-label", `${seatName(seat)}, ${tier}${points(seat.price)}, ${name === "mine" ? "yours" : name}`);
  if (seat.tier) button.title = `${seatName(seat)} · ${tier}${points(seat.price)}`;
  button.addEventListener("click", () => {
    if (state.selected.delete(seat.number)) return renderSeats();
    if (state.selected.size >= maxSeats()) return say(seatLimitText());
    state.selected.add(seat.number);
    renderSeats();
  });
  return button;
}

function renderSeats() {
  const grid = $("seats");
  grid.replaceChildren();
  const plan = planned();
  const tierList = tiers();
  const colours = new Map(tierList.map((tier) => [tier.name, tier.colour]));
  grid.className = plan ? "seatplan" : "seats";
  if (!plan) {
    for (const seat of state.seats) grid.append(seatButton(seat, undefined));
  } else {
    // Sections in plan order (the seats are numbered sections first, then rows, then seats), rows front first, seats along the row.
    const sections = new Map<string, Map<string, Seat[]>>();
    for (const seat of [...state.seats].sort((a, b) => a.number - b.number)) {
      let rows = sections.get(seat.section);
      if (!rows) sections.set(seat.section, (rows = new Map()));
      rows.set(seat.row, [...(rows.get(seat.row) ?? []), seat]);
    }
    for (const [name, rows] of sections) {
      const block = withTestId(element("div", { className: "seat-section" }, element("h3", { textContent: name || "Seats" })), `section-${name}`);
      block.setAttribute("role", "group");
      block.setAttribute("aria-label", `Section ${name}`);
      const ordered = [...rows].sort(([, a], [, b]) => a[0]!.rowPosition - b[0]!.rowPosition);
      for (const [label, seats] of ordered) {
        const line = withTestId(element("div", { className: "seat-row" }, element("span", { className: "row-label", textContent: label })), `row-${name}-${label}`);
        line.setAttribute("role", "group");
        line.setAttribute("aria-label", `Row ${label}`);
        const along = element("div", { className: "row-seats" });
        for (const seat of seats.sort((a, b) => a.place - b.place)) along.append(seatButton(seat, colours.get(seat.tier)));
        line.append(along);
        block.append(line);
      }
      grid.append(block);
    }
  }
  renderTierLegend(plan ? tierList : []);
  renderSeatControls();
}

/** Each tier with its price (with a plan; without one, no legend), and best-available's choice of tier. */
function renderTierLegend(list: ReturnType<typeof tiers>) {
  const legend = $("tier-legend");
  legend.replaceChildren();
  legend.hidden = list.length === 0;
  for (const tier of list) {
    const item = withTestId(element("span", { className: "tier" }, element("strong", { textContent: tier.name }), ` ${points(tier.price)}`), `tier-${tier.name}`);
    item.style.setProperty("--tier", tier.colour);
    legend.append(item);
  }
  const select = $<HTMLSelectElement>("best-tier");
  const options = list.length ? list.map((tier) => ({ value: tier.name, text: `${tier.name} · ${points(tier.price)}` })) : [{ value: "", text: "Any seats" }];
  if (Array.from(select.options).map((o) => o.value).join("\n") !== options.map((o) => o.value).join("\n")) {
    const previous = select.value;
    select.replaceChildren(...options.map((o) => element("option", { value: o.value, textContent: o.text })));
    if (options.some((o) => o.value === previous)) select.value = previous;
  }
}

/** How many seats best-available may ask for: what one hold may have, within what the fan may still take for this concert. */
function bestAvailableMax() {
  const limit = state.concert?.seatLimit;
  return Math.max(0, Math.min(seatsPerHold, limit ? limit - state.owned : seatsPerHold));
}

function renderSeatControls() {
  const chosen = [...state.selected].sort((a, b) => a - b);
  const price = state.seats.filter((s) => state.selected.has(s.number)).reduce((sum, s) => sum + s.price, 0n);
  $("selection").textContent = chosen.length ? `Selected: ${chosen.join(", ")} · ${points(price)}` : `Select up to ${maxSeats()} ${maxSeats() === 1 ? "seat" : "seats"}.`;
  const sessionOpen = state.queueStatus?.state === QueueState.ADMITTED;
  $<HTMLButtonElement>("hold").disabled = chosen.length === 0 || !sessionOpen || state.reservation !== undefined;
  $<HTMLButtonElement>("refresh-seats").disabled = !sessionOpen;
  const count = $<HTMLSelectElement>("best-count");
  const most = bestAvailableMax();
  if (count.options.length !== most) {
    const previous = Number(count.value) || 2;
    count.replaceChildren(...Array.from({ length: most }, (_, i) => element("option", { value: String(i + 1), textContent: String(i + 1) })));
    count.value = String(Math.min(previous, most) || 1);
  }
  $<HTMLButtonElement>("best-hold").disabled = most === 0 || !sessionOpen || state.reservation !== undefined || state.seats.length === 0;
}

/** Why no more seats can be selected: the concert's per-fan limit, or what one hold may have. */
function seatLimitText() {
  const limit = state.concert?.seatLimit;
  if (limit && limit <= seatsPerHold) return `You can have at most ${limit} ${limit === 1 ? "seat" : "seats"} for this concert, over all its dates.`;
  return `You can hold at most ${seatsPerHold} seats at a time.`;
}

// ---- checking the pre-queue's draw ----

const hex = (bytes: ArrayBuffer) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
const fromHex = (text: string) => new Uint8Array((text.match(/../g) ?? []).map((pair) => parseInt(pair, 16)));

/**
 * Checks the draw in the browser from what GetSaleFairness publishes: that
 * the seed's SHA-256 is the commitment, and where the fan's entry id comes in
 * the order (the ids sorted by HMAC-SHA256 keyed with the seed).
 */
async function checkDraw() {
  const result = $("draw-result");
  const concertId = state.concert!.id;
  const fairness = await api.queue.getSaleFairness({ concertId });
  delete result.dataset.verified;
  result.dataset.draw = DrawState[fairness.state];
  if (fairness.state !== DrawState.DRAWN) {
    result.textContent = `Not drawn yet: the seed is revealed when the sale opens${fairness.saleOpensAt ? ` (${exactTime(fairness.saleOpensAt)})` : ""}. Commitment: ${fairness.seedCommitment || "not published"}.`;
    return;
  }
  if (!crypto.subtle) {
    result.textContent = `Drawn. This page cannot compute SHA-256 here (it is not served over a secure connection): check it yourself with the seed ${fairness.seed} and the ${fairness.entryIds.length} entry ids GetSaleFairness publishes.`;
    return;
  }
  const { text, verified } = await verifyDraw(fairness, state.entryId, state.concert?.seedCommitment ?? "");
  result.textContent = text;
  result.dataset.verified = String(verified);
}

async function verifyDraw(fairness: GetSaleFairnessResponse, entryId: string, listedCommitment: string) {
  const seed = fromHex(fairness.seed);
  const commitment = hex(await crypto.subtle.digest("SHA-256", seed));
  const problems: string[] = [];
  if (commitment !== fairness.seedCommitment.toLowerCase()) problems.push("the seed's SHA-256 does not match the commitment");
  if (listedCommitment && listedCommitment.toLowerCase() !== fairness.seedCommitment.toLowerCase()) problems.push("the commitment differs from the one published with the concert");
  const key = await crypto.subtle.importKey("raw", seed, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const text = new TextEncoder();
  const ranked = await Promise.all(fairness.entryIds.map(async (id) => ({ id, mac: hex(await crypto.subtle.sign("HMAC", key, text.encode(id))) })));
  ranked.sort((a, b) => (a.mac < b.mac ? -1 : a.mac > b.mac ? 1 : 0));
  const place = ranked.findIndex((entry) => entry.id === entryId) + 1;
  if (entryId && place === 0) problems.push("your entry id is not in the draw's list");
  if (problems.length) return { verified: false, text: `Checked: ${problems.join("; ")}.` };
  const drawn = fairness.drawnAt ? ` at ${exactTime(fairness.drawnAt)}` : "";
  const mine = entryId ? ` Your entry ${entryId} came number ${place} of ${ranked.length} in the draw.` : ` ${ranked.length} entries were drawn.`;
  return { verified: true, text: `Checked: the seed revealed${drawn} matches the commitment published before the sale.${mine}` };
}

// ---- hold, points, payment ----

async function holdSeats() {
  say("");
  const seatNumbers = [...state.selected].sort((a, b) => a - b);
  const { reservation } = await api.coordinator.reserveSeats({ scheduleId: state.schedule!.id, seatNumbers }, gated());
  await showHold(reservation!);
}

/** Best available: the service picks `count` adjacent seats of the tier, in the best row that has them. */
async function holdBestAvailable() {
  say("");
  const tier = $<HTMLSelectElement>("best-tier").value;
  const count = Number($<HTMLSelectElement>("best-count").value);
  try {
    const { reservation } = await api.reservations.holdBestAvailable({ scheduleId: state.schedule!.id, tier, count }, gated());
    await showHold(reservation!);
  } catch (error) {
    if (reasonOf(error) !== Reason.SEAT_UNAVAILABLE) throw error;
    const why = sentence(ConnectError.from(error).rawMessage);
    say(`Sorry, we could not find ${count} ${count === 1 ? "seat" : "seats"} together${tier ? ` in ${tier}` : ""}. ${why ? `${why} ` : ""}Try fewer seats${tier ? " or another tier" : ""}, or pick seats on the map.`);
    await loadSeats().catch(() => undefined);
  }
}

/** Shows a new hold: its seats, price and countdown, and the map with them as the fan's. */
async function showHold(reservation: Reservation) {
  state.reservation = reservation;
  state.selected.clear();
  state.owned += reservation.seatNumbers.length;
  const seats = loadSeats().catch(() => undefined);
  if (reservation.seatNumbers.some((n) => !state.seats.some((seat) => seat.number === n))) await seats; // labels of seats not drawn yet
  $("hold-seats").textContent = describeSeats(reservation.seatNumbers);
  $("hold-amount").textContent = points(reservation.amount);
  $("pay").textContent = `Pay ${points(reservation.amount)}`;
  show("hold");
  show("result", false);
  const named = planned() ? describeSeats(reservation.seatNumbers) : seatList(reservation.seatNumbers);
  notify(`${named} ${reservation.seatNumbers.length === 1 ? "is" : "are"} held for you. Pay before the countdown ends.`);
  tick();
  await Promise.all([seats, loadSchedules()]);
}

function dropHold() {
  state.reservation = undefined;
  show("hold", false);
}

async function charge(amount: bigint) {
  const { balance } = await api.points.chargePoints({ amount, idempotencyKey: newKey() }, user());
  $("balance").textContent = balance.toLocaleString("en");
  notify(`Added ${points(amount)}. Your balance is ${points(balance)}.`);
}

async function pay() {
  say("");
  let { payment, reservation } = await api.coordinator.checkout({ reservationId: state.reservation!.id, idempotencyKey: newKey() }, gated());
  // An outage can leave a payment PENDING for a while; the server finishes it, we just look again.
  for (let i = 0; payment!.state === PaymentState.PENDING && i < 10; i++) {
    notify("Your payment is being processed…");
    await new Promise((resolve) => setTimeout(resolve, 1000));
    ({ payment } = await api.payments.getPayment({ paymentId: payment!.id }, user()));
  }
  await refreshBalance();
  showPayment(payment!, reservation);
  if (!section("bookings").hidden) await loadBookings().catch(() => undefined);
  await loadSchedules(); // public: still readable after the session ended, and shows the seats gone
}

function showPayment(payment: Payment, reservation: Reservation | undefined) {
  $("payment-state").textContent = PaymentState[payment.state];
  $("payment-state").dataset.state = PaymentState[payment.state];
  if (payment.state === PaymentState.SUCCEEDED) {
    const seats = reservation?.seatNumbers ?? state.reservation!.seatNumbers;
    // Paying ends the queue session, so the seat map (a gated read) cannot be fetched again: mark the seats we bought.
    for (const seat of state.seats) if (seats.includes(seat.number)) seat.state = SeatState.SOLD;
    state.reservation = undefined;
    renderQueue({ ...state.queueStatus!, state: QueueState.COMPLETED, admittedUntil: undefined });
    renderSeats();
    $("result-seats").textContent = planned() ? `${describeSeats(seats)}: SOLD to you` : seats.map((n) => `Seat ${n}: SOLD to you`).join(" · ");
    show("hold", false);
    show("result");
    $("result-tickets").hidden = false;
    notify(`Payment succeeded: ${points(payment.amount)} paid. ${planned() ? describeSeats(seats) : seatList(seats)} ${seats.length === 1 ? "is" : "are"} yours. Enjoy the show!`);
  } else if (payment.state === PaymentState.FAILED) {
    $("result-tickets").hidden = true;
    say(explainReason(payment.failureReason) ?? `The payment failed: ${payment.failureMessage || "unknown reason"}.`);
    show("result");
    void recover(payment.failureReason).finally(() => {
      const held = state.reservation?.seatNumbers;
      $("result-seats").textContent = held ? `Still held for you: ${held.join(", ")}` : "No seats held";
      renderSeatControls();
    });
  } else {
    say("Your payment is still being processed. Check your balance and bookings again in a minute.");
  }
}

// ---- my bookings and tickets ----

/** The fan's bookings as last listed, their tickets, and what the section shows. */
const bookings = {
  reservations: [] as Reservation[],
  /** Tickets by reservation id. */
  tickets: new Map<string, Ticket[]>(),
  /** The booking whose "really cancel?" question is open, if any. */
  confirming: "",
  /** Counts the listings, so that an older answer arriving late does not overwrite a newer one. */
  generation: 0,
  /** A QR image (data: URL) per ticket code, made once. */
  qr: new Map<string, Promise<string>>(),
};

/** Most pages of bookings (100 each) the section reads. */
const mostPages = 5;

async function allReservations() {
  const all: Reservation[] = [];
  let pageToken = "";
  for (let i = 0; i < mostPages; i++) {
    const page = await api.reservations.listReservations({ pageSize: 100, pageToken }, user());
    all.push(...page.reservations);
    if (!(pageToken = page.nextPageToken)) break;
  }
  return all;
}

async function allTickets() {
  const all: Ticket[] = [];
  let pageToken = "";
  for (let i = 0; i < mostPages; i++) {
    const page = await api.tickets.listTickets({ pageSize: 100, pageToken }, user());
    all.push(...page.tickets);
    if (!(pageToken = page.nextPageToken)) break;
  }
  return all;
}

/** Paid bookings (CONFIRMED) and cancelled ones; holds never paid for are no booking. */
const isBooking = (reservation: Reservation) => reservation.state === ReservationState.CONFIRMED || reservation.state === ReservationState.CANCELLED;

/** Reads the fan's bookings and tickets again and draws them, newest first. */
async function loadBookings() {
  const generation = ++bookings.generation;
  const [reservations, tickets] = await Promise.all([allReservations(), allTickets()]);
  if (generation !== bookings.generation) return;
  bookings.reservations = reservations.filter(isBooking).sort((a, b) => (ms(b.createdAt) ?? 0) - (ms(a.createdAt) ?? 0));
  bookings.tickets = new Map();
  for (const ticket of tickets) {
    const list = bookings.tickets.get(ticket.reservationId) ?? [];
    list.push(ticket);
    bookings.tickets.set(ticket.reservationId, list);
  }
  for (const list of bookings.tickets.values()) list.sort((a, b) => a.seatNumber - b.seatNumber);
  renderBookings();
}

async function openBookings() {
  show("bookings");
  $("bookings-status").textContent = "Loading your bookings…";
  section("bookings").scrollIntoView({ block: "start" });
  try {
    await loadBookings();
  } finally {
    if ($("bookings-status").textContent === "Loading your bookings…") $("bookings-status").textContent = "";
  }
}

function qrImage(code: string) {
  let url = bookings.qr.get(code);
  if (!url) {
    url = QRCode.toDataURL(code, { errorCorrectionLevel: "M", margin: 2, width: 256 });
    bookings.qr.set(code, url);
  }
  return url;
}

const ticketStateText: Record<TicketState, string> = {
  [TicketState.UNSPECIFIED]: "unknown",
  [TicketState.VALID]: "valid",
  [TicketState.USED]: "used",
  [TicketState.VOID]: "void",
};

function bookingStateText(reservation: Reservation) {
  if (reservation.state === ReservationState.CONFIRMED) return "Confirmed";
  const reason = reservation.cancelReason ? ` (${reservation.cancelReason})` : "";
  const at = reservation.cancelledAt ? ` on ${dateTime(reservation.cancelledAt)}` : "";
  return `Cancelled${at}${reason} · ${reservation.refundedAt ? `refunded ${points(reservation.amount)}` : "refund under way…"}`;
}

function renderBookings() {
  const list = $("bookings");
  list.replaceChildren();
  $("bookings-status").textContent = bookings.reservations.length === 0 ? "You have no bookings yet." : "";
  for (const reservation of bookings.reservations) list.append(bookingItem(reservation));
}

const withTestId = <T extends HTMLElement>(node: T, testId: string) => {
  node.dataset.testid = testId;
  return node;
};

function bookingItem(reservation: Reservation) {
  const id = reservation.id;
  const tickets = bookings.tickets.get(id) ?? [];
  const first = tickets[0];
  const concert = state.concerts.get(reservation.concertId);
  const title = first?.concertTitle || concert?.title || "Concert";
  const venue = first?.venue || concert?.venue || "";
  const order = first?.orderNumber || "—";
  const confirmed = reservation.state === ReservationState.CONFIRMED;

  const stateLabel = withTestId(element("span", { className: "booking-state", textContent: bookingStateText(reservation) }), `booking-state-${id}`);
  stateLabel.dataset.state = ReservationState[reservation.state];
  stateLabel.dataset.refunded = String(reservation.refundedAt !== undefined);
  const head = element(
    "div",
    { className: "booking-head" },
    element("span", {}, "Order ", withTestId(element("strong", { textContent: order }), `booking-order-${id}`)),
    stateLabel,
  );
  const facts = element(
    "dl",
    {},
    element("dt", {}, "Concert"),
    withTestId(element("dd", { textContent: venue ? `${title} · ${venue}` : title }), `booking-concert-${id}`),
    element("dt", {}, "Date"),
    withTestId(element("dd", { textContent: dateTime(first?.startsAt) || "—" }), `booking-date-${id}`),
    element("dt", {}, "Seats"),
    withTestId(element("dd", { textContent: reservation.seatNumbers.join(", ") }), `booking-seats-${id}`),
    element("dt", {}, "Amount"),
    withTestId(element("dd", { textContent: points(reservation.amount) }), `booking-amount-${id}`),
  );
  const item = withTestId(element("li", { className: "booking" }, head, facts), `booking-${id}`);
  item.dataset.state = ReservationState[reservation.state];
  if (!confirmed) return item;

  const ticketList = withTestId(element("ul", { className: "tickets" }), `tickets-${id}`);
  for (const ticket of tickets) ticketList.append(ticketItem(ticket));
  item.append(ticketList);

  if (tickets.some((ticket) => ticket.state === TicketState.USED)) return item; // the service would refuse (TICKET_USED)
  const cancel = withTestId(element("button", { type: "button", className: "danger", textContent: "Cancel booking" }), `cancel-${id}`);
  cancel.setAttribute("aria-label", `Cancel booking ${order}`);
  cancel.addEventListener("click", () => {
    bookings.confirming = id;
    renderBookings();
    $<HTMLButtonElement>(`cancel-confirm-${id}`).focus();
  });
  item.append(element("div", { className: "row" }, cancel));
  if (bookings.confirming === id) {
    const yes = withTestId(element("button", { type: "button", className: "danger", textContent: "Yes, cancel booking" }), `cancel-confirm-${id}`);
    const no = withTestId(element("button", { type: "button", className: "secondary", textContent: "Keep booking" }), `cancel-keep-${id}`);
    yes.addEventListener("click", () => void act(yes, () => cancelBooking(reservation, order)));
    no.addEventListener("click", () => {
      bookings.confirming = "";
      renderBookings();
    });
    cancel.disabled = true;
    const question = `Cancel booking ${order}? ${seatList(reservation.seatNumbers)} go${reservation.seatNumbers.length === 1 ? "es" : ""} back on sale, the tickets stop working and your ${points(reservation.amount)} are refunded. This cannot be undone.`;
    item.append(withTestId(element("div", { className: "confirm-cancel", role: "alertdialog" }, element("p", {}, question), element("div", { className: "row" }, yes, no)), `cancel-question-${id}`));
  }
  return item;
}

function ticketItem(ticket: Ticket) {
  const key = `${ticket.reservationId}-${ticket.seatNumber}`;
  const image = withTestId(element("img", { alt: `QR code of the ticket for seat ${ticket.seatNumber}`, width: 256, height: 256 }), `ticket-qr-${key}`);
  void qrImage(ticket.code).then(
    (url) => (image.src = url),
    () => (image.alt = "The QR code could not be drawn: show the code below instead."),
  );
  const stateLabel = withTestId(element("span", { textContent: ticketStateText[ticket.state] }), `ticket-state-${key}`);
  stateLabel.dataset.state = TicketState[ticket.state];
  const used = ticket.state === TicketState.USED && ticket.usedAt ? ` ${dateTime(ticket.usedAt)}${ticket.gate ? ` at ${ticket.gate}` : ""}` : "";
  const item = withTestId(
    element(
      "li",
      { className: "ticket" },
      image,
      element("div", {}, withTestId(element("strong", { textContent: `Seat ${ticket.seatNumber}` }), `ticket-seat-${key}`), " · ", points(ticket.price)),
      element("div", {}, "Ticket ", stateLabel, used),
      withTestId(element("code", { textContent: ticket.code, title: ticket.code }), `ticket-code-${key}`),
    ),
    `ticket-${key}`,
  );
  item.dataset.state = TicketState[ticket.state];
  return item;
}

/** Cancels a booking, shows it cancelled, then watches for its refund for a few seconds. */
async function cancelBooking(reservation: Reservation, order: string) {
  say("");
  try {
    const { reservation: cancelled } = await api.reservations.cancelReservation({ reservationId: reservation.id }, user());
    bookings.confirming = "";
    if (cancelled) bookings.reservations = bookings.reservations.map((r) => (r.id === cancelled.id ? cancelled : r));
    renderBookings();
    // The seats are on sale again: the date list (public) counts them back.
    if (state.concert?.id === reservation.concertId) void loadSchedules().catch(() => undefined);
    if (cancelled?.refundedAt) return refunded(cancelled, order);
    notify(`Booking ${order} is cancelled. Your ${points(reservation.amount)} are on their way back…`);
    void watchRefund(reservation.id, order).catch(() => undefined);
  } catch (error) {
    bookings.confirming = "";
    await loadBookings().catch(() => undefined);
    throw error;
  }
}

async function refunded(reservation: Reservation, order: string) {
  await refreshBalance();
  notify(`Booking ${order} is cancelled and ${points(reservation.amount)} are back on your balance (${$("balance").textContent} points).`);
}

/** Reads the bookings and balance again every half second, for up to 15 s, until the booking's refund has landed. */
async function watchRefund(reservationId: string, order: string) {
  for (let i = 0; i < 30; i++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    await loadBookings();
    const booking = bookings.reservations.find((r) => r.id === reservationId);
    if (booking?.refundedAt) return refunded(booking, order);
  }
  await refreshBalance();
  notify(`Booking ${order} is cancelled. The refund is still under way: your points come back shortly (refresh your bookings in a minute).`);
}

// ---- countdowns ----

function tick() {
  const now = Date.now();
  if (inPrequeue(state.queueStatus)) {
    const opens = ms(state.queueStatus!.saleOpensAt ?? state.concert?.saleOpensAt);
    const countdown = opens === undefined ? "—" : opens > now ? longClock(opens - now) : "opening… the draw is being made";
    if ($("sale-countdown").textContent !== countdown) $("sale-countdown").textContent = countdown;
  }
  const until = state.queueStatus?.state === QueueState.ADMITTED ? state.queueStatus.admittedUntil : undefined;
  $("session-countdown").textContent = until ? clock(timestampMs(until) - now) : "—";
  if (until && timestampMs(until) <= now && state.queueStatus!.state === QueueState.ADMITTED) {
    renderQueue({ ...state.queueStatus!, state: QueueState.EXPIRED });
    say(explainReason(Reason.QUEUE_TOKEN_EXPIRED)!);
  }
  const hold = state.reservation?.expiresAt;
  if (!hold) return;
  const left = timestampMs(hold) - now;
  $("hold-countdown").textContent = clock(left);
  if (left <= 0) {
    dropHold();
    say(explainReason(Reason.HOLD_EXPIRED)!);
    void loadSeats().catch(() => undefined);
  }
}

// ---- wiring ----

$("hold").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, holdSeats));
$("best-available").addEventListener("submit", (event) => {
  event.preventDefault();
  void act($<HTMLButtonElement>("best-hold"), holdBestAvailable);
});
$("refresh-seats").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, loadSeats));
$("pay").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, pay));
$("check-draw").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, checkDraw));
$("charge-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("charge-amount");
  if (!/^\d+$/.test(input.value) || BigInt(input.value) < 1n) return say("Enter a whole number of points to add (1 to 10,000,000).");
  void act($<HTMLButtonElement>("charge"), () => charge(BigInt(input.value)));
});
for (const link of ["open-bookings", "see-tickets"]) {
  $(link).addEventListener("click", (event) => {
    event.preventDefault();
    void act(undefined, openBookings);
  });
}
$("refresh-bookings").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, loadBookings));
$("close-bookings").addEventListener("click", () => show("bookings", false));
setInterval(tick, 250);

void act(undefined, async () => {
  await signIn();
  await loadConcerts();
  if (location.hash === "#bookings") await openBookings();
  document.body.dataset.ready = "true";
});
