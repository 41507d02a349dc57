// Drives Debian's /usr/bin/chromium through a running Portcullis proxy, like a person would:
// redirect to login, wrong password, right password, API calls, HttpOnly cookies,
// transparent refresh (optional), logout.
//
//   node tests/browser/flow.mjs <base_url> [--wait-expiry SECONDS]
//        [--email E] [--password P] [--wrong-password P]
//        [--access-cookie NAME] [--refresh-cookie NAME]
//
// Prints one line per step, "ok - ..." or "not ok - ...", plus "# ..." diagnostics, and exits
// 0 when every step passed, 1 on the first failure, 2 on bad usage. Each step has 5 s
// (step 6 gets its --wait-expiry on top); the whole run has 60 s plus --wait-expiry.
import { chromium } from 'playwright-core';

const STEP_TIMEOUT_MS = 5_000;
const OVERALL_TIMEOUT_MS = 60_000;

function usage(msg) {
  console.error(`flow.mjs: ${msg}`);
  console.error('usage: node flow.mjs <base_url> [--wait-expiry SECONDS] [--email E] [--password P] ' +
    '[--wrong-password P] [--access-cookie NAME] [--refresh-cookie NAME]');
  process.exit(2);
}

const opts = {
  base: null,
  waitExpiry: 0,
  email: 'alice@example.com',
  password: 'secret',
  wrongPassword: 'wrong',
  accessCookie: 'access_token',
  refreshCookie: 'refresh_token',
};
{
  const argv = process.argv.slice(2);
  const flags = {
    '--wait-expiry': 'waitExpiry', '--email': 'email', '--password': 'password',
    '--wrong-password': 'wrongPassword', '--access-cookie': 'accessCookie',
    '--refresh-cookie': 'refreshCookie',
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    if (arg in flags) {
      if (value === undefined) {
        if (i + 1 >= argv.length) usage(`${arg} needs a value`);
        value = argv[++i];
      }
      opts[flags[arg]] = value;
    } else if (arg.startsWith('--')) {
      usage(`unknown option ${arg}`);
    } else if (opts.base === null) {
      opts.base = arg;
    } else {
      usage(`unexpected argument ${arg}`);
    }
  }
  if (opts.base === null) usage('missing <base_url>');
  try { opts.base = new URL(opts.base).origin; } catch { usage(`bad base url ${opts.base}`); }
  opts.waitExpiry = Number(opts.waitExpiry);
  if (!Number.isFinite(opts.waitExpiry) || opts.waitExpiry < 0) usage('--wait-expiry must be a number of seconds >= 0');
}

const base = opts.base;
let browser = null;
let context = null;
let page = null;
let stepNo = -1; // the browser launch is step 0; the numbered steps follow the test plan

async function shutdown(code) {
  if (browser) {
    await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 3_000))]);
  }
  process.exit(code);
}

async function diagnostics() {
  if (!page) return;
  try {
    console.log(`# page url: ${page.url()}`);
    const text = await Promise.race([
      page.evaluate(() => document.body ? document.body.innerText : ''),
      new Promise((r) => setTimeout(() => r('(page did not answer)'), 1_000)),
    ]);
    console.log(`# page text: ${JSON.stringify(String(text).slice(0, 500))}`);
  } catch (e) {
    console.log(`# page unavailable: ${e.message.split('\n')[0]}`);
  }
  if (context) {
    try {
      const names = (await context.cookies()).map((c) => c.name);
      console.log(`# cookies in the browser: ${JSON.stringify(names)}`);
    } catch { /* ignore */ }
  }
}

class StepFailure extends Error {}
function fail(msg) { throw new StepFailure(msg); }
function check(cond, msg) { if (!cond) fail(msg); }

// Runs one step with its own timeout; prints "ok - ..." or "not ok - ..." and stops on failure.
async function step(title, fn, extraMs = 0) {
  stepNo += 1;
  const label = `step ${stepNo}: ${title}`;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepFailure(`timed out after ${(STEP_TIMEOUT_MS + extraMs) / 1000} s`)),
      STEP_TIMEOUT_MS + extraMs);
  });
  try {
    const detail = await Promise.race([fn(), timeout]);
    console.log(`ok - ${label}${detail ? ` (${detail})` : ''}`);
  } catch (e) {
    const why = e instanceof StepFailure ? e.message : `${e.name}: ${e.message.split('\n')[0]}`;
    console.log(`not ok - ${label}: ${why}`);
    await diagnostics();
    await shutdown(1);
  } finally {
    clearTimeout(timer);
  }
}

function here() { return new URL(page.url()); }
function pathOf() { return here().pathname; }
async function cookieMap() {
  return new Map((await context.cookies()).map((c) => [c.name, c]));
}
// Waits until the dashboard's fetch into #id has finished; returns {status, text}.
async function loaded(id) {
  const el = page.locator(`#${id}[data-loaded="1"]`);
  await el.waitFor({ state: 'attached' });
  return { status: await el.getAttribute('data-status'), text: (await el.textContent()) ?? '' };
}
function short(s) { return JSON.stringify(s.length > 160 ? `${s.slice(0, 160)}…` : s); }

async function submitLogin(email, password) {
  await page.locator('input[name="email"]').fill(email);
  await page.locator('input[name="password"]').fill(password);
  // The form posts to /login; the proxy answers 303 and the browser follows it.
  await Promise.all([
    page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame() }),
    page.locator('form:has(input[name="password"]) [type="submit"]').click(),
  ]);
  await page.waitForLoadState('load');
}

const overall = setTimeout(async () => {
  console.log(`not ok - overall timeout of ${(OVERALL_TIMEOUT_MS / 1000) + opts.waitExpiry} s reached`);
  await diagnostics();
  await shutdown(1);
}, OVERALL_TIMEOUT_MS + opts.waitExpiry * 1000);

console.log(`# portcullis browser flow against ${base}, chromium /usr/bin/chromium`);

await step('chromium starts', async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
    timeout: STEP_TIMEOUT_MS,
  });
  context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  page = await context.newPage();
  page.on('pageerror', (e) => console.log(`# page error: ${e.message.split('\n')[0]}`));
  page.on('console', (m) => { if (m.type() === 'error') console.log(`# console error: ${m.text()}`); });
  return `chromium ${browser.version()}`;
});

await step('GET /dashboard without a session is redirected to /login?next=%2Fdashboard', async () => {
  await page.goto(`${base}/dashboard`);
  const url = here();
  check(url.pathname === '/login', `ended on ${url.pathname}${url.search}, expected /login`);
  check(url.searchParams.get('next') === '/dashboard',
    `next parameter is ${JSON.stringify(url.searchParams.get('next'))}, expected "/dashboard" (url ${url.search})`);
  await page.locator('input[name="email"]').waitFor();
  return `${url.pathname}${url.search}`;
});

await step(`wrong password for ${opts.email} lands on /login?error=... showing the error`, async () => {
  await submitLogin(opts.email, opts.wrongPassword);
  const url = here();
  check(url.pathname === '/login', `ended on ${url.pathname}${url.search}, expected /login`);
  check(url.searchParams.has('error'), `no error parameter in ${url.search || '(empty query)'}`);
  const error = page.locator('#error');
  await error.waitFor({ state: 'visible' });
  const text = (await error.textContent()) ?? '';
  check(text.trim() !== '', 'the error message is empty');
  const names = [...(await cookieMap()).keys()];
  check(!names.includes(opts.accessCookie), `an ${opts.accessCookie} cookie was set after a failed login`);
  return `${url.pathname}${url.search}, shows ${short(text.trim())}`;
});

await step('right password from /login?next=%2Fdashboard lands on /dashboard', async () => {
  await page.goto(`${base}/login?next=%2Fdashboard`);
  check(pathOf() === '/login', `GET /login?next=%2Fdashboard ended on ${pathOf()}`);
  await submitLogin(opts.email, opts.password);
  const url = here();
  check(url.pathname === '/dashboard', `ended on ${url.pathname}${url.search}, expected /dashboard`);
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  return `${url.pathname}${url.search}`;
});

await step('#items is filled from /api/items and #me from /auth/me', async () => {
  const items = await loaded('items');
  check(items.status === '200', `/api/items answered ${items.status}: ${short(items.text)}`);
  check(items.text.includes('items'), `#items does not contain "items": ${short(items.text)}`);
  const me = await loaded('me');
  check(me.status === '200', `/auth/me answered ${me.status}: ${short(me.text)}`);
  check(me.text.includes(opts.email), `#me does not contain ${opts.email}: ${short(me.text)}`);
  return `items ${short(items.text)}; me ${short(me.text)}`;
});

let firstAccess = null;
let firstRefresh = null;
await step('the token cookies are HttpOnly: in the browser, not in document.cookie', async () => {
  const docCookie = await page.evaluate(() => document.cookie);
  check(!docCookie.includes(opts.accessCookie), `document.cookie shows ${opts.accessCookie}`);
  check(!docCookie.includes(opts.refreshCookie), `document.cookie shows ${opts.refreshCookie}`);
  const jar = await cookieMap();
  const access = jar.get(opts.accessCookie);
  const refresh = jar.get(opts.refreshCookie);
  check(access, `no ${opts.accessCookie} cookie in the browser (has ${JSON.stringify([...jar.keys()])})`);
  check(refresh, `no ${opts.refreshCookie} cookie in the browser (has ${JSON.stringify([...jar.keys()])})`);
  check(access.httpOnly && refresh.httpOnly, 'a token cookie lacks HttpOnly');
  firstAccess = access.value;
  firstRefresh = refresh.value;
  const attrs = (c) => `httpOnly=${c.httpOnly} secure=${c.secure} sameSite=${c.sameSite} path=${c.path}`;
  return `${opts.accessCookie}: ${attrs(access)}; ${opts.refreshCookie}: ${attrs(refresh)}`;
});

if (opts.waitExpiry > 0) {
  await step(`after ${opts.waitExpiry} s the access token is refreshed transparently on reload`, async () => {
    console.log(`# waiting ${opts.waitExpiry} s for the access token to expire`);
    await new Promise((r) => setTimeout(r, opts.waitExpiry * 1000));
    await page.goto(`${base}/dashboard`);
    const url = here();
    check(url.pathname === '/dashboard', `ended on ${url.pathname}${url.search}, expected /dashboard`);
    const items = await loaded('items');
    check(items.status === '200', `/api/items answered ${items.status}: ${short(items.text)}`);
    check(items.text.includes('items'), `#items does not contain "items": ${short(items.text)}`);
    const jar = await cookieMap();
    const access = jar.get(opts.accessCookie);
    check(access, `no ${opts.accessCookie} cookie after the reload`);
    check(access.value !== firstAccess, `${opts.accessCookie} is unchanged: it was not refreshed`);
    const refresh = jar.get(opts.refreshCookie);
    check(refresh, `no ${opts.refreshCookie} cookie after the reload`);
    return `new ${opts.accessCookie}; ${opts.refreshCookie} ${refresh.value === firstRefresh ? 'kept' : 'rotated'}`;
  }, opts.waitExpiry * 1000);
} else {
  stepNo += 1;
  console.log(`ok - step ${stepNo}: transparent refresh # SKIP no --wait-expiry given`);
}

await step('#logout lands on /login and clears both cookies; /dashboard then redirects to /login', async () => {
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/login'),
    page.locator('#logout').click(),
  ]);
  const jar = await cookieMap();
  check(!jar.has(opts.accessCookie), `${opts.accessCookie} is still in the browser`);
  check(!jar.has(opts.refreshCookie), `${opts.refreshCookie} is still in the browser`);
  await page.goto(`${base}/dashboard`);
  const url = here();
  check(url.pathname === '/login', `GET /dashboard after logout ended on ${url.pathname}${url.search}, expected /login`);
  return `then /dashboard -> ${url.pathname}${url.search}`;
});

clearTimeout(overall);
console.log(`# all ${stepNo} steps passed`);
await shutdown(0);
