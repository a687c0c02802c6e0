// The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
// `retagd run` and a real registry that tests/it/dashboard.rs started. It pushes a new dev build
// (scripts/push-sample-images), watches the page update without a reload, approves with a wrong
// token and then the right one, sees a release tag pushed over by hand as drift, and saves
// screenshots.
//
// env: RETAGD_URL, REGISTRY_URL, TOKEN, SCREENSHOTS (a directory), CHROMIUM (optional).
// Exit 0 when every step held; otherwise the failed step on stderr and exit 1.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const push = path.join(here, "..", "..", "scripts", "push-sample-images");
const { RETAGD_URL, REGISTRY_URL, TOKEN, SCREENSHOTS } = process.env;
const REPO = "myorg/api-gateway";
const WAIT = 20_000;

for (const [name, value] of Object.entries({ RETAGD_URL, REGISTRY_URL, TOKEN, SCREENSHOTS })) {
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
}
mkdirSync(SCREENSHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const problems = [];
let step = "start";
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  // A CSP violation or a script error shows up here. The wrong token's 401 is the one failed
  // request the steps make on purpose.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("status of 401")) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

  const stage = (name) => page.locator(`[data-pipeline="api-gateway"] [data-stage="${name}"]`);
  const shows = async (name, tag) => {
    await stage(name).locator(".tag", { hasText: tag }).waitFor({ timeout: WAIT });
  };
  const shot = (name) => page.screenshot({ path: path.join(SCREENSHOTS, `dashboard-${name}.png`), fullPage: true });

  step = "the page shows which version is where";
  await page.goto(`${RETAGD_URL}/`);
  await shows("dev", "v1.2.0-dev.1");
  await shows("staging", "v1.2.0-rc.1");
  await stage("production").getByRole("button", { name: "Approve v1.2.0" }).waitFor({ timeout: WAIT });
  await shot("1-versions");

  step = "a new dev build appears without a reload";
  execFileSync("python3", [push, REGISTRY_URL, REPO, "v1.2.1-dev.1"], { stdio: "inherit" });
  await shows("dev", "v1.2.1-dev.1");
  await shows("staging", "v1.2.1-rc.1");
  const approve = stage("production").getByRole("button", { name: "Approve v1.2.1" });
  await approve.waitFor({ timeout: WAIT });

  step = "a wrong token shows the refusal";
  await approve.click();
  const dialog = page.locator("#token-dialog");
  await dialog.waitFor({ state: "visible", timeout: WAIT });
  await page.fill("#token-input", "not-the-token");
  await page.keyboard.press("Enter");
  await page.locator("#notice", { hasText: "retagd refused (401)" }).waitFor({ timeout: WAIT });
  await shot("2-refused");

  step = "the right token promotes, and the page shows it";
  await approve.click();
  await dialog.waitFor({ state: "visible", timeout: WAIT });
  await page.fill("#token-input", TOKEN);
  await page.keyboard.press("Enter");
  await page.locator("#notice", { hasText: "promoted api-gateway/production" }).waitFor({ timeout: WAIT });
  await shows("production", "v1.2.1");
  // The recent promotions come from the promotion records in the registry (the history API).
  const recorded = page.locator(".recent li[title^='recorded in the registry as sha256:']", {
    hasText: "approved by alice",
  });
  await recorded.waitFor({ timeout: WAIT });
  await shot("3-approved");

  step = "a freeze set from the page shows, and lifting it from the page removes it";
  await page.click("#freeze-open");
  await page.fill("#freeze-reason", "incident 42");
  await page.selectOption("#freeze-stage", "production");
  await page.click("#freeze-ok");
  const frozen = page.locator("#freezes li", { hasText: "incident 42" });
  await frozen.waitFor({ timeout: WAIT });
  await stage("production").locator(".state", { hasText: "frozen by alice" }).waitFor({ timeout: WAIT });
  await shot("4-frozen");
  await frozen.getByRole("button", { name: "Unfreeze" }).click();
  await frozen.waitFor({ state: "detached", timeout: WAIT });

  step = "a release tag pushed over by hand shows as drift";
  execFileSync("python3", [push, REGISTRY_URL, REPO, "v1.2.1"], { stdio: "inherit" });
  await stage("production")
    .locator(".state[data-state='bad']", { hasText: "drift: v1.2.1 was moved outside retagd" })
    .waitFor({ timeout: WAIT });
  await shot("5-drift");

  step = "the filter hides other pipelines";
  await page.fill("#filter", "no-such-pipeline");
  await page.locator("#pipelines", { hasText: "no pipeline matches the filter" }).waitFor({ timeout: WAIT });
  await page.fill("#filter", "");

  step = "dark theme and a phone";
  await page.emulateMedia({ colorScheme: "dark" });
  await page.setViewportSize({ width: 390, height: 844 });
  await shows("production", "v1.2.1");
  await shot("6-dark-phone");

  if (problems.length) throw new Error(problems.join("\n"));
  console.log("dashboard: every step held");
} catch (e) {
  console.error(`dashboard step failed: ${step}\n${e.stack || e}`);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
