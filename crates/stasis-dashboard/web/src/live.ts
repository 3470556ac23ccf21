// The server's live lifecycle events (GET /dashboard/api/events), read with fetch so the
// API key travels in a header, never in a URL. Reconnects from the last event id.

import { apiKey, LifecycleEvent, onUnauthorized, startDeadline } from './api'

export interface LiveHandlers {
  event(e: LifecycleEvent, replay: boolean): void
  caughtUp(): void
  status(text: string): void
}

export class Live {
  private last = 0
  private stop = new AbortController()
  private caughtUp = false

  constructor(private readonly h: LiveHandlers) {}

  start(): void {
    void this.loop()
  }

  close(): void {
    this.stop.abort()
  }

  private async loop(): Promise<void> {
    let backoff = 500
    while (!this.stop.signal.aborted) {
      try {
        await this.once()
        backoff = 500
      } catch (e) {
        if (this.stop.signal.aborted) return
        this.h.status('Live updates: reconnecting…')
        await new Promise((r) => setTimeout(r, backoff))
        backoff = Math.min(backoff * 2, 10_000)
      }
    }
  }

  private async once(): Promise<void> {
    const key = apiKey()
    if (!key) throw new Error('not signed in')
    const headers: Record<string, string> = { 'X-API-KEY': key, Accept: 'text/event-stream' }
    if (this.last > 0) headers['Last-Event-ID'] = String(this.last)
    // The answer has a deadline; then silence for 30 s means a dead connection (the
    // server sends a comment every 10 s and ends each stream after 30 s).
    const start = startDeadline(this.stop.signal, 15_000)
    const ctl = new AbortController()
    start.signal.addEventListener('abort', () => ctl.abort(start.signal.reason), { once: true })
    let timer = 0
    const watch = () => {
      clearTimeout(timer)
      timer = window.setTimeout(() => ctl.abort(new DOMException('the event stream went silent', 'TimeoutError')), 30_000)
    }
    try {
      const resp = await fetch('/dashboard/api/events', { headers, signal: ctl.signal })
      start.started()
      watch()
      if (resp.status === 401) {
        onUnauthorized()
        throw new Error('unauthorized')
      }
      if (!resp.ok || !resp.body) throw new Error(`events: ${resp.status}`)
      this.h.status('Live updates on')
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader()
      let buf = ''
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        watch()
        buf += value
        let cut: number
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          this.dispatch(buf.slice(0, cut))
          buf = buf.slice(cut + 2)
        }
      }
    } finally {
      start.started()
      clearTimeout(timer)
      ctl.abort()
    }
  }

  private dispatch(block: string): void {
    let kind = 'message'
    let id: string | null = null
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue
      const i = line.indexOf(':')
      const field = i < 0 ? line : line.slice(0, i)
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '')
      if (field === 'event') kind = value
      else if (field === 'id') id = value
      else if (field === 'data') data.push(value)
    }
    if (id !== null && /^\d+$/.test(id)) this.last = Number(id)
    if (kind === 'lifecycle' && data.length) {
      this.h.event(JSON.parse(data.join('\n')) as LifecycleEvent, !this.caughtUp)
    } else if (kind === 'caught-up') {
      if (!this.caughtUp) {
        this.caughtUp = true
        this.h.caughtUp()
      }
    } else if (kind === 'error') {
      this.h.status('Live updates: the server reported an error')
    }
  }
}
