// The Stasis dashboard: sign in with the API key, then sandboxes (live), one sandbox
// (info, lifecycle, metrics, events, actions, terminal, files) and templates.

import './style.css'
import * as api from './api'
import { Live } from './live'
import { ago, bytes, clear, h, time } from './dom'
import { MetricsChart } from './chart'
import { Shell } from './terminal'

const main = document.getElementById('main') as HTMLElement
const nav = document.getElementById('nav') as HTMLElement
const signout = document.getElementById('signout') as HTMLButtonElement
const liveStatus = document.getElementById('live') as HTMLElement
const toastEl = document.getElementById('toast') as HTMLElement

/** What the current view does on a live event, and how it cleans up. */
interface View {
  onEvent?(e: api.LifecycleEvent): void
  close?(): void
}

let view: View = {}
let live: Live | null = null
/** Whether the server accepted the stored key (a refusal before that is the sign-in's). */
let accepted = false
let version = ''
const failures: api.LifecycleEvent[] = []
/** Events that report something going wrong: `*_failed` kinds and sandboxes lost at a restart. */
const FAILURE = /(_failed|\.lost)$/

let toastTimer = 0
function toast(text: string, kind: 'error' | 'ok' = 'error'): void {
  toastEl.textContent = text
  toastEl.className = `toast ${kind}`
  toastEl.hidden = false
  clearTimeout(toastTimer)
  toastTimer = window.setTimeout(() => (toastEl.hidden = true), kind === 'error' ? 12_000 : 5_000)
}

function signOut(message?: string): void {
  accepted = false
  api.setApiKey(null)
  live?.close()
  live = null
  failures.length = 0
  if (message) toast(message)
  location.hash = '#/'
  route()
}
api.setOnUnauthorized(() => {
  if (accepted) signOut('The server refused the API key: sign in again.')
})
signout.addEventListener('click', () => signOut())

function startLive(): void {
  live?.close()
  live = new Live({
    status: (t) => (liveStatus.textContent = t),
    caughtUp: () => view.onEvent?.({ id: '0', type: 'caught-up', sandboxId: '', timestamp: '', eventData: null }),
    event: (e, replay) => {
      if (FAILURE.test(e.type)) {
        failures.unshift(e)
        failures.length = Math.min(failures.length, 10)
      }
      if (!replay) view.onEvent?.(e)
    },
  })
  live.start()
}

// ------------------------------------------------------------------ sign in

function signInView(): View {
  const input = h('input', { id: 'key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false', 'aria-describedby': 'key-help' })
  const error = h('p', { class: 'error', role: 'alert' })
  const form = h(
    'form',
    { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('label', { for: 'key' }, 'API key'),
    input,
    h('p', { id: 'key-help', class: 'help' }, 'The server prints it with ', h('code', {}, 'stasis api-key'), '. It is kept in this tab only.'),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    error,
  )
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault()
    error.textContent = ''
    api.setApiKey(input.value.trim())
    try {
      version = (await api.serverInfo()).version
      accepted = true
      route()
    } catch (e) {
      api.setApiKey(null)
      error.textContent =
        e instanceof api.ApiError && e.status === 401 ? 'The server refused this key. Check it with `stasis api-key`.' : api.describe(e)
    }
  })
  clear(main, form)
  input.focus()
  return {}
}

// ------------------------------------------------------------------ sandboxes

function stateBadge(state: string): HTMLElement {
  return h('span', { class: `badge ${state}` }, state)
}

function metadataText(m: Record<string, string> | undefined): string {
  return Object.entries(m ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ')
}

function parseMetadata(text: string): [string, string][] {
  return text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => {
      const i = p.indexOf('=')
      if (i <= 0) throw new Error(`metadata filter "${p}" is not key=value`)
      return [p.slice(0, i).trim(), p.slice(i + 1).trim()] as [string, string]
    })
}

async function act(button: HTMLButtonElement | null, what: () => Promise<void>): Promise<void> {
  if (button) button.disabled = true
  try {
    await what()
  } catch (e) {
    toast(api.describe(e))
  } finally {
    if (button) button.disabled = false
  }
}

function actionButtons(s: { sandboxID: string; state: string }, after: () => void): HTMLElement {
  const id = s.sandboxID
  const buttons: HTMLButtonElement[] = []
  if (s.state === 'running') {
    const b: HTMLButtonElement = h('button', {
      type: 'button',
      'aria-label': `Pause ${id}`,
      onclick: () => act(b, async () => (await api.pause(id), toast(`Paused ${id}`, 'ok'), after())),
    }, 'Pause')
    buttons.push(b)
  } else {
    const b: HTMLButtonElement = h('button', {
      type: 'button',
      'aria-label': `Resume ${id}`,
      onclick: () => act(b, async () => (await api.resume(id, 300), toast(`Resumed ${id}`, 'ok'), after())),
    }, 'Resume')
    buttons.push(b)
  }
  const k: HTMLButtonElement = h('button', {
    type: 'button',
    class: 'danger',
    'aria-label': `Kill ${id}`,
    onclick: () => {
      if (!confirm(`Kill sandbox ${id}? Its files and memory are gone for good.`)) return
      void act(k, async () => (await api.kill(id), toast(`Killed ${id}`, 'ok'), after()))
    },
  }, 'Kill')
  buttons.push(k)
  return h('div', { class: 'actions' }, buttons)
}

function sandboxesView(): View {
  const running = h('input', { type: 'checkbox', id: 'f-running', checked: true })
  const paused = h('input', { type: 'checkbox', id: 'f-paused', checked: true })
  const meta = h('input', { type: 'text', id: 'f-meta', placeholder: 'key=value, …', 'aria-describedby': 'f-meta-help' })
  const perPage = h('select', { id: 'f-per' }, [10, 20, 50, 100].map((n) => h('option', { value: n, selected: n === 20 }, n)))
  const counts = h('dl', { class: 'counts', 'aria-label': 'Sandboxes by state' })
  const failuresList = h('ul', { class: 'failures', 'aria-label': 'Recent failures' })
  const tbody = h('tbody')
  const status = h('p', { class: 'help', role: 'status', 'aria-live': 'polite' })
  const prev = h('button', { type: 'button' }, 'First page')
  const next = h('button', { type: 'button' }, 'Next page')
  let tokens: (string | null)[] = [null]
  let closed = false

  const filters = (): api.ListQuery => {
    const states: api.State[] = []
    if (running.checked) states.push('running')
    if (paused.checked) states.push('paused')
    return { states, metadata: parseMetadata(meta.value), limit: Number(perPage.value), nextToken: tokens[tokens.length - 1] }
  }

  async function loadCounts(): Promise<void> {
    const [r, p] = await Promise.all([api.count('running'), api.count('paused')])
    const fmt = (c: { n: number; more: boolean }) => `${c.n}${c.more ? '+' : ''}`
    clear(counts, h('dt', {}, 'Running'), h('dd', { 'data-count': 'running' }, fmt(r)), h('dt', {}, 'Paused'), h('dd', { 'data-count': 'paused' }, fmt(p)))
    clear(
      failuresList,
      failures.length
        ? failures.map((f) =>
            h('li', {}, time(f.timestamp), ' ', h('a', { href: `#/sandbox/${encodeURIComponent(f.sandboxId)}` }, f.sandboxId), ' ', f.type.replace('sandbox.lifecycle.', ''), ' ', h('span', { class: 'detail' }, JSON.stringify(f.eventData))),
          )
        : h('li', { class: 'help' }, 'No failures in the event log.'),
    )
  }

  async function load(): Promise<void> {
    let q: api.ListQuery
    try {
      q = filters()
    } catch (e) {
      status.textContent = api.describe(e)
      return
    }
    if (!q.states.length) {
      clear(tbody, h('tr', {}, h('td', { colspan: 7 }, 'Choose at least one state.')))
      return
    }
    const page = await api.list(q)
    if (closed) return
    clear(
      tbody,
      page.items.length
        ? page.items.map((s) =>
            h(
              'tr',
              { 'data-sandbox': s.sandboxID, 'data-state': s.state },
              h('td', {}, h('a', { href: `#/sandbox/${encodeURIComponent(s.sandboxID)}` }, s.sandboxID)),
              h('td', {}, s.alias ?? s.templateID),
              h('td', {}, stateBadge(s.state)),
              h('td', {}, time(s.startedAt)),
              h('td', {}, s.state === 'running' ? time(s.endAt) : '—'),
              h('td', { class: 'meta' }, metadataText(s.metadata)),
              h('td', {}, actionButtons(s, () => void refresh())),
            ),
          )
        : h('tr', {}, h('td', { colspan: 7 }, 'No sandboxes match.')),
    )
    next.disabled = !page.nextToken
    prev.disabled = tokens.length === 1
    next.onclick = () => {
      tokens.push(page.nextToken)
      void refresh()
    }
    status.textContent = `Page ${tokens.length}: ${page.items.length} sandbox${page.items.length === 1 ? '' : 'es'}${page.nextToken ? ', more on the next page' : ''}.`
  }

  async function refresh(): Promise<void> {
    try {
      await Promise.all([load(), loadCounts()])
    } catch (e) {
      toast(api.describe(e))
    }
  }
  prev.onclick = () => {
    tokens = [null]
    void refresh()
  }

  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Filter sandboxes' },
    h('fieldset', {}, h('legend', {}, 'State'), h('label', {}, running, ' running'), h('label', {}, paused, ' paused')),
    h('div', {}, h('label', { for: 'f-meta' }, 'Metadata'), meta, h('p', { id: 'f-meta-help', class: 'help' }, 'Pairs that must all match, e.g. owner=alice.')),
    h('div', {}, h('label', { for: 'f-per' }, 'Per page'), perPage),
    h('button', { type: 'submit' }, 'Apply'),
  )
  form.addEventListener('submit', (ev) => {
    ev.preventDefault()
    tokens = [null]
    void refresh()
  })
  running.addEventListener('change', () => form.requestSubmit())
  paused.addEventListener('change', () => form.requestSubmit())
  perPage.addEventListener('change', () => form.requestSubmit())

  clear(
    main,
    h('h1', {}, 'Sandboxes'),
    h(
      'section',
      { class: 'server card', 'aria-labelledby': 'server-title' },
      h('h2', { id: 'server-title' }, 'Server'),
      h('p', {}, 'Stasis ', h('span', { 'data-version': '' }, version || '…')),
      counts,
      h('h3', {}, 'Recent failures'),
      failuresList,
    ),
    form,
    h(
      'table',
      { class: 'sandboxes', 'aria-label': 'Sandboxes' },
      h('thead', {}, h('tr', {}, ['Sandbox', 'Template', 'State', 'Started', 'Ends', 'Metadata', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
      tbody,
    ),
    h('div', { class: 'pager' }, prev, next, status),
  )
  void refresh()
  let pending = 0
  return {
    // Live events: reload the page of the table (and the counts) once they settle.
    onEvent: () => {
      clearTimeout(pending)
      pending = window.setTimeout(() => void refresh(), 150)
    },
    close: () => {
      closed = true
      clearTimeout(pending)
    },
  }
}

// ------------------------------------------------------------------ one sandbox

function sandboxView(id: string): View {
  let detail: api.Detail | null = null
  let closed = false
  let shell: Shell | null = null
  let sampler = 0
  const infoList = h('dl', { class: 'info', 'aria-label': 'Sandbox info' })
  const actions = h('div', { class: 'actions' })
  const eventsBody = h('tbody')
  const chartHost = h('div', { class: 'chart', role: 'img', 'aria-label': `CPU and memory of ${id} over time` })
  const chartStatus = h('p', { class: 'help', role: 'status' })
  const termHost = h('div', { class: 'terminal', hidden: true })
  const termStatus = h('p', { class: 'help', role: 'status', 'aria-live': 'polite' })
  const termButton = h('button', { type: 'button', class: 'primary' }, 'Open terminal')
  const timeoutInput = h('input', { id: 'timeout', type: 'number', min: 1, max: 86400, value: 300, required: true })
  const filesPath = h('input', { id: 'files-path', type: 'text', value: '/home/user', 'aria-label': 'Directory' })
  const filesBody = h('tbody')
  const filesStatus = h('p', { class: 'help', role: 'status', 'aria-live': 'polite' })
  const uploadInput = h('input', { id: 'upload', type: 'file' })
  const chart = { current: null as MetricsChart | null }

  const running = () => detail?.state === 'running'

  function renderInfo(d: api.Detail): void {
    const row = (k: string, v: Node | string) => [h('dt', {}, k), h('dd', {}, v)]
    clear(
      infoList,
      row('State', stateBadge(d.state)),
      row('Template', d.alias ? `${d.alias} (${d.templateID})` : d.templateID),
      row('Started', time(d.startedAt)),
      row(d.state === 'running' ? 'Ends' : 'Paused; timeout window', d.state === 'running' ? time(d.endAt) : 'counts again after resume'),
      row('On timeout', d.lifecycle ? `${d.lifecycle.onTimeout}${d.lifecycle.autoResume ? ', resumes on traffic' : ''}` : 'kill'),
      row('Resources', `${d.cpuCount} CPU, ${d.memoryMB} MiB memory, ${d.diskSizeMB} MiB disk`),
      row('Internet', d.allowInternetAccess === false ? 'no' : d.allowInternetAccess ? 'yes' : '—'),
      row('Metadata', metadataText(d.metadata) || '—'),
      row('Agent', `envd ${d.envdVersion}`),
    )
    const after = () => void reload()
    const setTimeoutButton: HTMLButtonElement = h('button', { type: 'button', onclick: () => act(setTimeoutButton, async () => (await api.setTimeout_(id, Number(timeoutInput.value)), toast(`Timeout of ${id} set to ${timeoutInput.value} s`, 'ok'), after())) }, 'Set timeout')
    const resumeButton: HTMLButtonElement = h('button', { type: 'button', class: 'primary', onclick: () => act(resumeButton, async () => (await api.resume(id, Number(timeoutInput.value)), toast(`Resumed ${id}`, 'ok'), after())) }, 'Resume')
    const pauseButton: HTMLButtonElement = h('button', { type: 'button', onclick: () => act(pauseButton, async () => (closeShell('the sandbox was paused'), await api.pause(id), toast(`Paused ${id}`, 'ok'), after())) }, 'Pause')
    const forkButton: HTMLButtonElement = h('button', {
      type: 'button',
      onclick: () =>
        act(forkButton, async () => {
          const made = await api.fork(id)
          toast(`Forked ${id} into ${made.map((m) => m.sandboxID).join(', ')}`, 'ok')
        }),
    }, 'Fork')
    const killButton: HTMLButtonElement = h('button', {
      type: 'button',
      class: 'danger',
      onclick: () => {
        if (!confirm(`Kill sandbox ${id}? Its files and memory are gone for good.`)) return
        void act(killButton, async () => {
          closeShell('the sandbox was killed')
          await api.kill(id)
          toast(`Killed ${id}`, 'ok')
          location.hash = '#/'
        })
      },
    }, 'Kill')
    clear(
      actions,
      h('label', { for: 'timeout' }, 'Timeout (s)'),
      timeoutInput,
      d.state === 'running' ? [pauseButton, setTimeoutButton, forkButton] : resumeButton,
      killButton,
    )
    termButton.disabled = d.state !== 'running'
    uploadInput.disabled = d.state !== 'running'
  }

  async function loadEvents(): Promise<void> {
    const evs = await api.events(id)
    clear(
      eventsBody,
      evs
        .slice()
        .reverse()
        .map((e) => h('tr', {}, h('td', {}, time(e.timestamp)), h('td', {}, e.type.replace('sandbox.lifecycle.', '')), h('td', { class: 'detail' }, JSON.stringify(e.eventData)))),
    )
  }

  async function reload(): Promise<void> {
    try {
      const d = await api.info(id)
      if (closed) return
      detail = d
      renderInfo(d)
      await loadEvents()
      if (running()) void listFiles()
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 404) {
        detail = null
        clear(infoList, h('dt', {}, 'State'), h('dd', {}, 'gone (killed)'))
        clear(actions)
        termButton.disabled = true
        await loadEvents().catch(() => undefined)
      } else toast(api.describe(e))
    }
  }

  async function sample(): Promise<void> {
    if (closed || !running()) return
    try {
      const ms = await api.metrics(id)
      if (!chart.current) chart.current = new MetricsChart(chartHost)
      for (const m of ms) chart.current.add(m)
      chartStatus.textContent = `${chart.current.samples} samples, every 2 s while this page is open.`
    } catch (e) {
      chartStatus.textContent = `Metrics: ${api.describe(e)}`
    }
  }

  function closeShell(why: string): void {
    if (!shell) return
    shell.close()
    shell = null
    termHost.hidden = true
    termButton.textContent = 'Open terminal'
    termStatus.textContent = `Terminal closed: ${why}.`
  }

  termButton.addEventListener('click', () => {
    if (shell) return closeShell('closed by you')
    if (!detail || !running()) return
    termHost.hidden = false
    termButton.textContent = 'Close terminal'
    termStatus.textContent = 'Terminal open (bash as user). Every key goes to the shell; Ctrl+] moves the focus back to the page.'
    const s = new Shell(
      termHost,
      id,
      detail.envdAccessToken,
      (why) => {
        if (shell === s) closeShell(why)
      },
      () => termButton.focus(),
    )
    shell = s
    void s.run()
    s.focus()
  })

  async function listFiles(): Promise<void> {
    if (!detail || !running()) return
    const path = filesPath.value.trim() || '/'
    try {
      const entries = await api.listDir(id, detail.envdAccessToken, path)
      entries.sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'FILE_TYPE_DIRECTORY' ? -1 : 1))
      const parent = path.replace(/\/[^/]+\/?$/, '') || '/'
      clear(
        filesBody,
        path !== '/' ? h('tr', {}, h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => ((filesPath.value = parent), void listFiles()) }, '..')), h('td', {}, 'directory'), h('td', {}), h('td', {})) : null,
        entries.map((e) => {
          const dir = e.type === 'FILE_TYPE_DIRECTORY'
          return h(
            'tr',
            { 'data-file': e.name },
            h('td', {}, dir ? h('button', { type: 'button', class: 'link', onclick: () => ((filesPath.value = e.path), void listFiles()) }, `${e.name}/`) : e.name),
            h('td', {}, dir ? 'directory' : e.type === 'FILE_TYPE_SYMLINK' ? 'symlink' : 'file'),
            h('td', {}, dir ? '' : bytes(Number(e.size ?? 0))),
            h('td', {}, dir ? '' : h('button', { type: 'button', 'aria-label': `Download ${e.name}`, onclick: () => void downloadFile(e.path, e.name) }, 'Download')),
          )
        }),
      )
      filesStatus.textContent = `${entries.length} entries in ${path}`
    } catch (e) {
      filesStatus.textContent = api.describe(e)
    }
  }

  async function downloadFile(path: string, name: string): Promise<void> {
    if (!detail) return
    try {
      const blob = await api.download(id, detail.envdAccessToken, path)
      const url = URL.createObjectURL(blob)
      const a = h('a', { href: url, download: name })
      document.body.appendChild(a)
      a.click()
      a.remove()
      setTimeout(() => URL.revokeObjectURL(url), 10_000)
      filesStatus.textContent = `Downloaded ${path} (${bytes(blob.size)})`
    } catch (e) {
      filesStatus.textContent = api.describe(e)
    }
  }

  uploadInput.addEventListener('change', async () => {
    const file = uploadInput.files?.[0]
    if (!file || !detail) return
    const dir = filesPath.value.trim().replace(/\/+$/, '') || ''
    const dest = `${dir}/${file.name}`
    try {
      await api.upload(id, detail.envdAccessToken, dest, file)
      filesStatus.textContent = `Uploaded ${dest} (${bytes(file.size)})`
      uploadInput.value = ''
      await listFiles()
      filesStatus.textContent = `Uploaded ${dest} (${bytes(file.size)})`
    } catch (e) {
      filesStatus.textContent = api.describe(e)
    }
  })

  const filesForm = h('form', { class: 'row', 'aria-label': 'Browse files' }, filesPath, h('button', { type: 'submit' }, 'List'), h('label', { for: 'upload' }, 'Upload to this directory'), uploadInput)
  filesForm.addEventListener('submit', (ev) => {
    ev.preventDefault()
    void listFiles()
  })

  clear(
    main,
    h('p', {}, h('a', { href: '#/' }, '← Sandboxes')),
    h('h1', {}, 'Sandbox ', h('code', {}, id)),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'info-title' }, h('h2', { id: 'info-title' }, 'Info and lifecycle'), infoList, actions),
      h('section', { class: 'card', 'aria-labelledby': 'metrics-title' }, h('h2', { id: 'metrics-title' }, 'Metrics'), chartHost, chartStatus),
    ),
    h('section', { class: 'card', 'aria-labelledby': 'term-title' }, h('h2', { id: 'term-title' }, 'Terminal'), termButton, termStatus, termHost),
    h('section', { class: 'card', 'aria-labelledby': 'files-title' }, h('h2', { id: 'files-title' }, 'Files'), filesForm,
      h('table', { class: 'files', 'aria-label': 'Files' }, h('thead', {}, h('tr', {}, ['Name', 'Type', 'Size', ''].map((c) => h('th', { scope: 'col' }, c)))), filesBody),
      filesStatus),
    h('section', { class: 'card', 'aria-labelledby': 'events-title' }, h('h2', { id: 'events-title' }, 'Lifecycle events'),
      h('table', { class: 'events', 'aria-label': 'Lifecycle events' }, h('thead', {}, h('tr', {}, ['When', 'Event', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))), eventsBody)),
  )
  void reload().then(sample)
  sampler = window.setInterval(() => void sample(), 2000)
  return {
    onEvent: (e) => {
      if (e.sandboxId === id) void reload()
    },
    close: () => {
      closed = true
      clearInterval(sampler)
      closeShell('left the page')
      chart.current?.destroy()
    },
  }
}

// ------------------------------------------------------------------ templates

function templatesView(): View {
  const tbody = h('tbody')
  clear(
    main,
    h('h1', {}, 'Templates'),
    h('table', { 'aria-label': 'Templates' }, h('thead', {}, h('tr', {}, ['Template', 'Aliases', 'CPU', 'Memory', 'Disk', 'Built'].map((c) => h('th', { scope: 'col' }, c)))), tbody),
  )
  api
    .templates()
    .then((ts) =>
      clear(
        tbody,
        ts.length
          ? ts.map((t) =>
              h('tr', { 'data-template': t.templateID }, h('td', {}, t.templateID), h('td', {}, (t.aliases ?? []).join(', ')), h('td', {}, t.cpuCount ?? '—'), h('td', {}, t.memoryMB ? `${t.memoryMB} MiB` : '—'), h('td', {}, t.diskSizeMB ? `${t.diskSizeMB} MiB` : '—'), h('td', {}, t.createdAt ? ago(t.createdAt) : (t.buildStatus ?? '—'))),
            )
          : h('tr', {}, h('td', { colspan: 6 }, 'No template is built. Build one with `stasis template build base`.')),
      ),
    )
    .catch((e) => toast(api.describe(e)))
  return {}
}

// ------------------------------------------------------------------ routing

function route(): void {
  view.close?.()
  view = {}
  const signedIn = api.apiKey() !== null
  nav.hidden = !signedIn
  signout.hidden = !signedIn
  if (!signedIn) {
    liveStatus.textContent = ''
    view = signInView()
    return
  }
  if (!live) startLive()
  if (!version) void api.serverInfo().then((i) => {
    accepted = true
    version = i.version
    document.querySelectorAll('[data-version]').forEach((el) => (el.textContent = version))
  }).catch((e) => {
    // A key kept from an earlier visit that the server no longer takes.
    if (e instanceof api.ApiError && e.status === 401) signOut('The server refused the API key: sign in again.')
  })
  const hash = location.hash || '#/'
  const m = /^#\/sandbox\/([^/]+)$/.exec(hash)
  for (const a of nav.querySelectorAll('a')) a.removeAttribute('aria-current')
  if (m) view = sandboxView(decodeURIComponent(m[1]))
  else if (hash === '#/templates') {
    nav.querySelector('a[href="#/templates"]')?.setAttribute('aria-current', 'page')
    view = templatesView()
  } else {
    nav.querySelector('a[href="#/"]')?.setAttribute('aria-current', 'page')
    view = sandboxesView()
  }
  main.focus({ preventScroll: true })
}

window.addEventListener('hashchange', route)
// Leaving the page closes the view: its terminal's shell is ended in the sandbox.
window.addEventListener('pagehide', () => {
  view.close?.()
  view = {}
})
// Back from the browser's page cache: build the view again.
window.addEventListener('pageshow', (e) => {
  if (e.persisted) route()
})
route()
