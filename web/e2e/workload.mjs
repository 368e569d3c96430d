// Real notebook work in a real browser, through the proxy: Debian's Chromium,
// driven by playwright-core, in a running JupyterLab.
//
//   LAB_URL       the instance's access URL (with its token)
//   UPLOAD_FILE   a local file of hundreds of megabytes to upload
//   IDLE_SECONDS  longer than the proxy's idle timeout of WebSockets
//   SMALL_LIMIT_LAB_URL  the same JupyterLab through a proxy whose body limit is SMALL_LIMIT
//   SMALL_LIMIT   that limit as the proxy names it (e.g. 1m)
//   CHROMIUM      optional: the browser binary (default /usr/bin/chromium)
//
// Notebooks with matplotlib figures of several and of tens of megabytes are
// saved, closed and reopened with their figures intact; the upload goes
// through JupyterLab's own upload button, in its chunks; a kernel's socket
// left idle is cut by the proxy and JupyterLab reconnects to the same kernel.
// Prints one line per check and `N passed, N failed` last; exits 1 on any
// failure (and 2 on bad arguments). The caller checks the uploaded file
// byte for byte in the container.
import { launch, settings } from './chromium.mjs'
import { checks, dismissNews, expect, kernelIdle, launcherCard, newLauncher, runCell, currentNotebook } from './lab.mjs'

const { LAB_URL, UPLOAD_FILE, IDLE_SECONDS, SMALL_LIMIT_LAB_URL, SMALL_LIMIT } = settings('workload',
  ['LAB_URL', 'UPLOAD_FILE', 'IDLE_SECONDS', 'SMALL_LIMIT_LAB_URL', 'SMALL_LIMIT'])
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const { check, scenario, finish } = checks('workload')
const log = (...a) => console.log(...a)

const browser = await launch(CHROMIUM)
browser.context.setDefaultTimeout(30_000)
const tab = browser.context.pages()[0] || (await browser.context.newPage())
const labBase = new URL(LAB_URL).origin + new URL(LAB_URL).pathname

/** contentsPut waits for JupyterLab's next PUT of a file or notebook and returns it. */
const contentsPut = (test = () => true) => tab.waitForResponse(
  (r) => r.request().method() === 'PUT' && r.url().includes('/api/contents/') && test(r.request()), { timeout: 180_000 })

/** figures returns what the current notebook shows: its images, each decoded, and a digest of them. */
async function figures() {
  return tab.evaluate(async () => {
    const imgs = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')]
    const bytes = new TextEncoder().encode(imgs.map((i) => i.src).join('\n'))
    const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('')
    return { count: imgs.length, decoded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length, bytes: bytes.length, digest }
  })
}

/** saveNotebook saves the current notebook (Ctrl+S) and returns the PUT's path and status. */
async function saveNotebook() {
  const put = contentsPut()
  put.catch(() => {}) // awaited below; a closed page must not end the script
  await tab.keyboard.press('Control+s')
  // The first save of an untitled notebook asks for a name: keep it.
  const accept = tab.locator('.jp-Dialog .jp-mod-accept')
  await accept.waitFor({ timeout: 3000 }).then(() => accept.click(), () => {})
  const res = await put
  return { path: decodeURIComponent(new URL(res.url()).pathname.split('/api/contents/')[1]), status: res.status(), body: await res.text().catch(() => '') }
}

/** closeCurrentTab closes JupyterLab's tab in front, as its close icon does. */
async function closeCurrentTab() {
  await tab.locator('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon').first().click()
}

await scenario('notebooks with figures: saved, closed, reopened whole', async () => {
  await check('JupyterLab opens from the access URL', async () => {
    await tab.goto(LAB_URL)
    await launcherCard(tab, 'Python 3 (ipykernel)').waitFor({ timeout: 60_000 })
    await tab.locator('.Toastify__toast button', { hasText: /^No$/ }).waitFor({ timeout: 5000 }).catch(() => {})
    await dismissNews(tab)
  }, tab)

  for (const [n, least] of [[4, 3 << 20], [24, 20 << 20]]) {
    const label = `${n} figures (${least >> 20} MiB or more)`
    let saved
    let shown
    await check(`a notebook of ${label} is saved`, async () => {
      await newLauncher(tab)
      await launcherCard(tab, 'Python 3 (ipykernel)').click()
      await kernelIdle(tab)
      await runCell(tab, `import numpy as np, matplotlib.pyplot as plt\n_ = [plt.figure(figsize=(8, 8)).add_subplot().imshow(np.random.rand(800, 800)) for i in range(${n})]`, 'img', 180_000)
      await tab.waitForFunction((want) => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img').length >= want, n, { timeout: 180_000 })
      shown = await figures()
      expect(shown.count === n && shown.decoded === n, `the notebook shows ${shown.count} figures (${shown.decoded} decoded), want ${n}`)
      expect(shown.bytes >= least, `its figures are ${shown.bytes} bytes, want at least ${least}`)
      saved = await saveNotebook()
      expect(saved.status === 200, `saving answered ${saved.status}: ${saved.body.slice(0, 300)}`)
      log(`      (${saved.path}: ${(shown.bytes / 1048576).toFixed(1)} MiB of figures)`)
    }, tab)
    await check(`the notebook of ${label} is closed and reopened with its figures intact`, async () => {
      await closeCurrentTab()
      await tab.locator('.jp-NotebookPanel').first().waitFor({ state: 'detached', timeout: 30_000 }).catch(() => {})
      await tab.goto(`${labBase}lab/tree/${encodeURIComponent(saved.path)}`)
      await currentNotebook(tab).locator('.jp-OutputArea-output img').nth(n - 1).waitFor({ timeout: 120_000 })
      await tab.waitForFunction((want) => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')]
        .filter((i) => i.complete && i.naturalWidth > 0).length >= want, n, { timeout: 60_000 })
      const again = await figures()
      expect(again.count === n && again.decoded === n, `reopened, it shows ${again.count} figures (${again.decoded} decoded), want ${n}`)
      expect(again.digest === shown.digest, 'reopened, its figures differ from the ones saved')
      await closeCurrentTab()
    }, tab)
  }
})

await scenario("a file of hundreds of megabytes through JupyterLab's upload button", async () => {
  await check('the upload goes in chunks and ends', async () => {
    let chunks = 0
    let refused = ''
    tab.on('response', (r) => {
      if (r.request().method() !== 'PUT' || !r.url().includes('/api/contents/')) return
      if (/"chunk":\s*-?\d/.test(r.request().postData() || '')) chunks++
      if (r.status() >= 400) refused = `${r.status()}`
    })
    const last = contentsPut((req) => /"chunk":\s*-1\b/.test(req.postData() || ''))
    last.catch(() => {}) // awaited below; a closed page must not end the script
    const [chooser] = await Promise.all([
      tab.waitForEvent('filechooser'),
      tab.locator('.jp-FileBrowser-toolbar [title^="Upload"]').first().click(),
    ])
    await chooser.setFiles(UPLOAD_FILE)
    // JupyterLab asks before uploading a file over 15 MB; a person says yes.
    const accept = tab.locator('.jp-Dialog .jp-mod-accept')
    await accept.waitFor({ timeout: 5000 }).then(() => accept.click(), () => {})
    const res = await last
    expect(res.status() === 200 || res.status() === 201, `the last chunk answered ${res.status()}`)
    expect(!refused, `a chunk was refused with ${refused}`)
    expect(chunks > 100, `JupyterLab sent ${chunks} chunks, want its 1 MiB chunks`)
    log(`      (${chunks} chunks)`)
  }, tab)
})

await scenario('an idle kernel socket: cut by the proxy, JupyterLab reconnects, the kernel keeps its state', async () => {
  await check(`after ${IDLE_SECONDS} s idle a cell still sees the kernel's variables`, async () => {
    await newLauncher(tab)
    await launcherCard(tab, 'Python 3 (ipykernel)').click()
    await kernelIdle(tab)
    expect((await runCell(tab, 'y = 41 + 1; print(y)')) === '42', 'the first cell did not print 42')
    let closed = 0
    tab.on('websocket', (ws) => { if (ws.url().includes('/channels')) ws.on('close', () => closed++) })
    // Sockets opened before the listener: count the ones JupyterLab opens again.
    let opened = 0
    tab.on('websocket', (ws) => { if (ws.url().includes('/channels')) opened++ })
    await tab.waitForTimeout(Number(IDLE_SECONDS) * 1000)
    expect(opened > 0, `no kernel socket was opened again within ${IDLE_SECONDS} s: the proxy did not cut the idle one`)
    await kernelIdle(tab)
    expect((await runCell(tab, 'print(y)')) === '42', 'after the idle time the kernel lost y')
    log(`      (${opened} kernel sockets opened again, ${closed} of them closed since)`)
  }, tab)
})

await scenario("a save over the proxy's body limit: JupyterLab shows why", async () => {
  await check(`saving a notebook over ${SMALL_LIMIT} shows the proxy's message in JupyterLab's dialog`, async () => {
    await tab.goto(SMALL_LIMIT_LAB_URL)
    // JupyterLab restores the last workspace, which has no launcher open.
    await tab.locator('.jp-FileBrowser [data-command="launcher:create"]').first().waitFor({ timeout: 60_000 })
    await dismissNews(tab)
    await newLauncher(tab)
    await launcherCard(tab, 'Python 3 (ipykernel)').click()
    await kernelIdle(tab)
    await runCell(tab, 'import numpy as np, matplotlib.pyplot as plt\n_ = [plt.figure(figsize=(8, 8)).add_subplot().imshow(np.random.rand(800, 800)) for i in range(2)]', 'img', 120_000)
    const saved = await saveNotebook()
    expect(saved.status === 413, `the save answered ${saved.status}, want 413`)
    const dialog = tab.locator('.jp-Dialog').filter({ hasText: /body limit/ })
    await dialog.waitFor({ timeout: 30_000 })
    const text = (await dialog.innerText()).replace(/\s+/g, ' ')
    expect(text.includes(SMALL_LIMIT), `the dialog says ${JSON.stringify(text)}, want the ${SMALL_LIMIT} limit named`)
    log(`      (JupyterLab: ${text.slice(0, 160)})`)
  }, tab)
})

await browser.close()
process.exit(finish())
