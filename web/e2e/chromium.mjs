// What the e2e scripts share: their environment and a throw-away Chromium
// profile (Debian's Chromium, driven by playwright-core; never downloaded).
import { chromium } from 'playwright-core'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// settings returns the named environment variables, or exits with 2 naming
// the missing ones.
export function settings(script, names) {
  const missing = names.filter((name) => !process.env[name])
  if (missing.length) {
    console.error(`${script}: ${missing.join(', ')} not set`)
    process.exit(2)
  }
  return Object.fromEntries(names.map((name) => [name, process.env[name]]))
}

// launch starts headless Chromium in a fresh profile; close() removes it.
// HOST_RESOLVER_RULES, when set, maps names (a registrable test domain) to
// loopback, as Chromium's --host-resolver-rules does.
export async function launch(executablePath) {
  const rules = process.env.HOST_RESOLVER_RULES ? [`--host-resolver-rules=${process.env.HOST_RESOLVER_RULES}`] : []
  const userDataDir = mkdtempSync(join(tmpdir(), 'envjupyter-e2e-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync', ...rules],
    timeout: 60_000,
  })
  return {
    context,
    async close() {
      await context.close()
      rmSync(userDataDir, { recursive: true, force: true })
    },
  }
}
