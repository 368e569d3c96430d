// In link mode (access_mode link) an access link works once and for
// LINK_TTL seconds; the console's "Open" must fetch a fresh one every time.
// This clicks Open twice, then again after the link's lifetime, and checks
// that JupyterLab opens each time through the proxy. The browser's cookies
// (the proxy's session, Jupyter's own) are dropped before each click, so
// only the link can open it.
//
//   CONSOLE_URL  the console page, e.g. http://console.localhost:18081/
//   ENV_ID       an environment of the page's dev identity, already running
//   LINK_TTL     the deployment's link_ttl_seconds
//   CHROMIUM     optional: the browser binary (default /usr/bin/chromium)
//
// Prints one line per open and exits 1 on the first failure (2 on bad
// arguments).

import { chromium } from 'playwright-core'

const { CONSOLE_URL, ENV_ID, LINK_TTL } = process.env
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
if (!CONSOLE_URL || !ENV_ID || !(Number(LINK_TTL) > 0)) {
  console.error('open-link: CONSOLE_URL, ENV_ID and LINK_TTL (seconds) are needed')
  process.exit(2)
}

// What shows that Jupyter's own UI loaded: JupyterLab's shell, or the
// classic notebook's file list.
const JUPYTER_UI = '.jp-LabShell, #jp-main-dock-panel, #notebook_list'
const base = `/env-${ENV_ID}/`

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
})
const context = await browser.newContext({ viewport: { width: 1000, height: 600 } })
context.setDefaultTimeout(30_000)
const page = await context.newPage()

async function openOnce(label) {
  await context.clearCookies()
  const [tab] = await Promise.all([context.waitForEvent('page'), page.getByTestId('open').click()])
  try {
    await tab.waitForURL((u) => u.pathname.startsWith(base) && !u.pathname.endsWith('/_access'), { timeout: 30_000 })
    await tab.locator(JUPYTER_UI).first().waitFor({ timeout: 60_000 })
    console.log(`ok    ${label}: JupyterLab opened at ${new URL(tab.url()).pathname}`)
  } catch (err) {
    const text = await tab.locator('body').innerText().catch(() => '')
    throw new Error(`${label}: ${err.message.split('\n')[0]} (tab at ${tab.url()}: ${text.replace(/\s+/g, ' ').slice(0, 300)})`)
  } finally {
    await tab.close()
  }
}

let code = 0
try {
  const u = new URL(CONSOLE_URL)
  u.searchParams.set('env', ENV_ID)
  u.searchParams.set('lang', 'en')
  await page.goto(u.toString())
  await page.locator('[data-testid="status-tag"][data-status="running"]').waitFor({ timeout: 60_000 })
  const shown = await page.getByTestId('access-url').innerText()
  if (shown.includes('?t=')) throw new Error(`the card shows the link's ticket: ${shown}`)
  // The link the page got when it loaded: what a page reusing it would open.
  const loaded = await page.getByTestId('access-url').getAttribute('href')

  await openOnce('first open')
  await openOnce('second open')
  // The links the page has seen so far are all past their lifetime now.
  await page.waitForTimeout((Number(LINK_TTL) + 2) * 1000)
  await context.clearCookies()
  // In the browser: node cannot resolve the environments' *.localhost hosts.
  const probe = await context.newPage()
  const stale = await probe.goto(loaded)
  await probe.close()
  if (stale?.status() !== 401) throw new Error(`the link the page loaded answers ${stale?.status()} after its lifetime, want 401`)
  console.log('ok    the link the page loaded is refused after its lifetime (401)')
  await openOnce(`open after the link lifetime (${LINK_TTL} s)`)
} catch (err) {
  console.log(`FAIL  ${err.message}`)
  code = 1
}
await browser.close()
process.exit(code)
