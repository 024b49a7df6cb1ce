/// <reference lib="dom" />
// The fan's booking page: plain DOM over Connect-Web (HTTP/1.1, same origin).
// Bundled by services/web/index.ts with esbuild when the server starts.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient, type CallOptions } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { Reason } from "../../gen/boxoffice/common/v1/error_pb.js";
import { ConcertService, SeatState, type Concert, type Schedule, type Seat } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentService, PaymentState, type Payment } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../../gen/boxoffice/point/v1/point_pb.js";
import { QueueState, type QueueStatus } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import type { Reservation } from "../../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TokenService } from "../../gen/boxoffice/token/v1/token_pb.js";
import { explain, explainReason, reasonOf, reconnectingMessage, sentence } from "./messages.js";

const transport = createConnectTransport({ baseUrl: location.origin });
const api = {
  tokens: createClient(TokenService, transport),
  concerts: createClient(ConcertService, transport),
  coordinator: createClient(CoordinatorService, transport),
  points: createClient(PointService, transport),
  payments: createClient(PaymentService, transport),
};

const tokenKey = "boxoffice.userToken";
const maxSeats = 4;

/** Everything the page knows; each render reads from here. */
const state = {
  userToken: "",
  concert: undefined as Concert | undefined,
  queueToken: "",
  queueStatus: undefined as QueueStatus | undefined,
  schedule: undefined as Schedule | undefined,
  seats: [] as Seat[],
  selected: new Set<number>(),
  reservation: undefined as Reservation | undefined,
  watch: undefined as AbortController | undefined,
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
  const list = $("concerts");
  list.replaceChildren();
  if (concerts.length === 0) list.append(element("li", {}, "No concerts on sale right now."));
  for (const concert of concerts) {
    const join = element("button", { type: "button", textContent: "Join the queue" });
    join.setAttribute("aria-label", `Join the queue for ${concert.title}`);
    join.dataset.testid = `join-${concert.id}`;
    join.addEventListener("click", () => void act(join, () => joinQueue(concert)));
    list.append(element("li", {}, element("span", {}, element("strong", {}, concert.title), concert.venue ? ` · ${concert.venue}` : ""), join));
  }
}

async function joinQueue(concert: Concert) {
  say("");
  state.watch?.abort();
  reconnecting(false);
  const { queueToken, status } = await api.tokens.issueQueueToken({ concertId: concert.id }, user());
  Object.assign(state, { concert, queueToken, schedule: undefined, seats: [], reservation: undefined });
  state.selected.clear();
  for (const id of ["dates", "seatmap", "hold", "result"]) show(id, false);
  $("queue-concert").textContent = concert.title;
  show("queue");
  renderQueue(status!);
  void watchQueue();
}

/** The states after which the waiting room has nothing more to tell this token. */
const finalStates = new Set([QueueState.ADMITTED, QueueState.EXPIRED, QueueState.LEFT, QueueState.COMPLETED, QueueState.SOLD_OUT]);

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
}

/** Shows, in the waiting room, that the page lost its stream and is getting it back. */
function reconnecting(on: boolean) {
  const line = $("queue-connection");
  line.hidden = !on;
  line.textContent = on ? reconnectingMessage : "";
}

function renderQueue(status: QueueStatus) {
  state.queueStatus = status;
  $("queue-state").textContent = queueStateText[status.state];
  $("queue-state").dataset.state = QueueState[status.state];
  if (status.reason === Reason.UNSPECIFIED) delete $("queue-state").dataset.reason;
  else $("queue-state").dataset.reason = Reason[status.reason];
  const waiting = status.state === QueueState.WAITING;
  $("queue-position").textContent = waiting ? `#${status.position}` : "—";
  $("queue-ahead").textContent = waiting ? String(status.peopleAhead) : "—";
  $("queue-wait").textContent = waiting ? waitText(status) : "—";
  tick();
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
  await loadSeats();
  show("seatmap");
}

async function loadSeats() {
  if (!state.schedule) return;
  const { seats } = await api.concerts.listSeats({ scheduleId: state.schedule.id }, gated());
  state.seats = seats;
  renderSeats();
}

function renderSeats() {
  const grid = $("seats");
  grid.replaceChildren();
  for (const seat of state.seats) {
    const name = seatStateName(seat);
    const selected = state.selected.has(seat.number);
    const button = element("button", { type: "button", className: "seat", textContent: String(seat.number), disabled: name !== "available" });
    button.dataset.testid = `seat-${seat.number}`;
    button.dataset.state = name;
    button.setAttribute("aria-pressed", String(selected));
    button.setAttribute("aria-label", `Seat ${seat.number}, ${points(seat.price)}, ${name === "mine" ? "yours" : name}`);
    button.addEventListener("click", () => {
      if (state.selected.delete(seat.number)) return renderSeats();
      if (state.selected.size >= maxSeats) return say(`You can hold at most ${maxSeats} seats at a time.`);
      state.selected.add(seat.number);
      renderSeats();
    });
    grid.append(button);
  }
  renderSeatControls();
}

function renderSeatControls() {
  const chosen = [...state.selected].sort((a, b) => a - b);
  const price = state.seats.filter((s) => state.selected.has(s.number)).reduce((sum, s) => sum + s.price, 0n);
  $("selection").textContent = chosen.length ? `Selected: ${chosen.join(", ")} · ${points(price)}` : "Select up to 4 seats.";
  const sessionOpen = state.queueStatus?.state === QueueState.ADMITTED;
  $<HTMLButtonElement>("hold").disabled = chosen.length === 0 || !sessionOpen || state.reservation !== undefined;
  $<HTMLButtonElement>("refresh-seats").disabled = !sessionOpen;
}

// ---- hold, points, payment ----

async function holdSeats() {
  say("");
  const seatNumbers = [...state.selected].sort((a, b) => a - b);
  const { reservation } = await api.coordinator.reserveSeats({ scheduleId: state.schedule!.id, seatNumbers }, gated());
  state.reservation = reservation;
  state.selected.clear();
  $("hold-seats").textContent = reservation!.seatNumbers.join(", ");
  $("hold-amount").textContent = points(reservation!.amount);
  $("pay").textContent = `Pay ${points(reservation!.amount)}`;
  show("hold");
  show("result", false);
  notify(`${seatList(reservation!.seatNumbers)} ${reservation!.seatNumbers.length === 1 ? "is" : "are"} held for you. Pay before the countdown ends.`);
  tick();
  await Promise.all([loadSeats(), loadSchedules()]);
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
    $("result-seats").textContent = seats.map((n) => `Seat ${n}: SOLD to you`).join(" · ");
    show("hold", false);
    show("result");
    notify(`Payment succeeded: ${points(payment.amount)} paid. ${seatList(seats)} ${seats.length === 1 ? "is" : "are"} yours. Enjoy the show!`);
  } else if (payment.state === PaymentState.FAILED) {
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

// ---- countdowns ----

function tick() {
  const now = Date.now();
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
$("refresh-seats").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, loadSeats));
$("pay").addEventListener("click", (event) => void act(event.currentTarget as HTMLButtonElement, pay));
$("charge-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("charge-amount");
  if (!/^\d+$/.test(input.value) || BigInt(input.value) < 1n) return say("Enter a whole number of points to add (1 to 10,000,000).");
  void act($<HTMLButtonElement>("charge"), () => charge(BigInt(input.value)));
});
setInterval(tick, 250);

void act(undefined, async () => {
  await signIn();
  await loadConcerts();
  document.body.dataset.ready = "true";
});
