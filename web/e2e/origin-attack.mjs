// One customer's page against another customer's JupyterLab, in Debian's
// Chromium (infra/e2e/origin_test.go runs it; docs/SECURITY.md).
//
// The victim logs in to their JupyterLab through the normal flow (LOGIN_URL:
// the ?token= access URL or a short-lived link), then opens ATTACK_URL, a
// page the attacker's own environment serves (no sandboxing CSP). That page
// (written by the test into the attacker's container) tries to read, start,
// write and connect in the victim's environment, and to set cookies for it
// (from its script, and through its own server); it leaves what it achieved
// in window.__results. This script adds whether the cookies reach the
// victim's URL, and prints one JSON line:
//   {"loggedIn": true, "results": {"<attempt>": {"ok": bool, "detail": "..."}}}
//
// Environment:
//   CHROMIUM     the browser executable (Debian's /usr/bin/chromium)
//   LOGIN_URL    the victim's way in
//   VICTIM_BASE  the victim's JupyterLab base URL (.../env-<id>/)
//   ATTACK_URL   the attacker's page
import { launch, settings } from './chromium.mjs'

const { CHROMIUM, LOGIN_URL, VICTIM_BASE, ATTACK_URL } = settings('origin-attack', ['CHROMIUM', 'LOGIN_URL', 'VICTIM_BASE', 'ATTACK_URL'])
const { context, close } = await launch(CHROMIUM)
let code = 0
try {
  const victim = await context.newPage()
  const res = await victim.goto(LOGIN_URL, { waitUntil: 'load', timeout: 60_000 })
  if (!res || res.status() >= 400) throw new Error(`login: HTTP ${res && res.status()} at ${victim.url()}`)
  // Logged in: the victim's own page reads its API with its cookies.
  const loggedIn = await victim.evaluate(async (base) => {
    const r = await fetch(base + 'api/contents', { credentials: 'same-origin' })
    return r.status === 200
  }, VICTIM_BASE)
  if (!loggedIn) throw new Error(`the victim is not logged in at ${victim.url()}`)

  const attack = await context.newPage()
  const served = await attack.goto(ATTACK_URL, { waitUntil: 'load' })
  if (!served || served.status() !== 200) throw new Error(`the attack page: HTTP ${served && served.status()} at ${attack.url()}`)
  try {
    await attack.waitForFunction(() => window.__done === true, null, { timeout: 90_000 })
  } catch (err) {
    const where = await attack.evaluate(() => ({ url: location.href, step: window.__step, results: window.__results, text: document.documentElement.outerHTML.slice(0, 300) })).catch((e) => String(e))
    throw new Error(`the attack page did not finish (${JSON.stringify(where)}): ${err.message}`)
  }
  const results = await attack.evaluate(() => window.__results)
  const victimCookies = await context.cookies([VICTIM_BASE])
  const reaching = (pick) => {
    const found = victimCookies.filter(pick).map((c) => `${c.name} (domain ${c.domain}, path ${c.path})`)
    return { ok: found.length > 0, detail: found.length ? `the victim's URL gets ${found.join(', ')}` : 'no cookie reaches the victim' }
  }
  // Set by the page's script, and by the attacker's server through the proxy.
  results.toss_cookies = reaching((c) => c.name.startsWith('ej_tossed') || c.value === 'tossed')
  results.server_cookies = reaching((c) => c.name.startsWith('ej_srv') || c.value === 'forged')
  console.log(JSON.stringify({ loggedIn, results }))
} catch (err) {
  console.error(`origin-attack: ${err.stack || err}`)
  code = 1
} finally {
  await close()
}
process.exit(code)
