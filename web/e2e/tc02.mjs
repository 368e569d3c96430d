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
import { checks, dismissNews, expect, kernelIdle, launcherCard, newLauncher, runCell } from './lab.mjs'

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
const { check, scenario, finish } = checks('tc02')
const log = (...a) => console.log(...a)

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
    viewport: { width: 1100, height: 640 },
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


// --- JupyterLab ---------------------------------------------------------------

const PLUGIN = 'ipywidgets'

/**
 * useDOMTerminal turns on the terminal's screen reader mode: the terminal
 * draws on a canvas, which has no text to read, and this mode mirrors its
 * rows as text. It goes through the settings API with the page's cookie and
 * XSRF token, as the settings editor would.
 */
async function useDOMTerminal(tab) {
  const status = await tab.evaluate(async (base) => {
    const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || ''
    const res = await fetch(`${base}lab/api/settings/@jupyterlab/terminal-extension:plugin`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', 'X-XSRFToken': decodeURIComponent(xsrf) },
      body: JSON.stringify({ raw: '{"screenReaderMode": true}' }),
    })
    return res.status
  }, new URL(labBase).pathname)
  expect(status === 204 || status === 200, `saving the terminal setting answered ${status}`)
}

// --- TC-02 ----------------------------------------------------------------

let accessURL = ''
let labBase = ''
await scenario('TC-02: start, open JupyterLab, Python, terminal, R, widgets, stop', async () => {
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

  await check('ask for the ipywidgets plugin (JupyterLab widgets)', async () => {
    await page.locator('.options .el-collapse-item__header').click()
    const plugins = page.locator('[data-testid="plugins"] input').first()
    await plugins.waitFor()
    await plugins.pressSequentially(PLUGIN)
    await page.locator('.el-select-dropdown__item', { hasText: PLUGIN }).first().click()
    await page.keyboard.press('Escape')
    await page.locator('.el-select .el-tag', { hasText: PLUGIN }).waitFor()
  }, page)

  await check('click start: the tag shows starting', async () => {
    await page.getByTestId('start').click()
    // The start answer is 202 starting; the page then polls every second.
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
    expect(accessURL && accessURL.includes(ENV_ID), `access URL ${accessURL} does not name ${ENV_ID}`)
    await page.getByTestId('started-at').waitFor()
    await page.mouse.move(0, 0)
    await page.waitForTimeout(300) // let the success message settle in
    await shot(page, 'card-running')
  }, page)

  const lab = await check('click open: JupyterLab opens at its lab URL, its launcher shows Python 3 and R', async () => {
    const [tab] = await Promise.all([context.waitForEvent('page'), page.getByTestId('open').click()])
    watchConsole(tab, 'lab')
    await tab.waitForURL((u) => u.pathname.endsWith('/lab') && u.href.includes(ENV_ID), { timeout: UI_TIMEOUT })
    const url = new URL(tab.url())
    expect(!url.searchParams.has('token'), `the lab URL carries a token: ${tab.url()}`)
    labBase = url.origin + url.pathname.replace(/lab$/, '')
    // The environment's own origin (env-<id>.<jupyter domain>), not the console's.
    const origin = new URL(accessURL).origin
    expect(url.origin === origin && origin !== new URL(CONSOLE_URL).origin,
      `the tab is at ${tab.url()}, not on the environment's own origin ${origin}`)
    await tab.locator('.jp-Launcher').waitFor({ timeout: 60_000 })
    await launcherCard(tab, 'Python 3 (ipykernel)').waitFor()
    await launcherCard(tab, 'R').waitFor()
    await tab.locator('.Toastify__toast button', { hasText: /^No$/ }).waitFor({ timeout: 5000 }).catch(() => {})
    await dismissNews(tab)
    await tab.mouse.move(0, 0)
    await shot(tab, 'lab-launcher', { fullPage: false })
    // Terminals draw on a canvas by default, which has no text to read: the
    // setting takes effect when JupyterLab loads again.
    await useDOMTerminal(tab)
    await tab.reload()
    await launcherCard(tab, 'Python 3 (ipykernel)').waitFor({ timeout: 60_000 })
    return tab
  }, page)

  await check('a new Python notebook runs print(1+1) and shows 2', async () => {
    await launcherCard(lab, 'Python 3 (ipykernel)').click()
    await kernelIdle(lab)
    const out = await runCell(lab, 'print(1+1)')
    expect(out === '2', `the output is ${JSON.stringify(out)}, want "2"`)
    await shot(lab, 'lab-python', { fullPage: false })
  }, lab)

  await check('an ipywidgets slider renders', async () => {
    await runCell(lab, 'import ipywidgets\nipywidgets.IntSlider(value=7, description="slider")', '.widget-slider')
    const slider = lab.locator('.jp-Notebook .widget-slider').last()
    await slider.waitFor({ timeout: 60_000 })
    const text = (await slider.innerText()).replace(/\s+/g, ' ')
    expect(text.includes('slider') && text.includes('7'), `the slider shows ${JSON.stringify(text)}`)
    await shot(lab, 'lab-widgets', { fullPage: false })
  }, lab)

  await check('a terminal runs echo ok', async () => {
    await newLauncher(lab)
    await launcherCard(lab, 'Terminal', 'Other').click()
    const term = lab.locator('.jp-Terminal').last()
    const rows = term.locator('.xterm-accessibility-tree')
    await rows.waitFor({ state: 'attached', timeout: UI_TIMEOUT })
    await lab.waitForFunction((el) => /[#$] $/.test(el.textContent.trimEnd() + ' '), await rows.elementHandle(), { timeout: UI_TIMEOUT })
    await term.click()
    await lab.keyboard.type('echo ok')
    await lab.keyboard.press('Enter')
    await lab.waitForFunction((el) => [...el.children].some((row) => row.textContent.trim() === 'ok'),
      await rows.elementHandle(), { timeout: UI_TIMEOUT })
    await shot(lab, 'lab-terminal', { fullPage: false })
  }, lab)

  await check('an R notebook runs 1+1 and shows [1] 2', async () => {
    await newLauncher(lab)
    await launcherCard(lab, 'R').click()
    await kernelIdle(lab)
    const out = await runCell(lab, '1+1')
    // IRkernel sends text/plain "[1] 2" and richer forms; JupyterLab shows the richest.
    expect(out === '[1] 2' || out === '2', `the output is ${JSON.stringify(out)}, want [1] 2`)
    log(`      (R shows ${JSON.stringify(out)})`)
    await shot(lab, 'lab-r', { fullPage: false })
  }, lab)

  await check('back on the page, click stop: the tag shows stopped', async () => {
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

  await check('JupyterLab reloaded says the environment is gone', async () => {
    lab.on('dialog', (d) => d.accept().catch(() => {}))
    const res = await lab.goto(`${labBase}lab`)
    expect(res.status() === 404, `reloading JupyterLab answered ${res.status()}, want 404`)
    const text = await lab.locator('body').innerText()
    expect(/not exist or is not running/.test(text), `the page says ${JSON.stringify(text.slice(0, 200))}`)
    await shot(lab, 'lab-gone', { fullPage: false })
    await lab.close({ runBeforeUnload: false }).catch(() => {})
  }, lab)

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
process.exit(finish())
