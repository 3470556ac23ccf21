// The server's E2B REST API and the agent's Connect protocol, as the SDKs speak them.
// Every request has a deadline; failures become ApiError with what failed and why.

const KEY_STORAGE = 'stasis.apiKey'
const TIMEOUT_MS = 30_000

export const AGENT_PORT = '49983'
/** The agent's default user; the SDKs name it explicitly too. */
export const USER = 'user'

export class ApiError extends Error {
  constructor(
    readonly what: string,
    readonly status: number,
    message: string,
  ) {
    super(`${what}: ${message}`)
  }
}

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE)
}
export function setApiKey(key: string | null): void {
  if (key === null) sessionStorage.removeItem(KEY_STORAGE)
  else sessionStorage.setItem(KEY_STORAGE, key)
}

/** Called when the server refuses the key (the page signs out). */
export let onUnauthorized: () => void = () => {}
export function setOnUnauthorized(f: () => void): void {
  onUnauthorized = f
}

/**
 * A signal for a stream: aborted with `outer`, or when the answer's headers take longer
 * than `ms`. Call `started()` once they are in; the body then has no deadline.
 */
export function startDeadline(outer: AbortSignal, ms = TIMEOUT_MS): { signal: AbortSignal; started(): void } {
  const ctl = new AbortController()
  const onAbort = () => ctl.abort(outer.reason)
  if (outer.aborted) onAbort()
  else outer.addEventListener('abort', onAbort, { once: true })
  const timer = setTimeout(() => ctl.abort(new DOMException('no answer in time', 'TimeoutError')), ms)
  return { signal: ctl.signal, started: () => clearTimeout(timer) }
}

function withDeadline(init: RequestInit, ms = TIMEOUT_MS): RequestInit {
  const deadline = AbortSignal.timeout(ms)
  const signal = init.signal ? AbortSignal.any([init.signal, deadline]) : deadline
  return { ...init, signal }
}

async function failure(what: string, resp: Response): Promise<ApiError> {
  let message = `${resp.status} ${resp.statusText}`
  try {
    const text = await resp.text()
    try {
      const body = JSON.parse(text)
      if (body && typeof body.message === 'string') message = `${resp.status}: ${body.message}`
    } catch {
      if (text.trim()) message = `${resp.status}: ${text.trim().slice(0, 300)}`
    }
  } catch {
    /* the body could not be read; the status says enough */
  }
  if (resp.status === 401) onUnauthorized()
  return new ApiError(what, resp.status, message)
}

/** A request to the control API with the key. */
export async function request(
  what: string,
  path: string,
  init: RequestInit = {},
  ms = TIMEOUT_MS,
): Promise<Response> {
  const key = apiKey()
  if (!key) throw new ApiError(what, 401, 'not signed in')
  const headers = new Headers(init.headers)
  headers.set('X-API-KEY', key)
  let resp: Response
  try {
    resp = await fetch(path, withDeadline({ ...init, headers }, ms))
  } catch (e) {
    throw new ApiError(what, 0, describe(e))
  }
  if (!resp.ok) throw await failure(what, resp)
  return resp
}

export function describe(e: unknown): string {
  if (e instanceof DOMException && e.name === 'TimeoutError') return 'no answer in time'
  if (e instanceof Error) return e.message
  return String(e)
}

async function json<T>(what: string, path: string, init: RequestInit = {}): Promise<T> {
  const resp = await request(what, path, init)
  return (await resp.json()) as T
}

function post(body: unknown): RequestInit {
  return {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  }
}

export type State = 'running' | 'paused'

export interface Listed {
  sandboxID: string
  templateID: string
  alias?: string
  clientID: string
  startedAt: string
  endAt: string
  cpuCount: number
  memoryMB: number
  diskSizeMB: number
  metadata?: Record<string, string>
  state: State
  envdVersion: string
}

export interface Detail extends Listed {
  envdAccessToken?: string
  allowInternetAccess?: boolean | null
  lifecycle?: { onTimeout: 'kill' | 'pause'; autoResume: boolean }
}

export interface Metric {
  timestamp: string
  timestampUnix: number
  cpuCount: number
  cpuUsedPct: number
  memUsed: number
  memTotal: number
  diskUsed: number
  diskTotal: number
}

export interface LifecycleEvent {
  id: string
  type: string
  sandboxId: string
  timestamp: string
  eventData: unknown
}

export interface Template {
  templateID: string
  aliases?: string[]
  cpuCount?: number
  memoryMB?: number
  diskSizeMB?: number
  public?: boolean
  buildStatus?: string
  createdAt?: string
  [k: string]: unknown
}

export interface Page {
  items: Listed[]
  nextToken: string | null
  totalRunning: number | null
}

export interface ListQuery {
  states: State[]
  metadata: [string, string][]
  limit: number
  nextToken?: string | null
}

/** `metadata=`: pairs percent-encoded twice, joined as a form, encoded once more by the query. */
export function metadataParam(pairs: [string, string][]): string {
  const enc = (s: string) => encodeURIComponent(encodeURIComponent(s))
  return pairs.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&')
}

export async function list(q: ListQuery): Promise<Page> {
  const p = new URLSearchParams()
  p.set('state', q.states.join(','))
  if (q.metadata.length) p.set('metadata', metadataParam(q.metadata))
  p.set('limit', String(q.limit))
  if (q.nextToken) p.set('nextToken', q.nextToken)
  const resp = await request('listing sandboxes', `/v2/sandboxes?${p}`)
  const running = resp.headers.get('x-total-running')
  return {
    items: (await resp.json()) as Listed[],
    nextToken: resp.headers.get('x-next-token'),
    totalRunning: running === null ? null : Number(running),
  }
}

/** Sandboxes in `state`, counted page by page up to `cap`. */
export async function count(state: State, cap = 1000): Promise<{ n: number; more: boolean }> {
  let n = 0
  let token: string | null = null
  do {
    const page: Page = await list({ states: [state], metadata: [], limit: 100, nextToken: token })
    n += page.items.length
    token = page.nextToken
  } while (token && n < cap)
  return { n, more: token !== null }
}

const sb = (id: string) => `/sandboxes/${encodeURIComponent(id)}`

export const info = (id: string) => json<Detail>(`reading sandbox ${id}`, sb(id))
export const metrics = (id: string) => json<Metric[]>(`reading the metrics of ${id}`, `${sb(id)}/metrics`)
export const events = (id: string) =>
  json<LifecycleEvent[]>(`reading the events of ${id}`, `/events/sandboxes/${encodeURIComponent(id)}`)
export const templates = () => json<Template[]>('listing templates', '/templates')
export const serverInfo = () => json<{ version: string }>('reading the server info', '/dashboard/api/info')

export async function pause(id: string): Promise<void> {
  await request(`pausing ${id}`, `${sb(id)}/pause`, { method: 'POST' }, 120_000)
}
export async function resume(id: string, timeout: number): Promise<Detail> {
  const resp = await request(`resuming ${id}`, `${sb(id)}/connect`, post({ timeout }), 120_000)
  return (await resp.json()) as Detail
}
export async function kill(id: string): Promise<void> {
  await request(`killing ${id}`, sb(id), { method: 'DELETE' }, 60_000)
}
export function fork(id: string): Promise<Detail[]> {
  return holdAgentsDuring(
    (async () => {
      await agentHold
      const resp = await request(`forking ${id}`, `${sb(id)}/fork`, post({ count: 1 }), 120_000)
      return (await resp.json()) as Detail[]
    })(),
  )
}
export async function setTimeout_(id: string, timeout: number): Promise<void> {
  await request(`setting the timeout of ${id}`, `${sb(id)}/timeout`, post({ timeout }))
}

// ------------------------------------------------------------------ the agent

/**
 * The page's own requests to agents wait while this settles. A fork checkpoints the
 * running sandbox, and CRIU refuses to dump a listener with a connection still in its
 * accept queue (it answers 500 "In-flight connection"): the page does not race its own
 * fork with a file listing or a keystroke.
 */
let agentHold: Promise<unknown> = Promise.resolve()
export function holdAgentsDuring<T>(p: Promise<T>): Promise<T> {
  agentHold = p.catch(() => undefined)
  return p
}

/** Headers that route a request through the server's proxy to a sandbox's agent. */
export function agentHeaders(id: string, token: string | undefined): Headers {
  const h = new Headers()
  h.set('E2b-Sandbox-Id', id)
  h.set('E2b-Sandbox-Port', AGENT_PORT)
  if (token) h.set('X-Access-Token', token)
  h.set('Authorization', `Basic ${btoa(`${USER}:`)}`)
  return h
}

async function agent(what: string, path: string, h: Headers, init: RequestInit, ms = TIMEOUT_MS) {
  await agentHold
  let resp: Response
  try {
    resp = await fetch(path, withDeadline({ ...init, headers: h }, ms))
  } catch (e) {
    throw new ApiError(what, 0, describe(e))
  }
  if (!resp.ok) throw await failure(what, resp)
  return resp
}

/**
 * A unary Connect call (JSON codec). `keepalive` lets the request outlive the page (for
 * what must happen when the page goes away).
 */
export async function unary<T>(
  what: string,
  id: string,
  token: string | undefined,
  method: string,
  msg: unknown,
  keepalive = false,
): Promise<T> {
  const h = agentHeaders(id, token)
  h.set('Content-Type', 'application/json')
  h.set('Connect-Protocol-Version', '1')
  const resp = await agent(what, `/${method}`, h, { method: 'POST', body: JSON.stringify(msg), keepalive })
  return (await resp.json()) as T
}

/** A Connect envelope: flags, big-endian length, JSON. */
export function envelope(msg: unknown): Uint8Array {
  const payload = new TextEncoder().encode(JSON.stringify(msg))
  const out = new Uint8Array(5 + payload.length)
  new DataView(out.buffer).setUint32(1, payload.length)
  out.set(payload, 5)
  return out
}

/** Splits a Connect stream into messages; the end message (flag 2) carries an error, if any. */
export class EnvelopeReader {
  private buf = new Uint8Array(0)
  push(chunk: Uint8Array): { end: boolean; msg: any }[] {
    const joined = new Uint8Array(this.buf.length + chunk.length)
    joined.set(this.buf)
    joined.set(chunk, this.buf.length)
    this.buf = joined
    const out: { end: boolean; msg: any }[] = []
    while (this.buf.length >= 5) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(1)
      if (this.buf.length < 5 + len) break
      const flags = this.buf[0]
      const text = new TextDecoder().decode(this.buf.subarray(5, 5 + len))
      this.buf = this.buf.slice(5 + len)
      out.push({ end: (flags & 2) !== 0, msg: text ? JSON.parse(text) : {} })
    }
    return out
  }
}

/** A server-streaming Connect call; yields each message until the end. */
export async function* streaming(
  what: string,
  id: string,
  token: string | undefined,
  method: string,
  msg: unknown,
  signal: AbortSignal,
): AsyncGenerator<any> {
  const h = agentHeaders(id, token)
  h.set('Content-Type', 'application/connect+json')
  h.set('Connect-Protocol-Version', '1')
  h.set('Keepalive-Ping-Interval', '30')
  await agentHold
  let resp: Response
  // Only the start has a deadline: the stream lives as long as its process.
  const stop = startDeadline(signal)
  try {
    resp = await fetch(`/${method}`, { method: 'POST', headers: h, body: envelope(msg) as BodyInit, signal: stop.signal })
  } catch (e) {
    throw new ApiError(what, 0, describe(e))
  } finally {
    stop.started()
  }
  if (!resp.ok || !resp.body) throw await failure(what, resp)
  const reader = resp.body.getReader()
  const env = new EnvelopeReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    for (const m of env.push(value)) {
      if (m.end) {
        if (m.msg?.error) throw new ApiError(what, 0, m.msg.error.message ?? JSON.stringify(m.msg.error))
        return
      }
      yield m.msg
    }
  }
}

export interface Entry {
  name: string
  type: string
  path: string
  size?: string | number
  permissions?: string
  modifiedTime?: string
}

export async function listDir(id: string, token: string | undefined, path: string): Promise<Entry[]> {
  const r = await unary<{ entries?: Entry[] }>(`listing ${path}`, id, token, 'filesystem.Filesystem/ListDir', {
    path,
    depth: 1,
  })
  return r.entries ?? []
}

export async function download(id: string, token: string | undefined, path: string): Promise<Blob> {
  const q = new URLSearchParams({ path, username: USER })
  const resp = await agent(`downloading ${path}`, `/files?${q}`, agentHeaders(id, token), {}, 120_000)
  return await resp.blob()
}

export async function upload(id: string, token: string | undefined, path: string, file: Blob): Promise<void> {
  const q = new URLSearchParams({ path, username: USER })
  const form = new FormData()
  form.append('file', file, path)
  await agent(`uploading ${path}`, `/files?${q}`, agentHeaders(id, token), { method: 'POST', body: form }, 120_000)
}
