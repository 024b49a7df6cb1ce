/// <reference lib="dom" />
// The operator console: every concert's sale, live, and the waiting rooms'
// controls. Plain DOM over Connect-Web (HTTP/1.1, same origin), signed in with
// the operator key (sent as `authorization: Bearer <key>`, kept in
// sessionStorage). Bundled by services/web/index.ts with esbuild at start.
import { durationMs, timestampFromDate, timestampMs, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type CallOptions } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ConcertAdminService, ConcertPhase, ConcertService, type Concert, type SeatCounts } from "../../gen/boxoffice/concert/v1/concert_pb.js";
import { PaymentAdminService, type PaymentCounts } from "../../gen/boxoffice/payment/v1/payment_pb.js";
import { QueueAdminService, type QueueStats } from "../../gen/boxoffice/queue/v1/queue_pb.js";
import { explain } from "./messages.js";

const transport = createConnectTransport({ baseUrl: location.origin });
const api = {
  concerts: createClient(ConcertService, transport),
  concertAdmin: createClient(ConcertAdminService, transport),
  queueAdmin: createClient(QueueAdminService, transport),
  paymentAdmin: createClient(PaymentAdminService, transport),
};

const keyStorage = "boxoffice.operatorKey";
const refreshMs = 1000;
const notTheKey = "That is not the operator key.";

let operatorKey = "";
let refreshTimer: ReturnType<typeof setTimeout> | undefined;

const signedIn = (): CallOptions => ({ headers: { authorization: `Bearer ${operatorKey}` } });

// ---- small DOM helpers ----

const $ = <T extends HTMLElement = HTMLElement>(testId: string) => document.querySelector<T>(`[data-testid="${testId}"]`)!;

function element<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: (Node | string)[]) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** An input with plain string properties (type, name, min...): simpler for the type checker than `element`. */
function input(props: Record<string, string | boolean>): HTMLInputElement {
  return Object.assign(document.createElement("input"), props);
}

const withTestId = <T extends HTMLElement>(node: T, testId: string) => {
  node.dataset.testid = testId;
  return node;
};

function say(message: string) {
  $("message").textContent = message;
  if (message) $("notice").textContent = "";
}

function notify(notice: string) {
  $("notice").textContent = notice;
  if (notice) $("message").textContent = "";
}

const isRefusedKey = (error: unknown) => {
  const code = ConnectError.from(error).code;
  return code === Code.PermissionDenied || code === Code.Unauthenticated;
};

/** What an operator reads for a failed call. */
const explainForOperator = (error: unknown) => (isRefusedKey(error) ? notTheKey : explain(error));

/** Runs an action from a button or form: disabled while it runs, any error shown. */
async function act(button: HTMLButtonElement | undefined, action: () => Promise<void>) {
  if (button) button.disabled = true;
  try {
    await action();
  } catch (error) {
    say(explainForOperator(error));
    if (isRefusedKey(error)) signOut();
  } finally {
    if (button?.isConnected) button.disabled = false;
  }
}

// ---- formatting ----

const count = (n: bigint | number) => Number(n).toLocaleString("en");

function waitText(wait: Duration | undefined, waiting: bigint, paused: boolean) {
  if (waiting === 0n) return "—";
  if (paused) return "paused";
  if (!wait) return "unknown";
  const seconds = durationMs(wait) / 1000;
  if (seconds < 1) return "under 1 s";
  if (seconds < 60) return `about ${Math.round(seconds)} s`;
  if (seconds < 3600) return `about ${Math.round(seconds / 60)} min`;
  return `about ${(seconds / 3600).toFixed(1)} h`;
}

const dateTime = (ts: Timestamp | undefined) => (ts ? new Date(timestampMs(ts)).toLocaleString("en", { dateStyle: "medium", timeStyle: "short" }) : "");

const phaseText: Record<ConcertPhase, string> = {
  [ConcertPhase.UNSPECIFIED]: "On sale",
  [ConcertPhase.DRAFT]: "Draft",
  [ConcertPhase.SCHEDULED]: "Scheduled",
  [ConcertPhase.PREQUEUE]: "Pre-queue",
  [ConcertPhase.ON_SALE]: "On sale",
  [ConcertPhase.SOLD_OUT]: "Sold out",
  [ConcertPhase.CLOSED]: "Sale closed",
  [ConcertPhase.PAST]: "Past",
  [ConcertPhase.CANCELLED]: "Cancelled",
};

/** The concert's sale times, in a line: when the pre-queue and the sale open (or opened), when it closes. */
function saleTimes(concert: Concert) {
  const now = Date.now();
  const at = (ts: Timestamp | undefined) => (ts ? timestampMs(ts) : undefined);
  const parts: string[] = [];
  const prequeue = at(concert.prequeueOpensAt);
  const sale = at(concert.saleOpensAt);
  if (prequeue !== undefined && (sale === undefined || prequeue < sale)) parts.push(`pre-queue ${prequeue > now ? "opens" : "opened"} ${dateTime(concert.prequeueOpensAt)}`);
  if (sale !== undefined) parts.push(`sale ${sale > now ? "opens" : "opened"} ${dateTime(concert.saleOpensAt)}`);
  if (concert.saleClosesAt) parts.push(`closes ${dateTime(concert.saleClosesAt)}`);
  if (concert.seatLimit) parts.push(`${concert.seatLimit} per fan`);
  return parts.join(" · ");
}

/** A concert the organiser can no longer change the sale of: cancelled, over. */
const ended = (concert: Concert) => concert.phase === ConcertPhase.CANCELLED || concert.phase === ConcertPhase.PAST;

// ---- signing in ----

function showSignedIn(yes: boolean) {
  $("sign-in-form").closest("section")!.hidden = yes;
  document.getElementById("sales")!.hidden = !yes;
  document.getElementById("create")!.hidden = !yes;
  $("sign-out").hidden = !yes;
}

/** Tries the key on an operator RPC; keeps it for the tab only when the server takes it. */
async function signIn(key: string) {
  operatorKey = key;
  try {
    await api.concertAdmin.listSeatCounts({}, signedIn());
  } catch (error) {
    operatorKey = "";
    sessionStorage.removeItem(keyStorage);
    throw error;
  }
  sessionStorage.setItem(keyStorage, key);
  showSignedIn(true);
  document.body.dataset.signedIn = "true";
  await refresh();
}

function signOut() {
  operatorKey = "";
  sessionStorage.removeItem(keyStorage);
  clearTimeout(refreshTimer);
  refreshTimer = undefined;
  showSignedIn(false);
  document.body.dataset.signedIn = "false";
  $("concert-rows").replaceChildren();
  rows.clear();
}

// ---- the live table ----

interface Row {
  concert: Concert;
  tr: HTMLTableRowElement;
  cells: Record<"waiting" | "admitted" | "rate" | "wait" | "held" | "sold" | "total" | "pending", HTMLTableCellElement>;
  state: HTMLElement;
  policy: HTMLElement;
  toggle: HTMLButtonElement;
  paused: boolean;
  phase: HTMLElement;
  unlisted: HTMLElement;
  sale: HTMLElement;
  listing: HTMLButtonElement;
  cancel: HTMLButtonElement;
  cancelForm: HTMLFormElement;
}

const rows = new Map<string, Row>();

function newRow(concert: Concert): Row {
  const id = concert.id;
  const cell = (name: string) => withTestId(element("td"), `${name}-${id}`);
  const cells = {
    waiting: cell("waiting"),
    admitted: cell("admitted"),
    rate: cell("rate"),
    wait: cell("wait"),
    held: cell("held"),
    sold: cell("sold"),
    total: cell("total"),
    pending: cell("pending"),
  };
  const state = withTestId(element("span", { className: "badge" }), `state-${id}`);
  const policy = withTestId(element("div", { className: "muted" }), `policy-${id}`);
  const toggle = withTestId(element("button", { type: "button", textContent: "Pause" }), `toggle-${id}`);
  toggle.setAttribute("aria-label", `Pause admission for ${concert.title}`);
  const phase = withTestId(element("span", { className: "badge" }), `phase-${id}`);
  const unlisted = withTestId(element("span", { className: "badge unlisted", textContent: "Unlisted", hidden: true }), `unlisted-${id}`);
  const sale = withTestId(element("div", { className: "muted" }), `sale-${id}`);
  const listing = withTestId(element("button", { type: "button", className: "secondary", textContent: "Unlist" }), `listing-${id}`);
  const cancel = withTestId(element("button", { type: "button", className: "danger", textContent: "Cancel concert" }), `cancel-${id}`);
  cancel.setAttribute("aria-label", `Cancel ${concert.title}`);
  const reason = withTestId(input({ type: "text", name: "reason", maxLength: "500", placeholder: "Why (fans are told)" }), `cancel-reason-${id}`);
  const confirm = withTestId(element("button", { type: "submit", className: "danger", textContent: "Confirm cancellation" }), `confirm-cancel-${id}`);
  confirm.setAttribute("aria-label", `Confirm cancelling ${concert.title}`);
  const keep = element("button", { type: "button", className: "secondary", textContent: "Keep it" });
  keep.setAttribute("aria-label", `Keep ${concert.title}`);
  const cancelForm = element("form", { className: "cancel-form", hidden: true }, element("label", {}, "Reason", reason), confirm, keep);
  cancelForm.setAttribute("aria-label", `Cancel ${concert.title}`);
  const row: Row = { concert, tr: element("tr"), cells, state, policy, toggle, paused: false, phase, unlisted, sale, listing, cancel, cancelForm };

  listing.addEventListener("click", () =>
    act(listing, async () => {
      const unlisting = row.concert.listed;
      const { concert: now } = unlisting
        ? await api.concertAdmin.unlistConcert({ concertId: id }, signedIn())
        : await api.concertAdmin.relistConcert({ concertId: id }, signedIn());
      if (now) row.concert = now;
      notify(unlisting ? `Unlisted ${concert.title}: fans no longer see it in the list; its sale goes on for who has its link.` : `Listed ${concert.title} again.`);
      await refresh();
    }),
  );
  cancel.addEventListener("click", () => {
    cancelForm.hidden = false;
    cancel.hidden = true;
    reason.focus();
  });
  keep.addEventListener("click", () => {
    cancelForm.hidden = true;
    cancel.hidden = false;
  });
  cancelForm.addEventListener("submit", (event) => {
    event.preventDefault();
    void act(confirm, async () => {
      const { concert: now } = await api.concertAdmin.cancelConcert({ concertId: id, reason: reason.value.trim() }, signedIn());
      if (now) row.concert = now;
      cancelForm.hidden = true;
      cancel.hidden = false;
      reason.value = "";
      notify(`Cancelled ${concert.title}. Its waiting room is closed and fans are told why.`);
      await refresh();
    });
  });
  toggle.addEventListener("click", () =>
    act(toggle, async () => {
      const pausing = !row.paused;
      if (pausing) await api.queueAdmin.pauseAdmission({ concertId: id }, signedIn());
      else await api.queueAdmin.resumeAdmission({ concertId: id }, signedIn());
      notify(`${pausing ? "Paused" : "Resumed"} admission for ${concert.title}.`);
      await refresh();
    }),
  );

  const maxActive = withTestId(input({ type: "number", min: "1", name: "max_active", className: "number" }), `max-active-${id}`);
  const rate = withTestId(input({ type: "number", min: "0", name: "rate_per_minute", className: "number" }), `rate-limit-${id}`);
  const setPolicy = withTestId(element("button", { type: "submit", textContent: "Set policy" }), `set-policy-${id}`);
  setPolicy.setAttribute("aria-label", `Set the admission policy for ${concert.title}`);
  const form = element(
    "form",
    {},
    element("label", {}, "Max admitted", maxActive),
    element("label", {}, "Rate/min", rate),
    setPolicy,
  );
  form.setAttribute("aria-label", `Admission policy for ${concert.title}`);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void act(setPolicy, async () => {
      const policy: { maxActive: number; ratePerMinute?: number } = { maxActive: 0 };
      if (maxActive.value !== "") policy.maxActive = Number(maxActive.value);
      if (rate.value !== "") policy.ratePerMinute = Number(rate.value);
      if (policy.maxActive === 0 && policy.ratePerMinute === undefined) throw new Error("Fill in max admitted, the rate limit, or both.");
      const { policy: now } = await api.queueAdmin.setAdmissionPolicy({ concertId: id, policy }, signedIn());
      maxActive.value = "";
      rate.value = "";
      notify(`Policy for ${concert.title}: at most ${count(now?.maxActive ?? 0)} admitted, ${now?.ratePerMinute ? `${count(now.ratePerMinute)} admissions/min` : "no rate limit"}.`);
      await refresh();
    });
  });

  const title = element("th", { scope: "row" }, element("strong", {}, concert.title), element("div", { className: "muted" }, concert.venue));
  row.tr.append(
    title,
    element("td", { className: "sale" }, phase, unlisted, sale, element("div", { className: "sale-controls" }, listing, cancel, cancelForm)),
    cells.waiting,
    cells.admitted,
    cells.rate,
    cells.wait,
    cells.held,
    cells.sold,
    cells.total,
    cells.pending,
    element("td", { className: "state" }, state, policy),
    element("td", { className: "actions" }, element("div", { className: "controls" }, toggle, form)),
  );
  withTestId(row.tr, `row-${id}`);
  return row;
}

function render(concerts: Concert[], queues: Map<string, QueueStats>, seats: Map<string, SeatCounts>, payments: Map<string, PaymentCounts>) {
  const body = $("concert-rows");
  // Newest first (as ListAllConcerts answers): the sale an operator just opened is on top.
  const ordered = concerts;
  ordered.forEach((concert, index) => {
    let row = rows.get(concert.id);
    if (!row) rows.set(concert.id, (row = newRow(concert)));
    row.concert = concert;
    if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] ?? null);
    const queue = queues.get(concert.id);
    const seat = seats.get(concert.id);
    const payment = payments.get(concert.id);
    const set = (cell: HTMLElement, text: string) => {
      if (cell.textContent !== text) cell.textContent = text;
    };
    set(row.cells.waiting, count(queue?.waiting ?? 0n));
    set(row.cells.admitted, count(queue?.admitted ?? 0n));
    set(row.cells.rate, count(queue?.admittedPerMinute ?? 0n));
    set(row.cells.wait, waitText(queue?.waitAtBack, queue?.waiting ?? 0n, queue?.paused ?? false));
    set(row.cells.held, count(seat?.held ?? 0));
    set(row.cells.sold, count(seat?.sold ?? 0));
    set(row.cells.total, count(seat?.total ?? 0));
    set(row.cells.pending, count(payment?.pending ?? 0));
    row.paused = queue?.paused ?? false;
    const closed = ended(concert) || concert.phase === ConcertPhase.CLOSED;
    const state = closed ? "closed" : queue?.soldOut ? "sold-out" : row.paused ? "paused" : "open";
    row.state.dataset.state = state;
    set(row.state, state === "closed" ? "Closed" : state === "sold-out" ? "Sold out" : state === "paused" ? "Paused" : "Admitting");
    const policy = queue?.policy;
    set(row.policy, policy ? `max ${count(policy.maxActive)} admitted · ${policy.ratePerMinute ? `${count(policy.ratePerMinute)}/min` : "no rate limit"}` : "");
    set(row.toggle, row.paused ? "Resume" : "Pause");
    row.toggle.setAttribute("aria-label", `${row.paused ? "Resume" : "Pause"} admission for ${concert.title}`);
    row.toggle.className = row.paused ? "" : "pause";
    const phase = concert.phase === ConcertPhase.UNSPECIFIED ? ConcertPhase.ON_SALE : concert.phase;
    row.phase.dataset.phase = ConcertPhase[phase];
    set(row.phase, phaseText[phase]);
    row.unlisted.hidden = concert.listed || phase === ConcertPhase.DRAFT || concert.phase === ConcertPhase.UNSPECIFIED;
    set(row.sale, saleTimes(concert));
    set(row.listing, concert.listed ? "Unlist" : "Relist");
    row.listing.setAttribute("aria-label", `${concert.listed ? "Unlist" : "Relist"} ${concert.title}`);
    row.listing.hidden = phase === ConcertPhase.DRAFT || ended(concert) || concert.phase === ConcertPhase.UNSPECIFIED;
    row.cancel.disabled = ended(concert);
    if (ended(concert)) row.cancelForm.hidden = true;
  });
  while (body.children.length > ordered.length) body.lastElementChild!.remove();
}

let refreshing: Promise<void> | undefined;

/** Reads every concert's numbers (four calls, whatever the number of concerts) and shows them; then again in a second. */
function refresh(): Promise<void> {
  refreshing ??= (async () => {
    clearTimeout(refreshTimer);
    try {
      const options = signedIn();
      const { concerts } = await api.concertAdmin.listAllConcerts({}, options);
      const ids = concerts.map((concert) => concert.id);
      const [queues, seats, payments] = await Promise.all([
        ids.length ? api.queueAdmin.listQueueStats({ concertIds: ids.slice(0, 1000) }, options) : { stats: [] },
        api.concertAdmin.listSeatCounts({}, options),
        api.paymentAdmin.listPaymentCounts({}, options),
      ]);
      render(
        concerts,
        new Map(queues.stats.map((stats) => [stats.concertId, stats])),
        new Map(seats.concerts.map((counts) => [counts.concertId, counts])),
        new Map(payments.concerts.map((counts) => [counts.concertId, counts])),
      );
      $("refreshed").textContent = `Updated ${new Date().toLocaleTimeString("en")}`;
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed ?? "0") + 1);
    } catch (error) {
      if (isRefusedKey(error)) {
        signOut();
        say(notTheKey);
        return;
      }
      $("refreshed").textContent = `Could not refresh: ${explainForOperator(error)}`;
    } finally {
      refreshing = undefined;
      if (operatorKey) refreshTimer = setTimeout(() => void refresh(), refreshMs);
    }
  })();
  return refreshing;
}

// ---- creating a concert ----

function localInputValue(date: Date) {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

let dateRows = 0;

function addDateRow() {
  const n = ++dateRows;
  const when = new Date(Date.now() + n * 24 * 3600 * 1000);
  when.setHours(20, 0, 0, 0);
  const starts = withTestId(input({ type: "datetime-local", name: "starts_at", required: true, value: localInputValue(when) }), `date-starts-${n}`);
  const seats = withTestId(input({ type: "number", name: "seat_count", min: "1", max: "1000", required: true, value: "50", className: "number" }), `date-seats-${n}`);
  const price = withTestId(input({ type: "number", name: "price", min: "1", max: "10000000", required: true, value: "100", className: "number" }), `date-price-${n}`);
  const remove = element("button", { type: "button", className: "secondary", textContent: "Remove" });
  remove.setAttribute("aria-label", `Remove date ${n}`);
  const row = element("div", { className: "row" }, element("label", {}, `Date ${n} starts`, starts), element("label", {}, "Seats", seats), element("label", {}, "Price (points)", price), remove);
  row.dataset.dateRow = String(n);
  remove.addEventListener("click", () => {
    if ($("create-dates").children.length > 1) row.remove();
  });
  $("create-dates").append(row);
}

async function createConcert(form: HTMLFormElement) {
  const data = new FormData(form);
  const starts = data.getAll("starts_at").map(String);
  const seats = data.getAll("seat_count").map(Number);
  const prices = data.getAll("price").map(String);
  const time = (name: string) => {
    const value = String(data.get(name) ?? "");
    return value ? timestampFromDate(new Date(value)) : undefined;
  };
  const seatLimit = String(data.get("seat_limit") ?? "");
  const { concert, schedules } = await api.concertAdmin.createConcert(
    {
      title: String(data.get("title") ?? "").trim(),
      venue: String(data.get("venue") ?? "").trim(),
      schedules: starts.map((value, i) => ({ startsAt: timestampFromDate(new Date(value)), seatCount: seats[i]!, price: BigInt(prices[i] || "0") })),
      prequeueOpensAt: time("prequeue_opens_at"),
      saleOpensAt: time("sale_opens_at"),
      seatLimit: seatLimit ? Number(seatLimit) : 0,
    },
    signedIn(),
  );
  const sale = concert && time("sale_opens_at") ? ` Sale: ${saleTimes(concert)}.` : "";
  notify(`Created ${concert!.title} with ${schedules.length} ${schedules.length === 1 ? "date" : "dates"}.${sale}`);
  form.reset();
  $("create-dates").replaceChildren();
  dateRows = 0;
  addDateRow();
  await refresh();
}

// ---- start ----

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>("operator-key");
  const button = $<HTMLButtonElement>("sign-in");
  button.disabled = true;
  signIn(input.value)
    .then(() => {
      input.value = "";
      say("");
    })
    .catch((error: unknown) => say(explainForOperator(error)))
    .finally(() => (button.disabled = false));
});
$("sign-out").addEventListener("click", () => {
  signOut();
  notify("Signed out.");
});
$("add-date").addEventListener("click", addDateRow);
$("create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  void act(form.querySelector<HTMLButtonElement>('button[type="submit"]')!, () => createConcert(form));
});
addDateRow();

const saved = sessionStorage.getItem(keyStorage);
(saved ? signIn(saved).catch((error: unknown) => say(explainForOperator(error))) : Promise.resolve()).finally(() => (document.body.dataset.ready = "true"));
