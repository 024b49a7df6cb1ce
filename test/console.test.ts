// The operator console (/console) and the operator RPCs it reads: every
// concert's waiting room (QueueAdminService.ListQueueStats), seats
// (ConcertAdminService.ListSeatCounts) and payments
// (PaymentAdminService.ListPaymentCounts). On the real PostgreSQL and the shared
// Redis (own key prefix, removed at the end); the page in Debian's Chromium
// driven by playwright-core, with a screenshot of each step in
// test-results/console/.
import { Code } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, ConcertService } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { CoordinatorService } from "../gen/boxoffice/coordinator/v1/coordinator_pb.js";
import { PaymentAdminService, PaymentState } from "../gen/boxoffice/payment/v1/payment_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { QueueAdminService, QueueService, QueueState } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { modules } from "../services/modules.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { webPage } from "../services/web/index.js";
import { dropKeys } from "./redis-keys.js";
import { bearer, client, concertOnSale, failure, gated, newUser, operator, testConfig, testSecrets, waitForState } from "./support.js";
import { launchChromium, byTestId, textOf } from "./chromium.js";

const artifacts = join(import.meta.dirname, "..", "test-results", "console");
const redisUrl = "redis://127.0.0.1:6379";
const redisPrefix = `test:console:${randomUUID()}:`;
const wait = { timeout: 10_000, interval: 50 };
const wrongKey = bearer("not-the-operator-key");

let suite: Suite;
let browser: Browser;

beforeAll(async () => {
  mkdirSync(artifacts, { recursive: true });
  suite = await startSuite(testConfig({ REDIS_URL: redisUrl, REDIS_KEY_PREFIX: redisPrefix }), modules, { fallback: await webPage() });
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await suite?.close();
  await dropKeys(redisUrl, redisPrefix);
});

const queueAdmin = () => client(suite, QueueAdminService);

/** A new fan in the concert's line; the queue token. */
async function fanInLine(concertId: string) {
  const user = await newUser(suite);
  const { queueToken } = await client(suite, QueueService).enterQueue({ concertId }, bearer(user.token));
  return { ...user, queueToken };
}

/** Charges the admitted fan's points and books one seat through the coordinator. */
async function book(fan: { token: string; queueToken: string }, scheduleId: string, seat: number) {
  await client(suite, PointService).chargePoints({ amount: 1000n, idempotencyKey: randomUUID() }, bearer(fan.token));
  return client(suite, CoordinatorService).bookSeats({ scheduleId, seatNumbers: [seat], idempotencyKey: randomUUID() }, gated(fan.token, fan.queueToken));
}

describe("the console's operator RPCs", () => {
  it("refuse a caller without the operator key", async () => {
    const { concertId } = await concertOnSale(suite, [{ seatCount: 2, price: 10n }]);
    for (const call of [
      queueAdmin().listQueueStats({ concertIds: [concertId] }, wrongKey),
      client(suite, ConcertAdminService).listSeatCounts({}, wrongKey),
      client(suite, PaymentAdminService).listPaymentCounts({}),
    ]) {
      expect((await failure(call)).code).toBe(Code.PermissionDenied);
    }
    expect((await failure(queueAdmin().listQueueStats({ concertIds: [] }, operator))).code).toBe(Code.InvalidArgument);
    expect((await failure(queueAdmin().listQueueStats({ concertIds: ["nope"] }, operator))).code).toBe(Code.InvalidArgument);
  });

  it("report every concert's line, wait at the back, seats held and sold, and payments", async () => {
    const { concertId, scheduleIds } = await concertOnSale(suite, [
      { seatCount: 3, price: 100n },
      { seatCount: 2, price: 100n },
    ]);
    const other = await concertOnSale(suite, [{ seatCount: 1, price: 100n }]);
    const stats = async () => (await queueAdmin().listQueueStats({ concertIds: [concertId, other.concertId] }, operator)).stats;

    // Nobody came yet: empty rooms with the default policy, in request order.
    let [room, otherRoom] = await stats();
    expect(room).toMatchObject({ concertId, waiting: 0n, admitted: 0n, admittedPerMinute: 0n, paused: false, soldOut: false });
    expect(room!.policy!.maxActive).toBeGreaterThan(0);
    expect(room!.waitAtBack).toBeUndefined();
    expect(otherRoom!.concertId).toBe(other.concertId);

    // Paused with three fans in line: the line counts them, no wait is made up.
    await queueAdmin().pauseAdmission({ concertId }, operator);
    const fans = [];
    for (let i = 0; i < 3; i++) fans.push(await fanInLine(concertId));
    [room] = await stats();
    expect(room).toMatchObject({ waiting: 3n, admitted: 0n, paused: true });
    expect(room!.waitAtBack).toBeUndefined();

    // One at a time, resumed: one admitted, two waiting, and the back of the line waits for the session ahead.
    await queueAdmin().setAdmissionPolicy({ concertId, policy: { maxActive: 1 } }, operator);
    await queueAdmin().resumeAdmission({ concertId }, operator);
    await waitForState(suite, fans[0]!.queueToken, QueueState.ADMITTED);
    [room] = await stats();
    expect(room).toMatchObject({ waiting: 2n, admitted: 1n, admittedPerMinute: 1n, paused: false });
    expect(room!.policy!.maxActive).toBe(1);
    expect(durationMs(room!.waitAtBack!)).toBeGreaterThan(0);
    // The same numbers as GetQueueStats tells for the one concert.
    const single = await queueAdmin().getQueueStats({ concertId }, operator);
    expect(single).toMatchObject({ waiting: 2n, admitted: 1n });
    expect(single.waitAtBack).toBeDefined();

    const seatsOf = async () => (await client(suite, ConcertAdminService).listSeatCounts({}, operator)).concerts.find((c) => c.concertId === concertId);
    expect(await seatsOf()).toMatchObject({ total: 5, available: 5, held: 0, sold: 0 });
    expect((await client(suite, ConcertAdminService).listSeatCounts({}, operator)).concerts.find((c) => c.concertId === other.concertId)).toMatchObject({ total: 1, available: 1 });

    // The admitted fan holds two seats of the first date, then buys one of the second.
    const fan = fans[0]!;
    await client(suite, CoordinatorService).reserveSeats({ scheduleId: scheduleIds[0]!, seatNumbers: [1, 2] }, gated(fan.token, fan.queueToken));
    expect(await seatsOf()).toMatchObject({ total: 5, available: 3, held: 2, sold: 0 });
    const paymentsOf = async () => (await client(suite, PaymentAdminService).listPaymentCounts({}, operator)).concerts.find((c) => c.concertId === concertId);
    expect(await paymentsOf()).toBeUndefined(); // no payment yet
    const booked = await book(fan, scheduleIds[1]!, 1);
    expect(booked.payment!.state).toBe(PaymentState.SUCCEEDED);
    expect(await seatsOf()).toMatchObject({ total: 5, available: 2, held: 2, sold: 1 });
    expect(await paymentsOf()).toMatchObject({ pending: 0, succeeded: 1, failed: 0 });
  });
});

describe("the operator console in Chromium", () => {
  const pageErrors: string[] = [];
  let page: Page;
  const byTestId = (id: string) => page.locator(`[data-testid="${id}"]`);
  const textOf = (id: string) => () => byTestId(id).textContent();
  // The top of the page: the form and the newest concerts (the test's own first; the run's database holds other files' concerts too).
  const shot = (name: string) => page.screenshot({ path: join(artifacts, `${name}.png`) });

  beforeAll(async () => {
    const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
    page = await context.newPage();
    page.on("pageerror", (error) => pageErrors.push(error.message));
    page.on("console", (message) => {
      // Chromium logs every non-2xx response; the refused key is part of the flow and shown by the page.
      if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) pageErrors.push(`console: ${message.text()}`);
    });
  });

  it("serves the console and its script, with the page's security headers", async () => {
    const html = await fetch(suite.host.url + "/console");
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(html.headers.get("content-security-policy")).toContain("default-src 'none'");
    expect(await html.text()).toContain("operator console");
    const script = await fetch(suite.host.url + "/console.js");
    expect(script.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect((await script.text()).length).toBeGreaterThan(1000);
  });

  it("signs in with the operator key only, creates a concert, shows its line live, pauses, resumes, sets the policy and counts a sale", async ({ onTestFailed }) => {
    onTestFailed(() => shot("failed").then(() => undefined, () => undefined));
    await page.goto(suite.host.url + "/console");
    await page.locator("body[data-ready=true]").waitFor({ timeout: 10_000 });
    expect(await byTestId("concert-rows").isVisible()).toBe(false);
    await shot("01-sign-in");

    // A wrong key is refused, and not kept.
    await page.getByLabel("Operator key").fill("a-wrong-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(textOf("message"), wait).toContain("not the operator key");
    expect(await page.evaluate(() => sessionStorage.getItem("boxoffice.operatorKey"))).toBeNull();
    expect(await byTestId("concert-rows").isVisible()).toBe(false);
    await shot("02-wrong-key");

    // The right one: the table, kept for the tab.
    await page.getByLabel("Operator key").fill(testSecrets.OPERATOR_KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    await byTestId("concert-rows").waitFor({ state: "visible", timeout: 10_000 });
    expect(await textOf("message")()).toBe("");
    expect(await page.evaluate(() => sessionStorage.getItem("boxoffice.operatorKey"))).toBe(testSecrets.OPERATOR_KEY);
    await shot("03-signed-in");

    // Create a concert with two dates through the form.
    const title = `Console Live ${Date.now().toString(36)}`;
    await page.getByLabel("Title").fill(title);
    await page.getByLabel("Venue").fill("Operator Arena");
    await page.getByRole("button", { name: "Add another date" }).click();
    await byTestId("date-seats-1").fill("3");
    await byTestId("date-seats-2").fill("2");
    await byTestId("date-price-2").fill("150");
    await page.getByRole("button", { name: "Create concert" }).click();
    await expect.poll(textOf("notice"), wait).toBe(`Created ${title} with 2 dates.`);
    const { concerts } = await client(suite, ConcertService).listConcerts({});
    const concertId = concerts.find((concert) => concert.title === title)!.id;
    const { schedules } = await client(suite, ConcertService).listSchedules({ concertId });
    expect(schedules.map((s) => s.totalSeats)).toEqual([3, 2]);
    await byTestId(`row-${concertId}`).waitFor({ timeout: 10_000 });
    expect(await textOf(`total-${concertId}`)()).toBe("5");
    expect(await textOf(`waiting-${concertId}`)()).toBe("0");
    expect(await textOf(`state-${concertId}`)()).toBe("Admitting");
    await shot("04-concert-created");

    // Pause with the button: the room is paused.
    await page.getByRole("button", { name: `Pause admission for ${title}` }).click();
    await expect.poll(textOf(`state-${concertId}`), wait).toBe("Paused");
    expect((await queueAdmin().getQueueStats({ concertId }, operator)).paused).toBe(true);

    // Fans come: the line length moves on the page, by itself.
    const fans = [await fanInLine(concertId)];
    await expect.poll(textOf(`waiting-${concertId}`), wait).toBe("1");
    fans.push(await fanInLine(concertId), await fanInLine(concertId));
    await expect.poll(textOf(`waiting-${concertId}`), wait).toBe("3");
    expect(await textOf(`wait-${concertId}`)()).toBe("paused");
    expect(await textOf(`admitted-${concertId}`)()).toBe("0");
    await shot("05-paused-with-a-line");

    // One at a time: the policy form, checked by RPC.
    await byTestId(`max-active-${concertId}`).fill("1");
    await page.getByRole("button", { name: `Set the admission policy for ${title}` }).click();
    await expect.poll(textOf(`policy-${concertId}`), wait).toBe("max 1 admitted · no rate limit");
    expect((await queueAdmin().getQueueStats({ concertId }, operator)).policy!.maxActive).toBe(1);
    expect(await textOf("notice")()).toContain(`Policy for ${title}: at most 1 admitted`);

    // Resume: one admitted, two in line, a wait at the back.
    await page.getByRole("button", { name: `Resume admission for ${title}` }).click();
    await expect.poll(textOf(`state-${concertId}`), wait).toBe("Admitting");
    expect((await queueAdmin().getQueueStats({ concertId }, operator)).paused).toBe(false);
    await expect.poll(textOf(`admitted-${concertId}`), wait).toBe("1");
    await expect.poll(textOf(`waiting-${concertId}`), wait).toBe("2");
    await expect.poll(textOf(`wait-${concertId}`), wait).toMatch(/^about \d+ (s|min)$/);
    expect(await textOf(`rate-${concertId}`)()).toBe("1");
    await shot("06-resumed-one-at-a-time");

    // The admitted fan books a seat by RPC: seats sold moves; the next fan is let in.
    await waitForState(suite, fans[0]!.queueToken, QueueState.ADMITTED);
    const booked = await book(fans[0]!, schedules[0]!.id, 1);
    expect(booked.payment!.state).toBe(PaymentState.SUCCEEDED);
    await expect.poll(textOf(`sold-${concertId}`), wait).toBe("1");
    await expect.poll(textOf(`waiting-${concertId}`), wait).toBe("1");
    expect(await textOf(`pending-${concertId}`)()).toBe("0");
    expect(await textOf(`held-${concertId}`)()).toBe("0");
    await shot("07-seat-sold");

    // A reload keeps the tab signed in; signing out forgets the key.
    await page.reload();
    await byTestId(`row-${concertId}`).waitFor({ timeout: 10_000 });
    await page.getByRole("button", { name: "Sign out" }).click();
    expect(await page.evaluate(() => sessionStorage.getItem("boxoffice.operatorKey"))).toBeNull();
    expect(await byTestId("concert-rows").isVisible()).toBe(false);
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
