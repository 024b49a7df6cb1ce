import { existsSync } from "node:fs";
import { chromium, type Browser, type Page } from "playwright-core";

/** Debian's Chromium: the browser tests drive it with playwright-core (browser downloads cannot be had here). */
export const chromiumPath = "/usr/bin/chromium";

/** Starts headless Chromium as every browser test runs it; says how to install it when it is missing. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(chromiumPath)) {
    throw new Error(`the browser tests need Debian's Chromium at ${chromiumPath}: apt-get install -y chromium (.ci/run does this; Playwright's own downloads are not used)`);
  }
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

export const byTestId = (page: Page, id: string) => page.locator(`[data-testid="${id}"]`);
export const textOf = (page: Page, id: string) => () => byTestId(page, id).textContent();
export const attributeOf = (page: Page, id: string, name: string) => () => byTestId(page, id).getAttribute(name);

/**
 * The fan's page in a fresh context (its own storage: a new fan), loaded and
 * ready. Errors thrown in the page, and console errors other than refused
 * requests, go into `errors`, for the test to fail on.
 */
export async function openFanPage(browser: Browser, url: string, errors: string[], height = 1200): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 900, height } });
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) errors.push(`console: ${message.text()}`);
  });
  await page.goto(url + "/");
  await page.locator("body[data-ready=true]").waitFor({ timeout: 10_000 });
  return page;
}
