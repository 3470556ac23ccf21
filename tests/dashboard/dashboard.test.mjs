// The dashboard in headless Chromium against a real server (started by run.sh): sign
// in, a sandbox created through the API appears live, pause and resume from the page,
// a terminal runs a command, a file goes up and comes back down, fork, set timeout,
// kill. Steps run in order (each needs the one before); after a failure the rest are
// skipped. Prints `N passed, N failed`.

import { createRequire } from 'node:module'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'

const env = (k) => {
  const v = process.env[k]
  if (!v) throw new Error(`${k} is not set: run this through tests/dashboard/run.sh`)
  return v
}
const URL_ = env('DASHBOARD_URL')
const KEY = env('DASHBOARD_API_KEY')
const ARTIFACTS = env('DASHBOARD_ARTIFACTS')
const RUN = env('DASHBOARD_RUN_ID')
const require = createRequire(join(env('DASHBOARD_NODE_DIR'), 'package.json'))
const { chromium } = require('playwright-core')

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

// ------------------------------------------------------------------ the API, directly

async function api(method, path, body, ms = 120_000) {
  const resp = await fetch(`${URL_}${path}`, {
    method,
    headers: { 'X-API-KEY': KEY, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(ms),
  })
  const text = await resp.text()
  return { status: resp.status, body: text ? JSON.parse(text) : null }
}

const created = new Set()
async function createSandbox() {
  const r = await api('POST', '/v2/sandboxes', { templateID: 'base', timeout: 600, metadata: { suite: 'dashboard', run: RUN } })
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`)
  created.add(r.body.sandboxID)
  return r.body
}

/** Polls `f` until it returns a truthy value (deadline `ms`). */
async function until(what, f, ms = 30_000) {
  const deadline = Date.now() + ms
  let last
  for (;;) {
    try {
      const v = await f()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s${last ? ` (${last.message})` : ''}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

function check(cond, message) {
  if (!cond) throw new Error(message)
}

// ------------------------------------------------------------------ steps

const results = []
let failed = false
async function step(name, f) {
  if (failed) {
    results.push({ name, status: 'skipped' })
    console.log(`- skipped: ${name}`)
    return
  }
  const t0 = Date.now()
  try {
    await f()
    results.push({ name, status: 'passed' })
    console.log(`✔ ${name} (${Date.now() - t0} ms)`)
  } catch (e) {
    failed = true
    results.push({ name, status: 'failed' })
    console.log(`✖ ${name} (${Date.now() - t0} ms)\n  ${e.stack ?? e}`)
    for (const [r, at] of pending) console.log(`  pending for ${Date.now() - at} ms: ${r.method()} ${r.url()}`)
    for (const r of refusals) console.log(`  answered ${r}`)
    await shot(`failed-${name.replace(/\W+/g, '-')}`).catch(() => undefined)
  }
}

let page
async function shot(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

const profile = mkdtempSync(join(tmpdir(), 'stasis-dashboard-chromium-'))
const pageErrors = []
const pending = new Map()
const refusals = []
let context
let sb
let forked

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: env('DASHBOARD_CHROMIUM'),
    headless: true,
    args: FLAGS,
    viewport: { width: 1366, height: 900 },
    acceptDownloads: true,
    timeout: 60_000,
  })
  context.setDefaultTimeout(30_000)
  page = context.pages()[0] ?? (await context.newPage())
  page.on('pageerror', (e) => pageErrors.push(e.message))
  // Requests the page has sent and not seen answered, for the report of a failed step.
  page.on('request', (r) => pending.set(r, Date.now()))
  page.on('requestfinished', (r) => pending.delete(r))
  page.on('requestfailed', (r) => pending.delete(r))
  // Error answers the page got, for the report of a failed step.
  page.on('response', (r) => {
    if (r.status() >= 400 && r.request().method() !== 'GET') {
      void r.text().then(
        (t) => refusals.push(`${r.status()} ${r.request().method()} ${r.url()}: ${t.slice(0, 2000)}`),
        () => refusals.push(`${r.status()} ${r.request().method()} ${r.url()}`),
      )
    }
  })
  page.on('dialog', (d) => void d.accept())
  // Every text the live-updates status shows, to check the stream never broke.
  await page.addInitScript(() => {
    window.__liveStatuses = []
    document.addEventListener('DOMContentLoaded', () => {
      const el = document.getElementById('live')
      if (!el) return // not the dashboard (about:blank)
      new MutationObserver(() => window.__liveStatuses.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true })
    })
  })

  await step('the sign-in page refuses a wrong key and accepts the right one', async () => {
    await page.goto(`${URL_}/dashboard`)
    const key = page.getByLabel('API key')
    await key.fill('e2b_wrong')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByText('The server refused this key').waitFor()
    await key.fill(KEY)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('heading', { name: 'Sandboxes' }).waitFor()
    await page.locator('[data-version]', { hasText: /^\d+\.\d+\.\d+/ }).waitFor()
    const stored = await page.evaluate(() => sessionStorage.getItem('stasis.apiKey'))
    check(stored === KEY, 'the key is kept in sessionStorage')
    check(!page.url().includes(KEY), 'the key is not in the URL')
    await page.getByText('Live updates on').waitFor()
  })

  await step('a sandbox created through the API appears in the open page without a reload', async () => {
    const navigations = []
    page.on('framenavigated', (f) => f === page.mainFrame() && navigations.push(f.url()))
    sb = await createSandbox()
    const row = page.locator(`tr[data-sandbox="${sb.sandboxID}"]`)
    await row.waitFor({ timeout: 30_000 })
    check((await row.getAttribute('data-state')) === 'running', 'its state is running')
    check(navigations.length === 0, `the page did not reload (${navigations})`)
    await page.locator('[data-count="running"]', { hasText: /^[1-9]/ }).waitFor()
    await shot('01-sandboxes')
  })

  await step('the metadata filter keeps what matches and hides the rest', async () => {
    const row = page.locator(`tr[data-sandbox="${sb.sandboxID}"]`)
    await page.getByLabel('Metadata').fill(`run=${RUN}`)
    await page.getByRole('button', { name: 'Apply' }).click()
    await page.getByText('Page 1: 1 sandbox.').waitFor()
    await row.waitFor()
    await page.getByLabel('Metadata').fill('run=someone-else')
    await page.getByRole('button', { name: 'Apply' }).click()
    await page.getByText('No sandboxes match.').waitFor()
    await page.getByLabel('Metadata').fill('')
    await page.getByRole('button', { name: 'Apply' }).click()
    await row.waitFor()
  })

  await step('the sandbox page shows its info and samples its metrics into a chart', async () => {
    await page.getByRole('link', { name: sb.sandboxID }).click()
    await page.getByRole('heading', { name: `Sandbox ${sb.sandboxID}` }).waitFor()
    const info = page.getByLabel('Sandbox info')
    await info.getByText('running').waitFor()
    await info.getByText('base').waitFor()
    await page.getByText(/^[2-9] samples|^\d{2,} samples/).waitFor({ timeout: 20_000 })
    check(await page.locator('.chart canvas').count() > 0, 'the chart is drawn')
    await page.getByRole('table', { name: 'Lifecycle events' }).getByText('created').waitFor()
  })

  let terminalOpened
  await step('the terminal runs a command and shows its output', async () => {
    await page.getByRole('button', { name: 'Open terminal' }).click()
    terminalOpened = Date.now()
    const rows = page.locator('.terminal .xterm-rows')
    await rows.waitFor()
    await until('a shell prompt', async () => /[$#]\s*$/m.test(await rows.innerText()), 20_000)
    await page.keyboard.type('echo dash-$((6*7)) && uname -s')
    await page.keyboard.press('Enter')
    await until('the output dash-42, then Linux (uname ran in the sandbox)', async () => {
      const text = await rows.innerText()
      return text.includes('dash-42') && text.includes('Linux')
    }, 20_000)
    // The keyboard way out of the terminal: Ctrl+] focuses its Close button.
    await page.keyboard.press('Control+BracketRight')
    await until('the focus on Close terminal', () =>
      page.evaluate(() => document.activeElement?.textContent === 'Close terminal'),
    )
    await shot('02-terminal')
    // What one screen of the page looks like (the picture in the docs).
    await page.screenshot({ path: join(ARTIFACTS, 'sandbox-page.png') })
  })

  const upload = { name: `up-${RUN}.txt`, content: `uploaded from the dashboard ${randomBytes(12).toString('hex')}\n` }
  await step('a file uploaded from the page lands in the sandbox and downloads intact', async () => {
    const local = join(profile, upload.name)
    writeFileSync(local, upload.content)
    await page.getByLabel('Upload to this directory').setInputFiles(local)
    const row = page.locator(`tr[data-file="${upload.name}"]`)
    await row.waitFor()
    // In the sandbox: read through the agent directly.
    const direct = await fetch(`${URL_}/files?path=${encodeURIComponent(`/home/user/${upload.name}`)}&username=user`, {
      headers: { 'E2b-Sandbox-Id': sb.sandboxID, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': sb.envdAccessToken },
      signal: AbortSignal.timeout(30_000),
    })
    check(direct.status === 200, `GET /files: ${direct.status}`)
    check((await direct.text()) === upload.content, 'the sandbox holds what was uploaded')
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: `Download ${upload.name}` }).click(),
    ])
    check(download.suggestedFilename() === upload.name, `downloaded as ${download.suggestedFilename()}`)
    const saved = join(profile, `down-${upload.name}`)
    await download.saveAs(saved)
    check(readFileSync(saved, 'utf8') === upload.content, 'the download is what was uploaded')
    await shot('03-files')
  })

  await step('set timeout moves the end of the sandbox', async () => {
    await page.getByLabel('Timeout (s)').fill('1800')
    await page.getByRole('button', { name: 'Set timeout' }).click()
    await page.getByText(`Timeout of ${sb.sandboxID} set to 1800 s`).waitFor()
    const r = await api('GET', `/sandboxes/${sb.sandboxID}`)
    const left = (Date.parse(r.body.endAt) - Date.now()) / 1000
    check(left > 1700 && left <= 1800, `endAt is ${left} s away`)
  })

  await step('fork from the page makes a second running sandbox', async () => {
    await page.getByRole('button', { name: 'Fork' }).click()
    const toast = page.locator('.toast.ok, .toast.error').filter({ hasText: /Forked|forking/ })
    const text = await toast.innerText({ timeout: 90_000 })
    check(!text.includes('forking'), `the fork failed: ${text}`)
    forked = /into (\S+)/.exec(text)?.[1]
    check(forked, `the toast names the fork: ${text}`)
    created.add(forked)
    const r = await api('GET', `/sandboxes/${forked}`)
    check(r.status === 200 && r.body.state === 'running', `the fork is running: ${JSON.stringify(r.body)}`)
  })

  await step('the terminal and the live stream outlast their 30 s deadlines', async () => {
    // Deadlines bound the start of a stream, not its life: 35 s after the terminal
    // opened (and past the server's 30 s stream lifetime), both still work.
    const rows = page.locator('.terminal .xterm-rows')
    await until('35 s since the terminal opened', async () => Date.now() - terminalOpened > 35_000, 60_000)
    await page.getByLabel(`Terminal of sandbox ${sb.sandboxID}`).focus()
    await page.keyboard.type('echo still-$((40+2))')
    await page.keyboard.press('Enter')
    await until('the output still-42', async () => (await rows.innerText()).includes('still-42'), 20_000)
    const statuses = await page.evaluate(() => window.__liveStatuses)
    check(!statuses.some((s) => s.includes('reconnecting')), `the event stream broke: ${JSON.stringify(statuses)}`)
  })

  await step('leaving the page ends the terminal\'s shell in the sandbox', async () => {
    // A client that goes away never kills a process in the agent: the page must.
    const shells = async () => {
      const resp = await fetch(`${URL_}/process.Process/List`, {
        method: 'POST',
        headers: {
          'E2b-Sandbox-Id': sb.sandboxID,
          'E2b-Sandbox-Port': '49983',
          'X-Access-Token': sb.envdAccessToken,
          'Content-Type': 'application/json',
        },
        body: '{}',
        signal: AbortSignal.timeout(30_000),
      })
      check(resp.status === 200, `List: ${resp.status}`)
      return ((await resp.json()).processes ?? []).filter((p) => p.tag === 'dashboard-terminal').length
    }
    check((await shells()) === 1, 'the open terminal has one shell')
    await page.goto('about:blank')
    await until('no dashboard shell left', async () => (await shells()) === 0, 15_000)
    await page.goto(`${URL_}/dashboard/#/sandbox/${sb.sandboxID}`)
    await page.getByLabel('Sandbox info').locator('.badge.running').waitFor()
  })

  await step('pause from the page: the sandbox is paused and the page says so', async () => {
    await page.getByRole('button', { name: 'Pause', exact: true }).click()
    const info = page.getByLabel('Sandbox info')
    await info.locator('.badge.paused').waitFor({ timeout: 90_000 })
    const r = await api('GET', `/sandboxes/${sb.sandboxID}`)
    check(r.body.state === 'paused', `the API says ${r.body.state}`)
    await page.getByRole('table', { name: 'Lifecycle events' }).getByText('paused', { exact: true }).waitFor()
    await page.getByRole('link', { name: '← Sandboxes' }).click()
    await page.locator(`tr[data-sandbox="${sb.sandboxID}"][data-state="paused"]`).waitFor()
    await page.locator('[data-count="paused"]', { hasText: /^[1-9]/ }).waitFor()
    await shot('04-paused')
  })

  await step('a pause by another client shows up live in the table', async () => {
    const r = await api('POST', `/sandboxes/${forked}/pause`)
    check(r.status === 204, `pause: ${r.status}`)
    await page.locator(`tr[data-sandbox="${forked}"][data-state="paused"]`).waitFor({ timeout: 30_000 })
  })

  await step('resume from the table: running again, with the uploaded file', async () => {
    await page.getByRole('button', { name: `Resume ${sb.sandboxID}` }).click()
    await page.locator(`tr[data-sandbox="${sb.sandboxID}"][data-state="running"]`).waitFor({ timeout: 90_000 })
    await page.getByRole('link', { name: sb.sandboxID }).click()
    await page.getByLabel('Sandbox info').locator('.badge.running').waitFor()
    await page.locator(`tr[data-file="${upload.name}"]`).waitFor()
  })

  await step('the table pages through the list with the API\'s next token', async () => {
    // 10 more: with the sandbox and its fork, 12 sandboxes of this run on 2 pages of 10.
    const more = await Promise.all(Array.from({ length: 10 }, () => createSandbox()))
    await page.getByRole('link', { name: '← Sandboxes' }).click()
    await page.getByLabel('Metadata').fill(`run=${RUN}`)
    await page.getByLabel('Per page').selectOption('10')
    await page.getByText('Page 1: 10 sandboxes, more on the next page.').waitFor()
    const rows = page.locator('tr[data-sandbox]')
    const first = new Set(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.sandbox)))
    await page.getByRole('button', { name: 'Next page' }).click()
    await page.getByText('Page 2: 2 sandboxes.').waitFor()
    const second = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.sandbox))
    check(second.every((id) => !first.has(id)), 'page 2 repeats nothing of page 1')
    const all = new Set([...first, ...second])
    for (const id of [sb.sandboxID, forked, ...more.map((m) => m.sandboxID)]) check(all.has(id), `${id} is listed`)
    check(await page.getByRole('button', { name: 'Next page' }).isDisabled(), 'no page 3')
    await page.getByRole('button', { name: 'First page' }).click()
    await page.getByText('Page 1: 10 sandboxes, more on the next page.').waitFor()
    await Promise.all(more.map((m) => api('DELETE', `/sandboxes/${m.sandboxID}`).then(() => created.delete(m.sandboxID))))
    await page.getByLabel('Metadata').fill('')
    await page.getByLabel('Per page').selectOption('20')
    await page.getByRole('link', { name: sb.sandboxID }).click()
    await page.getByLabel('Sandbox info').locator('.badge.running').waitFor()
  })

  await step('kill from the page: the sandbox is gone', async () => {
    await page.getByRole('button', { name: 'Kill' }).click()
    await page.getByRole('heading', { name: 'Sandboxes' }).waitFor()
    await until('a 404 for the killed sandbox', async () => (await api('GET', `/sandboxes/${sb.sandboxID}`)).status === 404)
    created.delete(sb.sandboxID)
    await until('the row gone', async () => (await page.locator(`tr[data-sandbox="${sb.sandboxID}"]`).count()) === 0)
  })

  await step('templates lists the built templates', async () => {
    await page.getByRole('link', { name: 'Templates' }).click()
    await page.locator('tr[data-template="base"]').waitFor()
    await shot('05-templates')
  })

  await step('the page raised no script errors', async () => {
    check(pageErrors.length === 0, `page errors: ${pageErrors.join('; ')}`)
  })
} catch (e) {
  failed = true
  results.push({ name: 'browser', status: 'failed' })
  console.log(`✖ ${e.stack ?? e}`)
} finally {
  for (const id of created) await api('DELETE', `/sandboxes/${id}`, undefined, 60_000).catch(() => undefined)
  await context?.close().catch(() => undefined)
  rmSync(profile, { recursive: true, force: true })
}

const n = (s) => results.filter((r) => r.status === s).length
console.log(`${n('passed')} passed, ${n('failed')} failed${n('skipped') ? `, ${n('skipped')} skipped` : ''}`)
process.exit(n('failed') || n('skipped') ? 1 : 0)
