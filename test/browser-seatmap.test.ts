// The seat map by section in a real browser (Debian's Chromium driven by playwright-core): an
// operator creates a concert whose date has a seat plan (two sections, two price tiers); a fan
// sees the sections, rows and tier legend, asks for the best 2 seats of a tier, gets two adjacent
// seats in that tier's front row shown as theirs, pays and sees success. On the embedded database.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, type Schedule } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { ReservationService, ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { modules } from "../services/modules.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { webPage } from "../services/web/index.js";
import { bearer, client, operator, testConfig } from "./support.js";
import { attributeOf, byTestId, launchChromium, textOf, openFanPage } from "./chromium.js";

const artifacts = join(import.meta.dirname, "..", "test-results", "seatmap");
const title = `Seat Map Test ${Date.now().toString(36)}`;
const wait = { timeout: 10_000, interval: 50 };
const labels = (n: number) => Array.from({ length: n }, (_, i) => String(i + 1));

/** Stalls: rows A and B of 8 seats, Premium (300); Balcony: rows A and B of 6 seats, Standard (120). */
const plan = {
  tiers: [
    { name: "Premium", price: 300n },
    { name: "Standard", price: 120n },
  ],
  sections: [
    { name: "Stalls", rows: [{ label: "A", tier: "Premium", seats: labels(8) }, { label: "B", tier: "Premium", seats: labels(8) }] },
    { name: "Balcony", rows: [{ label: "A", tier: "Standard", seats: labels(6) }, { label: "B", tier: "Standard", seats: labels(6) }] },
  ],
};

let suite: Suite;
let browser: Browser;
let date: Schedule;
const pageErrors: string[] = [];

const openFan = () => openFanPage(browser, suite.host.url, pageErrors, 1400);

/** The data-testids of the elements matching a selector, in page order. */
const testIds = (page: Page, selector: string) => page.locator(selector).evaluateAll((nodes) => nodes.map((node) => (node as HTMLElement).dataset.testid));

describe("the seat map by section in Chromium", () => {
  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    suite = await startSuite(testConfig({ DATABASE_URL: "" }), modules, { fallback: await webPage() });
    browser = await launchChromium();
    const { schedules } = await client(suite, ConcertAdminService).createConcert(
      { title, venue: "Plan Hall", schedules: [{ startsAt: timestampFromMs(Date.now() + 72 * 3_600_000), plan }] },
      operator,
    );
    date = schedules[0]!;
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await suite?.close();
  });

  it("draws sections, rows and the tier legend; best available holds two adjacent seats in the tier's front row; the fan pays", async ({ onTestFailed }) => {
    const page = await openFan();
    onTestFailed(() => page.screenshot({ path: join(artifacts, "failed.png"), fullPage: true }).then(() => undefined, () => undefined));
    const token = (await page.evaluate(() => localStorage.getItem("boxoffice.userToken")))!;

    await byTestId(page, "charge-amount").fill("1000");
    await byTestId(page, "charge").click();
    await expect.poll(textOf(page, "balance"), wait).toBe("1,000");

    await page.getByRole("button", { name: `Join the queue for ${title}` }).click();
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("ADMITTED");
    await byTestId(page, `date-${date.id}`).click();
    await byTestId(page, "section-Stalls").waitFor({ timeout: 10_000 });

    // Sections in plan order, each with a heading and its rows front first, each row its label then its seats in place order.
    expect(await testIds(page, '[data-testid="seats"] .seat-section')).toEqual(["section-Stalls", "section-Balcony"]);
    expect(await byTestId(page, "section-Stalls").locator("h3").textContent()).toBe("Stalls");
    expect(await byTestId(page, "section-Balcony").locator("h3").textContent()).toBe("Balcony");
    expect(await testIds(page, '[data-testid="section-Stalls"] .seat-row')).toEqual(["row-Stalls-A", "row-Stalls-B"]);
    expect(await testIds(page, '[data-testid="section-Balcony"] .seat-row')).toEqual(["row-Balcony-A", "row-Balcony-B"]);
    for (const [row, count] of [["row-Stalls-A", 8], ["row-Stalls-B", 8], ["row-Balcony-A", 6], ["row-Balcony-B", 6]] as const) {
      expect(await byTestId(page, row).locator(".row-label").textContent()).toBe(row.at(-1));
      expect(await byTestId(page, row).locator(".seat").allTextContents()).toEqual(labels(count));
    }
    // The seats keep their numbers as test ids: plan order, sections then rows then seats.
    expect(await testIds(page, '[data-testid="row-Balcony-A"] .seat')).toEqual([17, 18, 19, 20, 21, 22].map((n) => `seat-${n}`));
    expect(await attributeOf(page, "seat-17", "data-tier")()).toBe("Standard");
    expect(await attributeOf(page, "seat-1", "data-tier")()).toBe("Premium");
    expect(await page.locator('[data-testid="seats"] .seat[data-state="available"]').count()).toBe(28);

    // The legend names each tier with its price.
    expect(await testIds(page, '[data-testid="tier-legend"] .tier')).toEqual(["tier-Premium", "tier-Standard"]);
    expect(await textOf(page, "tier-Premium")()).toBe("Premium 300 points");
    expect(await textOf(page, "tier-Standard")()).toBe("Standard 120 points");
    await page.screenshot({ path: join(artifacts, "seat-map.png"), fullPage: true });

    // Best available: 2 Standard seats.
    await byTestId(page, "best-tier").selectOption("Standard");
    await byTestId(page, "best-count").selectOption("2");
    await byTestId(page, "best-hold").click();
    await expect.poll(textOf(page, "hold-seats"), wait).toMatch(/^Balcony · row A · seats \d, \d$/);
    // The seat map is drawn again from the seats read after the hold: it may come a moment after the hold's summary.
    await expect.poll(() => page.locator('[data-testid="seats"] .seat[data-state="mine"]').count(), wait).toBe(2);
    const mine = await page.locator('[data-testid="seats"] .seat[data-state="mine"]').evaluateAll((nodes) =>
      nodes.map((node) => ({ id: (node as HTMLElement).dataset.testid!, tier: (node as HTMLElement).dataset.tier, row: node.closest<HTMLElement>(".seat-row")!.dataset.testid, label: node.textContent })),
    );
    expect(mine).toHaveLength(2);
    expect(mine.every((seat) => seat.row === "row-Balcony-A" && seat.tier === "Standard")).toBe(true);
    const [first, second] = mine.map((seat) => Number(seat.label));
    expect(second! - first!).toBe(1);
    expect(await textOf(page, "hold-seats")()).toBe(`Balcony · row A · seats ${first}, ${second}`);
    expect(await textOf(page, "hold-amount")()).toBe("240 points");
    expect(await textOf(page, "notice")()).toContain("held for you");
    expect(await byTestId(page, "best-hold").isDisabled()).toBe(true);

    // What the service holds for this fan is what the map shows.
    const { reservations } = await client(suite, ReservationService).listReservations({}, bearer(token));
    expect(reservations).toHaveLength(1);
    expect(reservations[0]!.state).toBe(ReservationState.HELD);
    expect([...reservations[0]!.seatNumbers].sort((a, b) => a - b)).toEqual(mine.map((seat) => Number(seat.id.slice("seat-".length))).sort((a, b) => a - b));
    await page.screenshot({ path: join(artifacts, "best-available-held.png"), fullPage: true });

    await byTestId(page, "pay").click();
    await expect.poll(textOf(page, "payment-state"), wait).toBe("SUCCEEDED");
    await expect.poll(textOf(page, "balance"), wait).toBe("760");
    expect(await textOf(page, "result-seats")()).toBe(`Balcony · row A · seats ${first}, ${second}: SOLD to you`);
    expect(await textOf(page, "notice")()).toContain("Payment succeeded: 240 points paid.");
    for (const seat of mine) expect(await attributeOf(page, seat.id, "data-state")()).toBe("sold");
    expect(await textOf(page, "message")()).toBe("");
    await page.screenshot({ path: join(artifacts, "paid.png"), fullPage: true });
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
