// TC-02 in a real browser: Debian's Chromium, driven by playwright-core
// (never a downloaded browser), against the console page served by a running
// local stack.
//
//   CONSOLE_URL     the console page, e.g. http://console.localhost:18081/
//   ENV_ID          a running environment of the page's dev identity
//   STOPPED_ENV_ID  an environment of the same customer that is not running
//   SCREENSHOT_DIR  where the PNGs go (created if missing)
//   ERROR_TEXT      optional: the message the error path expects
//                   (default: the API's environment_not_running message)
//   CHROMIUM        optional: the browser binary (default /usr/bin/chromium)
//
// Prints one line per check and `N passed, N failed` last; exits 1 on any
// failure (and 2 on bad arguments).

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback
  if (v === undefined || v === '') {
    console.error(`tc02: ${name} is not set`)
    process.exit(2)
  }
  return v
}

const CONSOLE_URL = env('CONSOLE_URL')
const ENV_ID = env('ENV_ID')
const STOPPED_ENV_ID = env('STOPPED_ENV_ID')
const SCREENSHOT_DIR = env('SCREENSHOT_DIR')
const ERROR_TEXT = env('ERROR_TEXT', 'the environment is not running; start it first')
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium')

const START_TIMEOUT = 120_000
const STOP_TIMEOUT = 60_000
const UI_TIMEOUT = 30_000

mkdirSync(SCREENSHOT_DIR, { recursive: true })
const failureDir = mkdtempSync(join(tmpdir(), 'tc02-failures-'))

let passed = 0
let failed = 0
const log = (...a) => console.log(...a)

/** check runs one expectation; a failure is counted and rethrown to end its scenario. */
async function check(name, fn, page) {
  const t0 = Date.now()
  try {
    const r = await fn()
    passed++
    log(`ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`)
    return r
  } catch (err) {
    failed++
    log(`FAIL  ${name}: ${err?.message?.split('\n')[0] || err}`)
    if (page && !page.isClosed()) {
      const shot = join(failureDir, `${name.replace(/[^a-z0-9]+/gi, '-')}.png`)
      await page.screenshot({ path: shot, fullPage: true }).catch(() => {})
      log(`      page: ${page.url()}; screenshot: ${shot}`)
      const text = await page.locator('body').innerText().catch(() => '')
      log(`      page text: ${text.replace(/\s+/g, ' ').slice(0, 500)}`)
    }
    throw new ScenarioAborted(name)
  }
}

class ScenarioAborted extends Error {}

async function scenario(name, fn) {
  log(`--- ${name}`)
  try {
    await fn()
  } catch (err) {
    if (!(err instanceof ScenarioAborted)) {
      failed++
      log(`FAIL  ${name}: ${err?.stack || err}`)
    } else {
      log(`      (${name}: the remaining steps did not run)`)
    }
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message)
}

function pageURL(params) {
  const u = new URL(CONSOLE_URL)
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v)
  return u.toString()
}

const shot = (page, name, opts = {}) => page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true, ...opts })
const tag = (page) => page.getByTestId('status-tag')

async function waitStatus(page, status, timeout) {
  await page.locator(`[data-testid="status-tag"][data-status="${status}"]`).waitFor({ state: 'visible', timeout })
}

async function currentStatus(page) {
  return tag(page).getAttribute('data-status', { timeout: 1000 }).catch(() => null)
}

// --- the browser ----------------------------------------------------------

const userDataDir = mkdtempSync(join(tmpdir(), 'tc02-chromium-'))
let context
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 960, height: 460 },
    deviceScaleFactor: 1,
    locale: 'zh-CN',
    timeout: 60_000,
  })
} catch (err) {
  console.error(`tc02: cannot start ${CHROMIUM}: ${err.message}`)
  rmSync(userDataDir, { recursive: true, force: true })
  console.log('0 passed, 1 failed')
  process.exit(1)
}
context.setDefaultTimeout(UI_TIMEOUT)

const consoleErrors = []
function watchConsole(page, label) {
  page.on('pageerror', (err) => consoleErrors.push(`${label}: ${err.message}`))
}

// --- TC-02 ----------------------------------------------------------------

let accessURL = ''
await scenario('TC-02: start, open, run print(1+1), stop', async () => {
  const page = context.pages()[0] || (await context.newPage())
  watchConsole(page, 'console')

  await check('the page loads with the environment from ?env=', async () => {
    await page.goto(pageURL({ env: ENV_ID, lang: 'zh' }))
    await page.getByTestId('jupyter-card').waitFor()
    const env = await page.getByTestId('jupyter-card').getAttribute('data-env')
    expect(env === ENV_ID, `card shows environment ${env}, want ${ENV_ID}`)
    const s = await tag(page).getAttribute('data-status')
    expect(['not_started', 'stopped'].includes(s), `status ${s}, want not_started or stopped before the start`)
    expect((await tag(page).innerText()).trim() !== '', 'the status tag is empty')
    await shot(page, 'card-not-started')
  }, page)

  await check('click start: the tag shows starting', async () => {
    await page.getByTestId('start').click()
    // The start answer is 202 starting; the page then polls every second.
    // A very quick start could already be running at the first poll, so
    // accept that only if starting was never missed by more than a poll.
    await waitStatus(page, 'starting', 10_000)
    const cls = await tag(page).getAttribute('class')
    expect(/el-tag--warning/.test(cls), `the starting tag is not warning-coloured: ${cls}`)
    await page.getByTestId('stage').waitFor()
    const elapsed = await page.getByTestId('elapsed').innerText()
    expect(/\d+:\d\d/.test(elapsed), `no elapsed time while starting: ${JSON.stringify(elapsed)}`)
    await shot(page, 'card-starting')
  }, page)

  await check('the tag goes from starting to running', async () => {
    await waitStatus(page, 'running', START_TIMEOUT)
    const cls = await tag(page).getAttribute('class')
    expect(/el-tag--success/.test(cls), `the running tag is not success-coloured: ${cls}`)
    accessURL = await page.getByTestId('access-url').getAttribute('href')
    expect(accessURL && accessURL.includes(`/env-${ENV_ID}/`) && accessURL.includes('token='),
      `access URL ${accessURL}, want .../env-${ENV_ID}/?token=...`)
    await page.getByTestId('started-at').waitFor()
    await page.mouse.move(0, 0)
    await page.waitForTimeout(300) // let the success message settle in
    await shot(page, 'card-running')
  }, page)

  const tree = await check('click open: the notebook UI loads in a new tab through the proxy', async () => {
    const [tab] = await Promise.all([context.waitForEvent('page'), page.getByTestId('open').click()])
    watchConsole(tab, 'tree')
    await tab.waitForLoadState('domcontentloaded')
    await tab.waitForURL((u) => u.pathname.startsWith(`/env-${ENV_ID}/`), { timeout: UI_TIMEOUT })
    // The environment's own origin (env-<id>.<jupyter domain>), not the console's.
    const origin = new URL(accessURL).origin
    expect(tab.url().startsWith(origin) && origin !== new URL(CONSOLE_URL).origin,
      `the tab is at ${tab.url()}, not on the environment's own origin ${origin}`)
    await tab.locator('#notebook_list').waitFor({ timeout: UI_TIMEOUT })
    await tab.locator('#new-dropdown-button').waitFor()
    return tab
  }, page)

  const nb = await check('create a Python 3 notebook', async () => {
    await tree.locator('#new-dropdown-button').click()
    const item = tree.locator('#kernel-python3 a, li[id^="kernel-python3"] a').first()
    await item.waitFor()
    const [tab] = await Promise.all([context.waitForEvent('page'), item.click()])
    watchConsole(tab, 'notebook')
    await tab.waitForURL((u) => u.pathname.startsWith(`/env-${ENV_ID}/notebooks/`) && u.pathname.endsWith('.ipynb'),
      { timeout: UI_TIMEOUT })
    await tab.locator('.cell.code_cell .CodeMirror').first().waitFor({ timeout: UI_TIMEOUT })
    // The kernel is up and connected (over the proxied WebSocket) when idle.
    await tab.locator('#kernel_indicator_icon.kernel_idle_icon').waitFor({ timeout: 60_000 })
    return tab
  }, page)

  await check('run print(1+1): the output shows 2', async () => {
    const cell = nb.locator('.cell.code_cell').first()
    await cell.locator('.CodeMirror').click()
    await nb.keyboard.type('print(1+1)')
    await nb.keyboard.press('Shift+Enter')
    const out = cell.locator('.output_area .output_text pre, .output_subarea pre').first()
    await out.waitFor({ timeout: 60_000 })
    const text = (await out.innerText()).trim()
    expect(text === '2', `the output is ${JSON.stringify(text)}, want "2"`)
    await nb.mouse.move(0, 0)
    await shot(nb, 'notebook-ui', { fullPage: false })
    await shot(tree, 'notebook-tree', { fullPage: false })
  }, nb)

  await check('back on the page, click stop: the tag shows stopped', async () => {
    // Leave the notebook saved and closed (no "leave page" dialog on close).
    nb.on('dialog', (d) => d.accept().catch(() => {}))
    await nb.close({ runBeforeUnload: false }).catch(() => {})
    await tree.close().catch(() => {})
    await page.bringToFront()
    await page.getByTestId('stop').click()
    // stopping is short; screenshot it if we catch it.
    const seen = await page.locator('[data-testid="status-tag"][data-status="stopping"]')
      .waitFor({ timeout: 3000 }).then(() => true, () => false)
    if (seen) await shot(page, 'card-stopping')
    else log('      (stopping passed too quickly to screenshot)')
    await waitStatus(page, 'stopped', STOP_TIMEOUT)
    expect(!(await page.getByTestId('access-url').count()), 'the access URL is still shown after the stop')
    await page.getByTestId('status-reason').waitFor()
    await page.waitForTimeout(300)
    await shot(page, 'card-stopped')
  }, page)

  await check('the proxied URL answers 404 after the stop', async () => {
    const base = new URL(accessURL)
    // Navigations: Chromium resolves *.localhost itself; Node's resolver
    // (page.request) would not.
    const probe = await context.newPage()
    try {
      const res = (await probe.goto(`${base.origin}${base.pathname}api`)).status()
      expect(res === 404, `GET ${base.pathname}api answered ${res}, want 404`)
      const nav = (await probe.goto(accessURL)).status()
      expect(nav === 404, `GET of the access URL answered ${nav}, want 404`)
    } finally {
      await probe.close()
    }
  }, page)
})

// --- the error path ---------------------------------------------------------

await scenario('error path: start on a stopped environment', async () => {
  const page = await context.newPage()
  watchConsole(page, 'error-path')
  await check('the page opens on the stopped environment', async () => {
    await page.goto(pageURL({ env: STOPPED_ENV_ID, lang: 'zh' }))
    await page.getByTestId('status-tag').waitFor()
  }, page)

  await check("click start: the API's message is shown", async () => {
    await page.getByTestId('start').click()
    const alert = page.getByTestId('error')
    await alert.waitFor()
    const text = await alert.innerText()
    expect(text.includes(ERROR_TEXT), `the error shows ${JSON.stringify(text)}, want it to contain ${JSON.stringify(ERROR_TEXT)}`)
    await page.mouse.move(0, 0)
    await shot(page, 'card-error')
  }, page)

  await check('the page stays usable: start is enabled again and works', async () => {
    const start = page.getByTestId('start')
    await start.waitFor()
    expect(await start.isEnabled(), 'the start button is disabled after the error')
    const cls = (await start.getAttribute('class')) || ''
    expect(!cls.includes('is-loading'), 'the start button still shows loading after the error')
    // Close the alert, try again: the same message comes back.
    await page.locator('[data-testid="error"] .el-alert__close-btn').click()
    await page.getByTestId('error').waitFor({ state: 'detached' })
    await start.click()
    await page.getByTestId('error').waitFor()
    expect((await page.getByTestId('error').innerText()).includes(ERROR_TEXT), 'the second start shows another message')
    const s = await currentStatus(page)
    expect(s === 'not_started', `status ${s} after a refused start, want not_started`)
  }, page)

  await check('the language toggle switches the labels to English and back', async () => {
    await page.getByTestId('lang-toggle').click()
    await page.getByText('Start JupyterLab').waitFor()
    expect((await tag(page).innerText()).trim() === 'not started', 'the status tag is not in English')
    await page.getByTestId('lang-toggle').click()
    await page.getByText('启动 JupyterLab').waitFor()
  }, page)
  await page.close()
})

// --- a narrow screen ------------------------------------------------------------

await scenario('narrow screen (375 px)', async () => {
  const page = await context.newPage()
  watchConsole(page, 'narrow')
  await page.setViewportSize({ width: 375, height: 667 })
  await check('the card fits 375 px without horizontal scrolling', async () => {
    await page.goto(pageURL({ env: ENV_ID, lang: 'zh' }))
    await page.getByTestId('status-tag').waitFor()
    await page.waitForTimeout(300)
    const width = await page.evaluate(() => document.documentElement.scrollWidth)
    expect(width <= 375, `the page is ${width} px wide at a 375 px viewport`)
    const box = await page.getByTestId('jupyter-card').boundingBox()
    expect(box && box.x >= 0 && box.x + box.width <= 375, `the card is off screen: ${JSON.stringify(box)}`)
  }, page)

  await check('start options: a too-short password is refused with the API message', async () => {
    await page.locator('.options .el-collapse-item__header').click()
    const password = page.locator('input[data-testid="password"], [data-testid="password"] input').first()
    await password.waitFor()
    await password.fill('short')
    await page.getByTestId('start').click()
    const alert = page.getByTestId('error')
    await alert.waitFor()
    const code = await alert.getAttribute('data-code')
    expect(code === 'invalid_password', `error code ${code}, want invalid_password`)
    const text = await alert.innerText()
    expect(/password/i.test(text), `the error shows ${JSON.stringify(text)}, want the API's message about passwords`)
    const width = await page.evaluate(() => document.documentElement.scrollWidth)
    expect(width <= 375, `with the options open the page is ${width} px wide at 375 px`)
    await page.mouse.move(0, 0)
    await shot(page, 'card-narrow')
    await password.fill('')
    expect(await page.getByTestId('start').isEnabled(), 'the start button is disabled after the refusal')
  }, page)
  await page.close()
})

if (consoleErrors.length) {
  log('--- uncaught page errors (not counted):')
  for (const e of consoleErrors) log(`      ${e}`)
}

await context.close().catch(() => {})
rmSync(userDataDir, { recursive: true, force: true })
if (!failed) rmSync(failureDir, { recursive: true, force: true })
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
