// What the browser scripts that drive JupyterLab share: counted checks in
// scenarios (a failing check ends its scenario, with a screenshot), and
// JupyterLab's launcher, notebooks and cells as a person uses them.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const log = (...a) => console.log(...a)

class ScenarioAborted extends Error {}

/**
 * checks returns check and scenario, counting what passed and failed, and
 * finish, which prints `N passed, N failed` and returns the exit code.
 */
export function checks(script) {
  const failureDir = mkdtempSync(join(tmpdir(), `${script}-failures-`))
  let passed = 0
  let failed = 0

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

  function finish() {
    if (!failed) rmSync(failureDir, { recursive: true, force: true })
    console.log(`${passed} passed, ${failed} failed`)
    return failed ? 1 : 0
  }
  return { check, scenario, finish }
}

export function expect(cond, message) {
  if (!cond) throw new Error(message)
}

/** launcherCard is the launcher's card of that label in a section (Notebook, Console, Other). */
export const launcherCard = (tab, label, category = 'Notebook') => tab
  .locator(`.jp-Launcher .jp-LauncherCard[data-category="${category}"]`)
  .filter({ has: tab.locator('.jp-LauncherCard-label p', { hasText: new RegExp(`^${label.replace(/[()]/g, '\\$&')}$`) }) })
  .last()

/** dismissNews answers JupyterLab's question about news (its toast covers the page). */
export async function dismissNews(tab) {
  const no = tab.locator('.Toastify__toast button', { hasText: /^No$/ })
  if (await no.count()) await no.first().dispatchEvent('click').catch(() => {}) // it may hang off screen
}

/** newLauncher opens a launcher, as File > New Launcher does. */
export async function newLauncher(tab) {
  await tab.locator('.jp-FileBrowser [data-command="launcher:create"]').first().click()
  await tab.locator('.jp-Launcher').last().waitFor()
}

/** currentNotebook is the notebook panel in front. */
export const currentNotebook = (tab) => tab.locator('.jp-NotebookPanel:not(.lm-mod-hidden)').last()

/** kernelIdle waits for the current notebook's kernel to be connected and idle. */
export async function kernelIdle(tab, timeout = 60_000) {
  await currentNotebook(tab).locator('.jp-Notebook').waitFor({ timeout })
  await tab.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .or(tab.locator('.jp-StatusBar-TextItem', { hasText: /\| Idle$/ })).first()
    .waitFor({ timeout })
}

/**
 * runCell types code into the notebook's last cell, runs it, and returns the
 * text of its output (or waits for `selector` in it, for rich outputs).
 */
export async function runCell(tab, code, selector, timeout = 60_000) {
  const cells = currentNotebook(tab).locator('.jp-CodeCell')
  // Running adds a cell below: keep hold of this one by its position.
  const cell = cells.nth((await cells.count()) - 1)
  await cell.locator('.cm-content').click()
  await tab.keyboard.type(code)
  await tab.waitForTimeout(300) // the editor hands the text to the cell's model
  await tab.keyboard.press('Shift+Enter')
  await cell.locator('.jp-InputPrompt', { hasText: /\[(\*|\d+)\]/ }).waitFor({ timeout: 10_000 })
  const out = cell.locator(selector ? `.jp-OutputArea-output ${selector}` : '.jp-OutputArea-output').first()
  await out.waitFor({ timeout })
  await tab.mouse.move(0, 0)
  return (await out.innerText()).trim()
}
