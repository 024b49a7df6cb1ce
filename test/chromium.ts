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
