// The fan's booking page in a real browser (Debian's Chromium driven by playwright-core),
// served by the suite exactly as `npm start` serves it, against the real PostgreSQL.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, type Schedule } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { QueueAdminService, QueueService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { modules } from "../services/modules.js";
import { webPage } from "../services/web/index.js";
import { admittedFan, client, operator, testConfig, withQueueToken } from "./support.js";
import { launchChromium, byTestId, textOf } from "./chromium.js";

const artifacts = join(import.meta.dirname, "artifacts");
const title = `Browser Test Live ${Date.now().toString(36)}`;
const wait = { timeout: 10_000, interval: 50 };

let suite: Suite;
let browser: Browser;
let concertId: string;
let firstDate: Schedule;
/** Errors thrown inside any page, and console errors other than refused requests: the test fails on them. */
const pageErrors: string[] = [];
const openPages = new Map<string, Page>();

/** On failure, what each fan's page showed, for the artifacts. */
async function screenshotAll(prefix: string) {
  for (const [name, page] of openPages) {
    await page.screenshot({ path: join(artifacts, `${prefix}-${name.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => undefined);
  }
}

/** A new fan: a fresh browser context (own localStorage, so own user token) with the page open and signed in. */
async function openFan(name: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 900, height: 1100 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    // Chromium logs every non-2xx response; refusals (400, 404...) are part of the flow and shown by the page.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) pageErrors.push(`${name} console: ${message.text()}`);
  });
  openPages.set(name, page);
  await page.goto(suite.host.url + "/");
  await page.locator("body[data-ready=true]").waitFor({ timeout: 10_000 });
  return page;
}

const stateOf = (page: Page, id: string) => () => byTestId(page, id).getAttribute("data-state");

/** Joins the test concert's queue from the page. */
async function joinQueue(page: Page) {
  await page.getByRole("button", { name: `Join the queue for ${title}` }).click();
}

/** Waits for admission, then opens the seat map of the first date. */
async function pickFirstDate(page: Page) {
  await expect.poll(stateOf(page, "queue-state"), wait).toBe("ADMITTED");
  await byTestId(page, `date-${firstDate.id}`).click();
  await byTestId(page, "seat-1").waitFor({ timeout: 10_000 });
}

/** The suite with the page, on the given database, a browser, and the test concert. */
async function setUp(env: Record<string, string>) {
  mkdirSync(artifacts, { recursive: true });
  suite = await startSuite(testConfig(env), modules, { fallback: await webPage() });
  // Each launch gets a fresh temporary user data dir from Playwright, removed on close.
  browser = await launchChromium();

  const hour = 3_600_000;
  const { concert, schedules } = await client(suite, ConcertAdminService).createConcert(
    {
      title,
      venue: "Headless Hall",
      schedules: [
        { startsAt: timestampFromMs(Date.now() + 48 * hour), seatCount: 4, price: 100n },
        { startsAt: timestampFromMs(Date.now() + 72 * hour), seatCount: 4, price: 100n },
      ],
    },
    operator,
  );
  concertId = concert!.id;
  firstDate = schedules[0]!;
  // One admitted fan at a time, so the first browser fan has to wait in line.
  await client(suite, QueueAdminService).setAdmissionPolicy({ concertId, policy: { maxActive: 1 } }, operator);
}

// On PostgreSQL, and on the embedded database a plain `npm start` uses (DATABASE_URL unset).
describe.each([
  { database: "PostgreSQL", env: {} as Record<string, string> },
  { database: "embedded PGlite", env: { DATABASE_URL: "" } },
])("booking page in Chromium, on $database", ({ env }) => {
  beforeAll(() => setUp(env), 60_000);
  afterAll(async () => {
    await browser?.close();
    await suite?.close();
  });

  it("serves the page and its script from the suite's port, and 404 for other paths", async () => {
    const page = await fetch(suite.host.url + "/");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("cache-control")).toBe("no-cache");
    const script = await fetch(suite.host.url + "/app.js");
    expect(script.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect((await script.text()).length).toBeGreaterThan(1000);
    expect((await fetch(suite.host.url + "/nothing-here")).status).toBe(404);
  });

  it("a fan waits in line, is admitted, holds a seat, charges points, pays and sees the seat SOLD", async ({ onTestFailed }) => {
    onTestFailed(() => screenshotAll("failed-booking"));
    // Someone else holds the one admission slot: our fan must wait.
    const ahead = await admittedFan(suite, concertId);
    const page = await openFan("fan A");
    await expect.poll(textOf(page, "user-id"), wait).toMatch(/^fan [0-9a-f]{8}$/);
    expect(await page.evaluate(() => localStorage.getItem("boxoffice.userToken"))).toMatch(/^ey/);

    await joinQueue(page);
    await expect.poll(stateOf(page, "queue-state"), wait).toBe("WAITING");
    await expect.poll(textOf(page, "queue-position"), wait).toBe("#1");
    expect(await textOf(page, "queue-ahead")()).toBe("0");
    // The room is full and no session has ended yet: the estimate is when the session ahead runs out at the latest.
    await expect.poll(textOf(page, "queue-wait"), wait).toBe("about 10 min");

    // The fan ahead leaves; the watch stream pushes the admission.
    await client(suite, QueueService).leaveQueue({}, withQueueToken(ahead.queueToken));
    await pickFirstDate(page);
    await expect.poll(textOf(page, "session-countdown"), wait).toMatch(/^\d+:\d\d$/);
    expect(await page.locator('[data-testid="dates"] li').count()).toBe(2);
    for (const n of [1, 2, 3, 4]) expect(await stateOf(page, `seat-${n}`)()).toBe("available");

    await byTestId(page, "seat-1").click();
    expect(await byTestId(page, "seat-1").getAttribute("aria-pressed")).toBe("true");
    await byTestId(page, "hold").click();
    await expect.poll(stateOf(page, "seat-1"), wait).toBe("mine");
    expect(await textOf(page, "hold-seats")()).toBe("1");
    const first = await textOf(page, "hold-countdown")();
    expect(first).toMatch(/^[45]:\d\d$/);
    await expect.poll(textOf(page, "hold-countdown"), wait).not.toBe(first); // it counts down live

    await byTestId(page, "charge-amount").fill("100");
    await byTestId(page, "charge").click();
    await expect.poll(textOf(page, "balance"), wait).toBe("100");

    await byTestId(page, "pay").click();
    await expect.poll(textOf(page, "payment-state"), wait).toBe("SUCCEEDED");
    await expect.poll(stateOf(page, "seat-1"), wait).toBe("sold");
    expect(await textOf(page, "result-seats")()).toBe("Seat 1: SOLD to you");
    expect(await textOf(page, "balance")()).toBe("0");
    expect(await stateOf(page, "queue-state")()).toBe("COMPLETED");
    // The public date list, read again after paying, counts the seat as gone.
    await expect.poll(() => page.locator('[data-testid="dates"] li').first().textContent(), wait).toContain("3 of 4 seats left");
    await expect.poll(() => byTestId(page, `date-${firstDate.id}`).isDisabled(), wait).toBe(true); // the session is over
    expect(await textOf(page, "message")()).toBe(""); // no refusal shown
    await page.screenshot({ path: join(artifacts, "booking-succeeded.png"), fullPage: true });
    expect(pageErrors).toEqual([]);
  }, 45_000);

  it("two fans race for one seat: exactly one holds it, the other is told it was taken", async ({ onTestFailed }) => {
    onTestFailed(() => screenshotAll("failed-race"));
    await client(suite, QueueAdminService).setAdmissionPolicy({ concertId, policy: { maxActive: 10 } }, operator);
    const fans = await Promise.all([openFan("fan B"), openFan("fan C")]);
    for (const page of fans) {
      await joinQueue(page);
      await pickFirstDate(page);
      expect(await stateOf(page, "seat-1")()).toBe("sold"); // what fan A bought, as the server tells it
      await byTestId(page, "seat-2").click();
    }

    await Promise.all(fans.map((page) => byTestId(page, "hold").click()));
    const outcome = async (page: Page) => {
      await expect.poll(async () => (await byTestId(page, "hold-seats").isVisible()) || (await textOf(page, "message")()) !== "", wait).toBe(true);
      return (await byTestId(page, "hold-seats").isVisible()) ? "held" : "refused";
    };
    const outcomes = await Promise.all(fans.map(outcome));
    expect([...outcomes].sort()).toEqual(["held", "refused"]);

    const winner = fans[outcomes.indexOf("held")]!;
    const loser = fans[outcomes.indexOf("refused")]!;
    expect(await textOf(loser, "message")()).toContain("that seat was just taken by someone else");
    await expect.poll(stateOf(loser, "seat-2"), wait).toBe("held");
    expect(await byTestId(loser, "seat-2").isDisabled()).toBe(true);
    expect(await stateOf(winner, "seat-2")()).toBe("mine");
    await loser.screenshot({ path: join(artifacts, "seat-taken.png"), fullPage: true });
    expect(pageErrors).toEqual([]);

    // The winner pays with no points: a clear refusal, and the hold stays.
    await byTestId(winner, "pay").click();
    await expect.poll(textOf(winner, "message"), wait).toContain("You don't have enough points");
    expect(await textOf(winner, "payment-state")()).toBe("FAILED");
    expect(await byTestId(winner, "hold-countdown").isVisible()).toBe(true);
    await winner.screenshot({ path: join(artifacts, "insufficient-points.png"), fullPage: true });

    // Topping up and paying again (a fresh idempotency key) succeeds.
    await byTestId(winner, "charge-amount").fill("250");
    await byTestId(winner, "charge").click();
    await expect.poll(textOf(winner, "balance"), wait).toBe("250");
    await byTestId(winner, "pay").click();
    await expect.poll(textOf(winner, "payment-state"), wait).toBe("SUCCEEDED");
    await expect.poll(stateOf(winner, "seat-2"), wait).toBe("sold");
    expect(await textOf(winner, "balance")()).toBe("150");
    expect(pageErrors).toEqual([]);
  }, 45_000);
});
