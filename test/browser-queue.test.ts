// The booking page's waiting room in a real browser (Debian's Chromium driven by
// playwright-core) when the room is not simply moving: an operator's pause, and a
// place lost when the waiting room's Redis (the test's own) starts again empty.
import { randomUUID } from "node:crypto";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QueueAdminService } from "../gen/boxoffice/queue/v1/queue_pb.js";
import { modules } from "../services/modules.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { webPage } from "../services/web/index.js";
import { startRedis, type RedisProcess } from "./redis-cluster.js";
import { client, concertOnSale, operator, testConfig } from "./support.js";
import { launchChromium, byTestId, textOf, attributeOf } from "./chromium.js";

const wait = { timeout: 10_000, interval: 50 };

let redis: RedisProcess;
let suite: Suite;
let browser: Browser;
/** Errors thrown inside any page: the test fails on them. */
const pageErrors: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
  suite = await startSuite(testConfig({ REDIS_URL: redis.url, REDIS_KEY_PREFIX: `test:browser-queue:${randomUUID()}:` }), modules, { fallback: await webPage() });
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await suite?.close();
  await redis?.kill();
});

const admin = () => client(suite, QueueAdminService);

/** A concert on sale whose room the operator has paused before anyone came. */
async function pausedConcert() {
  const { concertId } = await concertOnSale(suite, [{ seatCount: 4, price: 100n }]);
  await admin().pauseAdmission({ concertId }, operator);
  return concertId;
}

/** A new fan (a fresh context: own localStorage, own user token) with the page open, signed in and the concert listed. */
async function openFan(name: string, concertId: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  await page.goto(suite.host.url + "/");
  await page.locator("body[data-ready=true]").waitFor({ timeout: 10_000 });
  await byTestId(page, `join-${concertId}`).waitFor({ timeout: 10_000 });
  return page;
}

/** Joins the queue with the page's button and waits until the page shows the paused room. */
async function joinPaused(page: Page, concertId: string) {
  await byTestId(page, `join-${concertId}`).click();
  await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("WAITING");
  await expect.poll(attributeOf(page, "queue-state", "data-reason"), wait).toBe("QUEUE_PAUSED");
  expect(await textOf(page, "queue-wait")()).toBe("Admission is paused by the organiser; your place is kept.");
  expect(await textOf(page, "queue-position")()).toBe("#1");
}

describe("the waiting room on the booking page, in Chromium", () => {
  it("shows that the organiser paused admission instead of an estimate, and the admission the stream pushes once resumed", async () => {
    const concertId = await pausedConcert();
    const page = await openFan("fan A", concertId);
    await joinPaused(page, concertId);
    // Paused for a while: still waiting, still paused, no estimate made up.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await attributeOf(page, "queue-state", "data-state")()).toBe("WAITING");
    expect(await textOf(page, "queue-wait")()).toContain("paused by the organiser");

    await admin().resumeAdmission({ concertId }, operator);
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("ADMITTED");
    expect(await attributeOf(page, "queue-state", "data-reason")()).toBeNull();
    expect(await textOf(page, "queue-wait")()).toBe("—");
    await expect.poll(textOf(page, "session-countdown"), wait).toMatch(/^\d+:\d\d$/);
    expect(await textOf(page, "message")()).toBe("");
    expect(pageErrors).toEqual([]);
  }, 30_000);

  it("says a place lost when the waiting room's Redis started again empty, and the fan joins again with the same button", async () => {
    const concertId = await pausedConcert(); // paused, so the fan is still waiting when the place is lost
    const page = await openFan("fan B", concertId);
    await joinPaused(page, concertId);

    await redis.kill();
    await redis.start(); // nothing in it: the fan's place is gone, the room's pause is kept in PostgreSQL
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("EXPIRED");
    expect(await attributeOf(page, "queue-state", "data-reason")()).toBe("QUEUE_TOKEN_EXPIRED");
    await expect.poll(textOf(page, "message"), wait).toBe("Your place was lost when the waiting room was reset; enter the queue again.");

    await joinPaused(page, concertId); // a new place, in the room that is still paused
    expect(await textOf(page, "message")()).toBe("");
    await admin().resumeAdmission({ concertId }, operator);
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("ADMITTED");
    expect(pageErrors).toEqual([]);
  }, 30_000);
});
