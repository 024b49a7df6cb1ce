// Sale events on the booking page and the operator console, in a real browser
// (Debian's Chromium driven by playwright-core), on the embedded default a plain
// `npm start` uses: PGlite (DATABASE_URL unset) and the in-process waiting room
// (no Redis). A concert whose pre-queue is open and whose sale opens seconds
// later: the list tells its sale and prices, the fan enters the pre-queue, sees
// the countdown and their entry id, is admitted only once the sale opens, checks
// the draw, buys and pays. A scheduled concert says when it opens; admission by
// lot and a cancelled sale are told in words; the console shows phases, creates
// a scheduled sale, unlists, relists and cancels. Screenshots in test-results/sale/.
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, ConcertPhase, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { DrawState, QueueAdminService, QueueingMethod, QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { modules } from "../services/modules.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { webPage } from "../services/web/index.js";
import { admittedFan, client, operator, testConfig, testSecrets, withQueueToken } from "./support.js";
import { launchChromium, byTestId, textOf, attributeOf } from "./chromium.js";

const artifacts = join(import.meta.dirname, "..", "test-results", "sale");
const wait = { timeout: 10_000, interval: 50 };
const hour = 3_600_000;
/** The pages run in UTC, so that the test can write the times they show. */
const timezoneId = "UTC";

let suite: Suite;
let browser: Browser;
/** Errors thrown inside any page, and console errors other than refused requests: the test fails on them. */
const pageErrors: string[] = [];
const openPages = new Map<string, Page>();

beforeAll(async () => {
  mkdirSync(artifacts, { recursive: true });
  suite = await startSuite(testConfig({ DATABASE_URL: "" }), modules, { fallback: await webPage() });
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await suite?.close();
});

const admin = () => client(suite, ConcertAdminService);
const shot = (page: Page, name: string) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
/** Text with its spaces made plain (ICU puts narrow no-break spaces before AM/PM). */
const plain = (text: string | null) => (text ?? "").replace(/\s+/g, " ").trim();
/** A time as the pages write it (in UTC here). */
const shown = (ts: Timestamp | undefined) => plain(new Date(timestampMs(ts!)).toLocaleString("en", { dateStyle: "medium", timeStyle: "short", timeZone: timezoneId }));

async function screenshotAll(prefix: string) {
  for (const [name, page] of openPages) await shot(page, `${prefix}-${name.replace(/\W+/g, "-")}`).catch(() => undefined);
}

/** A new page in a fresh context (own storage: a new fan, or a console tab), loaded and ready. */
async function openPage(name: string, path = "/", width = 900): Promise<Page> {
  const context = await browser.newContext({ viewport: { width, height: 1100 }, timezoneId, locale: "en-US" });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    // Chromium logs every non-2xx response; refusals are part of the flow and shown by the page.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) pageErrors.push(`${name} console: ${message.text()}`);
  });
  openPages.set(name, page);
  await page.goto(suite.host.url + path);
  await page.locator("body[data-ready=true]").waitFor({ timeout: 10_000 });
  return page;
}

/** Seconds left on a countdown such as 0:07 or 1:02:03. */
const secondsOf = (clock: string | null) => (clock ?? "").split(":").reduce((total, part) => total * 60 + Number(part), 0);

describe("a scheduled sale on the booking page, in Chromium", () => {
  it("lists the sale and its prices, counts down in the pre-queue with the fan's entry id, admits only when the sale opens, and the fan checks the draw, buys and pays", async ({ onTestFailed }) => {
    onTestFailed(() => screenshotAll("failed-sale"));
    const title = `Sale Live ${Date.now().toString(36)}`;
    const now = Date.now();
    const { concert, schedules } = await admin().createConcert(
      {
        title,
        venue: "Lottery Hall",
        schedules: [
          { startsAt: timestampFromMs(now + 48 * hour), seatCount: 4, price: 55_000n },
          { startsAt: timestampFromMs(now + 72 * hour), seatCount: 4, price: 150_000n },
        ],
        prequeueOpensAt: timestampFromMs(now),
        saleOpensAt: timestampFromMs(now + 8_000),
        seatLimit: 2,
      },
      operator,
    );
    const concertId = concert!.id;
    const saleOpensMs = timestampMs(concert!.saleOpensAt!);
    expect(concert!.phase).toBe(ConcertPhase.PREQUEUE);
    expect(concert!.seedCommitment).toMatch(/^[0-9a-f]{64}$/);
    // Another one, whose pre-queue opens in an hour: listed, but not open yet.
    const { concert: later } = await admin().createConcert(
      {
        title: `${title} Later`,
        venue: "Lottery Hall",
        schedules: [{ startsAt: timestampFromMs(now + 96 * hour), seatCount: 2, price: 100n }],
        prequeueOpensAt: timestampFromMs(now + hour),
        saleOpensAt: timestampFromMs(now + 2 * hour),
      },
      operator,
    );
    expect(later!.phase).toBe(ConcertPhase.SCHEDULED);

    const page = await openPage("fan");
    // The list: the pre-queue first (its sale opens sooner), with its sale and prices; then the scheduled one.
    await byTestId(page, `join-${concertId}`).waitFor({ timeout: 10_000 });
    const order = await page.locator('[data-testid="concerts"] > li').evaluateAll((items) => items.map((item) => (item as HTMLElement).dataset.testid));
    expect(order.indexOf(`concert-${concertId}`)).toBeLessThan(order.indexOf(`concert-${later!.id}`));
    expect(await attributeOf(page, `concert-${concertId}`, "data-phase")()).toBe("PREQUEUE");
    expect(plain(await textOf(page, `concert-sale-${concertId}`)())).toBe(`Pre-queue open — sale opens ${shown(concert!.saleOpensAt)}`);
    expect(await textOf(page, `concert-price-${concertId}`)()).toBe("55,000 – 150,000 points");
    expect(await textOf(page, `join-${concertId}`)()).toBe("Enter the pre-queue");
    expect(await attributeOf(page, `concert-${later!.id}`, "data-phase")()).toBe("SCHEDULED");
    expect(plain(await textOf(page, `concert-sale-${later!.id}`)())).toBe(`Pre-queue opens ${shown(later!.prequeueOpensAt)}, sale opens ${shown(later!.saleOpensAt)}`);
    expect(await textOf(page, `concert-price-${later!.id}`)()).toBe("100 points");
    expect(plain(await textOf(page, `join-${later!.id}`)())).toBe(`Opens ${shown(later!.prequeueOpensAt)}`);
    await shot(page, "01-list");

    // The scheduled one: entering is refused, and the page says when it opens.
    await byTestId(page, `join-${later!.id}`).click();
    await expect.poll(textOf(page, "message"), wait).toContain("has not opened yet");
    expect(plain(await textOf(page, "message")())).toContain(`pre-queue opens ${shown(later!.prequeueOpensAt)} and the sale opens ${shown(later!.saleOpensAt)}`);
    expect(await byTestId(page, "queue").isVisible()).toBe(false);
    await shot(page, "02-scheduled-not-open");

    // The pre-queue: waiting with no place yet, a countdown to the sale, the entry id, how the draw works.
    await page.getByRole("button", { name: `Join the queue for ${title}, pre-queue open` }).click();
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("WAITING");
    expect(await attributeOf(page, "queue-state", "data-reason")()).toBe("SALE_NOT_OPEN");
    expect(await textOf(page, "message")()).toBe("");
    expect(await textOf(page, "queue-state")()).toBe("Waiting in the pre-queue");
    expect(await textOf(page, "queue-position")()).toBe("Drawn at random when the sale opens");
    expect(await byTestId(page, "prequeue").isVisible()).toBe(true);
    const entryId = (await textOf(page, "entry-id")())!;
    expect(entryId).not.toBe("—");
    expect(entryId.length).toBeGreaterThan(8);
    expect(await textOf(page, "prequeue-fairness")()).toContain("gets a random place in line, so arriving early gives no advantage");
    expect(await textOf(page, "seed-commitment")()).toBe(concert!.seedCommitment);
    expect(await byTestId(page, "draw-help").textContent()).toContain("GetSaleFairness");
    const first = await textOf(page, "sale-countdown")();
    expect(first).toMatch(/^0:0[0-8]$/);
    expect(secondsOf(first)).toBeGreaterThanOrEqual(2); // the fan is in well before the sale opens
    await expect.poll(async () => secondsOf(await textOf(page, "sale-countdown")()), wait).toBeLessThan(secondsOf(first)); // it ticks down
    // Not admitted before the sale opens: still waiting, no dates to pick.
    expect(Date.now()).toBeLessThan(saleOpensMs);
    expect(await attributeOf(page, "queue-state", "data-state")()).toBe("WAITING");
    expect(await byTestId(page, "dates").isVisible()).toBe(false);
    await shot(page, "03-prequeue-countdown");

    // Before the draw, only the commitment is published.
    await byTestId(page, "check-draw").click();
    await expect.poll(attributeOf(page, "draw-result", "data-draw"), wait).toBe("COMMITTED");
    expect(await textOf(page, "draw-result")()).toContain(concert!.seedCommitment);

    // The sale opens: the pre-queue is drawn and the stream pushes the admission (the fan is alone in it).
    await expect.poll(attributeOf(page, "queue-state", "data-state"), { timeout: 20_000, interval: 50 }).toBe("ADMITTED");
    expect(Date.now()).toBeGreaterThanOrEqual(saleOpensMs);
    await byTestId(page, `date-${schedules[0]!.id}`).waitFor({ timeout: 10_000 });
    expect(await byTestId(page, "sale-clock").isVisible()).toBe(false);
    expect(await textOf(page, "entry-id")()).toBe(entryId);
    await shot(page, "04-admitted");

    // The draw, checked in the page from what GetSaleFairness publishes.
    await byTestId(page, "check-draw").click();
    await expect.poll(attributeOf(page, "draw-result", "data-verified"), wait).toBe("true");
    expect(await textOf(page, "draw-result")()).toContain(`Your entry ${entryId} came number 1 of 1 in the draw.`);
    const fairness = await client(suite, QueueService).getSaleFairness({ concertId });
    expect(fairness.state).toBe(DrawState.DRAWN);
    expect(fairness.entryIds).toEqual([entryId]);
    await shot(page, "05-draw-checked");

    // Seats: at most the concert's per-fan limit (2), then hold, charge and pay.
    await byTestId(page, `date-${schedules[0]!.id}`).click();
    await byTestId(page, "seat-1").waitFor({ timeout: 10_000 });
    expect(await textOf(page, "selection")()).toBe("Select up to 2 seats.");
    for (const n of [1, 2, 3]) await byTestId(page, `seat-${n}`).click();
    expect(await textOf(page, "message")()).toBe("You can have at most 2 seats for this concert, over all its dates.");
    expect(await attributeOf(page, "seat-3", "aria-pressed")()).toBe("false");
    await byTestId(page, "hold").click();
    await expect.poll(attributeOf(page, "seat-1", "data-state"), wait).toBe("mine");
    expect(await textOf(page, "hold-amount")()).toBe("110,000 points");
    await byTestId(page, "charge-amount").fill("110000");
    await byTestId(page, "charge").click();
    await expect.poll(textOf(page, "balance"), wait).toBe("110,000");
    await byTestId(page, "pay").click();
    await expect.poll(attributeOf(page, "payment-state", "data-state"), wait).toBe("SUCCEEDED");
    expect(await textOf(page, "result-seats")()).toBe("Seat 1: SOLD to you · Seat 2: SOLD to you");
    expect(await textOf(page, "notice")()).toContain("Payment succeeded");
    expect(await textOf(page, "balance")()).toBe("0");
    expect(await textOf(page, "message")()).toBe("");
    await shot(page, "06-paid");
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it("tells a fan in a room that admits by lot that there is no place in line, then shows the admission", async ({ onTestFailed }) => {
    onTestFailed(() => screenshotAll("failed-lot"));
    const title = `Lot ${Date.now().toString(36)}`;
    const { concert } = await admin().createConcert(
      { title, venue: "Lottery Hall", schedules: [{ startsAt: timestampFromMs(Date.now() + 48 * hour), seatCount: 4, price: 100n }] },
      operator,
    );
    const concertId = concert!.id;
    await client(suite, QueueAdminService).setAdmissionPolicy({ concertId, policy: { maxActive: 1, method: QueueingMethod.RANDOM } }, operator);
    const ahead = await admittedFan(suite, concertId); // the one admission there is

    const page = await openPage("fan by lot");
    expect(await textOf(page, `concert-sale-${concertId}`)()).toBe("On sale now");
    expect(await textOf(page, `concert-price-${concertId}`)()).toBe("100 points");
    await page.getByRole("button", { name: `Join the queue for ${title}` }).click();
    await expect.poll(attributeOf(page, "queue-state", "data-reason"), wait).toBe("RANDOM_ADMISSION");
    expect(await attributeOf(page, "queue-state", "data-state")()).toBe("WAITING");
    expect(await textOf(page, "queue-state")()).toBe("Waiting — admitted by lot");
    expect(await textOf(page, "queue-position")()).toBe("None — fans are admitted by lot");
    expect(await textOf(page, "queue-ahead")()).toBe("—");
    expect(await textOf(page, "queue-wait")()).toMatch(/lot/);
    // No pre-queue (the sale was open when the fan came): no entry id, so no draw to show (QueueStatus.entry_id is empty then).
    expect.soft(await textOf(page, "entry-id")()).toBe("");
    expect.soft(await byTestId(page, "prequeue").isVisible()).toBe(false);
    await shot(page, "07-by-lot");

    await client(suite, QueueService).leaveQueue({}, withQueueToken(ahead.queueToken));
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("ADMITTED");
    expect(pageErrors).toEqual([]);
  }, 30_000);

  it("tells a waiting fan that the concert was cancelled, and why", async ({ onTestFailed }) => {
    onTestFailed(() => screenshotAll("failed-cancelled"));
    const title = `Called Off ${Date.now().toString(36)}`;
    const { concert } = await admin().createConcert(
      { title, venue: "Lottery Hall", schedules: [{ startsAt: timestampFromMs(Date.now() + 48 * hour), seatCount: 4, price: 100n }] },
      operator,
    );
    const concertId = concert!.id;
    await client(suite, QueueAdminService).pauseAdmission({ concertId }, operator); // so the fan is still waiting

    const page = await openPage("fan cancelled");
    await page.getByRole("button", { name: `Join the queue for ${title}` }).click();
    await expect.poll(attributeOf(page, "queue-state", "data-reason"), wait).toBe("QUEUE_PAUSED");
    await admin().cancelConcert({ concertId, reason: "the singer has lost her voice" }, operator);
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("CLOSED");
    expect(await attributeOf(page, "queue-state", "data-reason")()).toBe("CONCERT_CANCELLED");
    expect(await textOf(page, "queue-state")()).toBe("Cancelled by the organiser");
    await expect.poll(textOf(page, "message"), wait).toContain("the singer has lost her voice");
    // The list, read again, no longer offers it.
    await expect.poll(() => byTestId(page, `join-${concertId}`).count(), wait).toBe(0);
    await shot(page, "08-cancelled");
    expect(pageErrors).toEqual([]);
  }, 30_000);
});

describe("sale events on the operator console, in Chromium", () => {
  it("creates a scheduled sale from the form, shows its phase and opening, unlists, relists and cancels it", async ({ onTestFailed }) => {
    onTestFailed(() => screenshotAll("failed-console"));
    const page = await openPage("console", "/console", 1500);
    await page.getByLabel("Operator key").fill(testSecrets.OPERATOR_KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    await byTestId(page, "concert-rows").waitFor({ state: "visible", timeout: 10_000 });

    // The form, in the page's time zone (UTC), to the minute as datetime-local is.
    const local = (ms: number) => new Date(ms).toISOString().slice(0, 16);
    const minute = 60_000;
    const prequeueMs = Math.ceil((Date.now() + hour) / minute) * minute;
    const saleMs = prequeueMs + hour;
    const title = `Console Sale ${Date.now().toString(36)}`;
    await page.getByLabel("Title").fill(title);
    await page.getByLabel("Venue").fill("Operator Arena");
    await byTestId(page, "create-prequeue-opens").fill(local(prequeueMs));
    await byTestId(page, "create-sale-opens").fill(local(saleMs));
    await byTestId(page, "create-seat-limit").fill("3");
    await page.getByRole("button", { name: "Create concert" }).click();
    await expect.poll(textOf(page, "notice"), wait).toContain(`Created ${title} with 1 date.`);
    const created = (await admin().listAllConcerts({}, operator)).concerts.find((concert) => concert.title === title)!;
    expect(created.phase).toBe(ConcertPhase.SCHEDULED);
    expect(timestampMs(created.prequeueOpensAt!)).toBe(prequeueMs);
    expect(timestampMs(created.saleOpensAt!)).toBe(saleMs);
    expect(created.seatLimit).toBe(3);
    const id = created.id;
    await byTestId(page, `row-${id}`).waitFor({ timeout: 10_000 });
    // Newest first: on top.
    expect(await page.locator('[data-testid="concert-rows"] > tr').first().getAttribute("data-testid")).toBe(`row-${id}`);
    expect(await textOf(page, `phase-${id}`)()).toBe("Scheduled");
    expect(plain(await textOf(page, `sale-${id}`)())).toBe(`pre-queue opens ${shown(created.prequeueOpensAt)} · sale opens ${shown(created.saleOpensAt)} · 3 per fan`);
    expect(await byTestId(page, `unlisted-${id}`).isVisible()).toBe(false);
    await shot(page, "09-console-scheduled");

    // Unlist: gone from the fans' list, marked on the console; relist: back.
    const listed = async () => (await client(suite, ConcertService).listConcerts({})).concerts.some((concert) => concert.id === id);
    expect(await listed()).toBe(true);
    await page.getByRole("button", { name: `Unlist ${title}` }).click();
    await expect.poll(() => byTestId(page, `unlisted-${id}`).isVisible(), wait).toBe(true);
    expect(await listed()).toBe(false);
    expect(await textOf(page, `listing-${id}`)()).toBe("Relist");
    await shot(page, "10-console-unlisted");
    await page.getByRole("button", { name: `Relist ${title}` }).click();
    await expect.poll(() => byTestId(page, `unlisted-${id}`).isVisible(), wait).toBe(false);
    expect(await listed()).toBe(true);

    // Cancel, with a reason: the phase says so, and it leaves the fans' list.
    await byTestId(page, `cancel-${id}`).click();
    await byTestId(page, `cancel-reason-${id}`).fill("the venue flooded");
    await byTestId(page, `confirm-cancel-${id}`).click();
    await expect.poll(textOf(page, `phase-${id}`), wait).toBe("Cancelled");
    await expect.poll(textOf(page, `state-${id}`), wait).toBe("Closed");
    expect(await textOf(page, "notice")()).toContain(`Cancelled ${title}`);
    expect(await byTestId(page, `cancel-${id}`).isDisabled()).toBe(true);
    expect(await listed()).toBe(false);
    await shot(page, "11-console-cancelled");
    expect(pageErrors).toEqual([]);
  }, 45_000);
});
