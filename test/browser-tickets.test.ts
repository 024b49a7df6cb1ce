// My bookings in a real browser (Debian's Chromium driven by playwright-core): a fan books and
// pays, sees the booking with its order number and a ticket whose QR image decodes to the ticket
// code, cancels it and sees the points come back. On the embedded database a plain `npm start` uses.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import jsqrModule from "jsqr";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcertAdminService, type Schedule } from "../gen/boxoffice/concert/v1/concert_pb.js";
import { PointService } from "../gen/boxoffice/point/v1/point_pb.js";
import { ReservationService, ReservationState } from "../gen/boxoffice/reservation/v1/reservation_pb.js";
import { TicketService, TicketState } from "../gen/boxoffice/ticket/v1/ticket_pb.js";
import { modules } from "../services/modules.js";
import { startSuite, type Suite } from "../services/platform/suite.js";
import { webPage } from "../services/web/index.js";
import { bearer, client, operator, testConfig } from "./support.js";
import { attributeOf, byTestId, launchChromium, textOf, openFanPage } from "./chromium.js";

// jsqr is CommonJS whose module.exports is the decoder itself, typed as an ES module with a default export.
const jsQR = (typeof jsqrModule === "function" ? jsqrModule : jsqrModule.default) as typeof jsqrModule.default;

const artifacts = join(import.meta.dirname, "..", "test-results", "tickets");
const title = `Tickets Test ${Date.now().toString(36)}`;
const wait = { timeout: 10_000, interval: 50 };

let suite: Suite;
let browser: Browser;
let concertId: string;
let date: Schedule;
const pageErrors: string[] = [];

const openFan = () => openFanPage(browser, suite.host.url, pageErrors);

/** The pixels of an <img> on the page, read back through a canvas, decoded as a QR code in Node. */
async function decodeQr(page: Page, testId: string): Promise<string | undefined> {
  const pixels = await page.evaluate((id) => {
    const image = document.querySelector<HTMLImageElement>(`[data-testid="${id}"]`)!;
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [image.naturalWidth, image.naturalHeight];
    const context = canvas.getContext("2d")!;
    context.drawImage(image, 0, 0);
    const { data, width, height } = context.getImageData(0, 0, canvas.width, canvas.height);
    return { data: Array.from(data), width, height };
  }, testId);
  return jsQR(Uint8ClampedArray.from(pixels.data), pixels.width, pixels.height)?.data;
}

describe("my bookings in Chromium", () => {
  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    suite = await startSuite(testConfig({ DATABASE_URL: "" }), modules, { fallback: await webPage() });
    browser = await launchChromium();
    const { concert, schedules } = await client(suite, ConcertAdminService).createConcert(
      { title, venue: "QR Hall", schedules: [{ startsAt: timestampFromMs(Date.now() + 72 * 3_600_000), seatCount: 4, price: 100n }] },
      operator,
    );
    concertId = concert!.id;
    date = schedules[0]!;
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await suite?.close();
  });

  it("a fan books and pays, sees the booking and a QR ticket, cancels it and gets the points back", async ({ onTestFailed }) => {
    const page = await openFan();
    onTestFailed(() => page.screenshot({ path: join(artifacts, "failed.png"), fullPage: true }).then(() => undefined, () => undefined));
    const token = (await page.evaluate(() => localStorage.getItem("boxoffice.userToken")))!;

    // Before any booking: the section opens from the header and says there is none.
    await byTestId(page, "open-bookings").click();
    await expect.poll(textOf(page, "bookings-status"), wait).toBe("You have no bookings yet.");

    await byTestId(page, "charge-amount").fill("500");
    await byTestId(page, "charge").click();
    await expect.poll(textOf(page, "balance"), wait).toBe("500");
    const before = (await client(suite, PointService).getBalance({}, bearer(token))).balance;
    expect(before).toBe(500n);

    await page.getByRole("button", { name: `Join the queue for ${title}` }).click();
    await expect.poll(attributeOf(page, "queue-state", "data-state"), wait).toBe("ADMITTED");
    await byTestId(page, `date-${date.id}`).click();
    await byTestId(page, "seat-1").waitFor({ timeout: 10_000 });
    await byTestId(page, "seat-1").click();
    await byTestId(page, "seat-2").click();
    await byTestId(page, "hold").click();
    await expect.poll(textOf(page, "hold-seats"), wait).toBe("1, 2");
    await byTestId(page, "pay").click();
    await expect.poll(textOf(page, "payment-state"), wait).toBe("SUCCEEDED");
    await expect.poll(textOf(page, "balance"), wait).toBe("300");

    // What the service says the fan has: one booking, two tickets.
    const { tickets } = await client(suite, TicketService).listTickets({}, bearer(token));
    expect(tickets.map((t) => t.seatNumber).sort()).toEqual([1, 2]);
    const reservationId = tickets[0]!.reservationId;
    const orderNumber = tickets[0]!.orderNumber;
    const ticket = tickets.find((t) => t.seatNumber === 1)!;
    expect(ticket.state).toBe(TicketState.VALID);

    // "See your tickets" after the payment opens the booking.
    await byTestId(page, "see-tickets").click();
    await byTestId(page, `booking-${reservationId}`).waitFor({ timeout: 10_000 });
    expect(await attributeOf(page, `booking-${reservationId}`, "data-state")()).toBe("CONFIRMED");
    expect(await textOf(page, `booking-order-${reservationId}`)()).toBe(orderNumber);
    expect(await textOf(page, `booking-concert-${reservationId}`)()).toBe(`${title} · QR Hall`);
    expect(await textOf(page, `booking-seats-${reservationId}`)()).toBe("1, 2");
    expect(await textOf(page, `booking-amount-${reservationId}`)()).toBe("200 points");
    expect(await textOf(page, `booking-date-${reservationId}`)()).not.toBe("—");
    expect(await textOf(page, `booking-state-${reservationId}`)()).toBe("Confirmed");

    const key = `${reservationId}-1`;
    expect(await textOf(page, `ticket-code-${key}`)()).toBe(ticket.code);
    expect(await attributeOf(page, `ticket-state-${key}`, "data-state")()).toBe("VALID");
    await expect.poll(() => byTestId(page, `ticket-qr-${key}`).evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth), wait).toBeGreaterThan(0);
    expect(await attributeOf(page, `ticket-qr-${key}`, "src")()).toMatch(/^data:image\/png;base64,/);
    expect(await decodeQr(page, `ticket-qr-${key}`)).toBe(ticket.code);
    expect(await decodeQr(page, `ticket-qr-${reservationId}-2`)).toBe(tickets.find((t) => t.seatNumber === 2)!.code);
    await page.screenshot({ path: join(artifacts, "booking-with-tickets.png"), fullPage: true });

    // Cancel, asked first; keeping it changes nothing.
    await byTestId(page, `cancel-${reservationId}`).click();
    await byTestId(page, `cancel-keep-${reservationId}`).click();
    expect(await byTestId(page, `cancel-question-${reservationId}`).count()).toBe(0);
    await byTestId(page, `cancel-${reservationId}`).click();
    expect(await textOf(page, `cancel-question-${reservationId}`)()).toContain("200 points are refunded");
    await page.screenshot({ path: join(artifacts, "cancel-question.png"), fullPage: true });
    await byTestId(page, `cancel-confirm-${reservationId}`).click();

    await expect.poll(attributeOf(page, `booking-${reservationId}`, "data-state"), wait).toBe("CANCELLED");
    await expect.poll(attributeOf(page, `booking-state-${reservationId}`, "data-refunded"), wait).toBe("true");
    expect(await textOf(page, `booking-state-${reservationId}`)()).toMatch(/^Cancelled on .+ \(cancelled at your request\) · refunded 200 points$/);
    expect(await byTestId(page, `cancel-${reservationId}`).count()).toBe(0);
    expect(await byTestId(page, `ticket-${key}`).count()).toBe(0);
    await expect.poll(textOf(page, "balance"), wait).toBe("500");
    await expect.poll(textOf(page, "notice"), wait).toContain("200 points are back on your balance (500 points)");
    expect((await client(suite, PointService).getBalance({}, bearer(token))).balance).toBe(before);
    const { reservation } = await client(suite, ReservationService).getReservation({ reservationId }, bearer(token));
    expect(reservation!.state).toBe(ReservationState.CANCELLED);
    const after = await client(suite, TicketService).listTickets({}, bearer(token));
    expect(after.tickets.every((t) => t.state === TicketState.VOID)).toBe(true);
    // The seats are on sale again, as the date list shows.
    await expect.poll(() => page.locator('[data-testid="dates"] li').first().textContent(), wait).toContain("4 of 4 seats left");
    expect(await textOf(page, "message")()).toBe("");
    await page.screenshot({ path: join(artifacts, "booking-cancelled.png"), fullPage: true });
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
