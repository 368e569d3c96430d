// Signs in to an environment's JupyterLab through the local OpenID Connect
// provider (access mode sso, docs/SSO.md), in Debian's Chromium
// (infra/e2e/sso_test.go runs it).
//
// Opens ENV_URL, expects the provider's login page (under ISSUER), signs in
// as LOGIN (the dev pages take any password), consents, and follows where
// the browser ends. If JupyterLab opens, the page itself starts a kernel and
// runs 1+1 over the kernel's WebSocket, with nothing but its cookies. Prints
// one JSON line:
//   {"status", "error", "finalURL", "sawLoginPage", "result", "urls": [...],
//    "history": [...], "cookies": [{"name","value","domain"}], "callback"}
//
// Environment: CHROMIUM, ENV_URL, ISSUER, LOGIN.
import { launch, settings } from './chromium.mjs'

const { CHROMIUM, ENV_URL, ISSUER, LOGIN } = settings('sso-signin', ['CHROMIUM', 'ENV_URL', 'ISSUER', 'LOGIN'])
const { context, close } = await launch(CHROMIUM)
let code = 0
try {
  const page = await context.newPage()
  const urls = []
  let callback = ''
  let lastDocument = { status: 0, error: '' }
  context.on('request', (req) => {
    urls.push(req.url())
    if (req.url().includes('/sso/callback?')) callback = req.url()
  })
  page.on('response', async (res) => {
    if (res.request().isNavigationRequest() && res.frame() === page.mainFrame()) {
      lastDocument = { status: res.status(), error: (await res.headerValue('x-envjupyter-error')) || '' }
    }
  })
  await page.goto(ENV_URL, { waitUntil: 'load', timeout: 60_000 })
  const sawLoginPage = page.url().startsWith(ISSUER) && (await page.locator('input[name=login]').count()) === 1
  if (!sawLoginPage) throw new Error(`not the provider's login page: ${page.url()}`)
  await page.fill('input[name=login]', LOGIN)
  await page.fill('input[name=password]', 'any password: the dev login page checks none')
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')])
  // The consent page (first sign-in of this user to this client).
  if (page.url().startsWith(ISSUER) && (await page.locator('input[name=prompt][value=consent]').count()) === 1) {
    const [res] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')])
    void res
  }
  const finalURL = page.url()
  const probe = lastDocument
  let result = ''
  if (probe.status === 200 && finalURL.startsWith(ENV_URL)) {
    // Only the cookies the sign-in left: start a kernel, run 1+1.
    result = await page.evaluate(async (base) => {
      const k = await fetch(base + 'api/kernels', {
        method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'python3' }),
      })
      if (k.status !== 201) return `kernel: HTTP ${k.status}`
      const { id } = await k.json()
      const ws = new WebSocket(base.replace(/^http/, 'ws') + `api/kernels/${id}/channels`)
      const msgId = crypto.randomUUID()
      return await new Promise((resolve) => {
        const timer = setTimeout(() => resolve('timeout'), 60_000)
        ws.onerror = () => resolve('websocket error')
        ws.onopen = () => ws.send(JSON.stringify({
          header: { msg_id: msgId, msg_type: 'execute_request', username: '', session: crypto.randomUUID(), version: '5.3', date: new Date().toISOString() },
          parent_header: {}, metadata: {}, channel: 'shell',
          content: { code: '1+1', silent: false, store_history: false, user_expressions: {}, allow_stdin: false },
        }))
        ws.onmessage = (ev) => {
          const m = JSON.parse(ev.data)
          if (m.parent_header && m.parent_header.msg_id === msgId && m.msg_type === 'execute_result') {
            clearTimeout(timer)
            ws.close()
            resolve(m.content.data['text/plain'])
          }
        }
      })
    }, ENV_URL)
  }
  const history = await page.evaluate(() => history.length)
  const cookies = (await context.cookies()).map((c) => ({ name: c.name, value: c.value, domain: c.domain }))
  console.log(JSON.stringify({ status: probe.status, error: probe.error, finalURL, sawLoginPage, result, urls, history, cookies, callback }))
} catch (err) {
  console.error(`sso-signin: ${err.stack || err}`)
  code = 1
} finally {
  await close()
}
process.exit(code)
