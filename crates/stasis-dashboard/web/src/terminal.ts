// A PTY in a running sandbox through the agent: process.Process/Start with `pty`
// (server-streaming), SendInput for keystrokes, Update for resizes. Shown with xterm.js.

import { Terminal } from '@xterm/xterm'
import { FitAddon } from '@xterm/addon-fit'
import '@xterm/xterm/css/xterm.css'
import { describe, streaming, unary } from './api'

function b64encode(bytes: Uint8Array): string {
  let s = ''
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}

function b64decode(text: string): Uint8Array {
  const s = atob(text)
  const out = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i)
  return out
}

export class Shell {
  private term: Terminal
  private fit = new FitAddon()
  private stop = new AbortController()
  private pid: number | null = null
  private resizeObserver: ResizeObserver
  private queue: Promise<void> = Promise.resolve()

  constructor(
    private readonly host: HTMLElement,
    private readonly id: string,
    private readonly token: string | undefined,
    private readonly onExit: (why: string) => void,
    onLeave: () => void,
  ) {
    this.term = new Terminal({
      cursorBlink: true,
      fontSize: 14,
      scrollback: 5000,
      screenReaderMode: false,
      theme: { background: '#111418' },
    })
    this.term.loadAddon(this.fit)
    this.term.open(host)
    this.term.textarea?.setAttribute('aria-label', `Terminal of sandbox ${id}`)
    this.fit.fit()
    this.resizeObserver = new ResizeObserver(() => this.resize())
    this.resizeObserver.observe(host)
    // The terminal takes every key, Tab included; Ctrl+] (telnet's escape) gives the
    // focus back to the page.
    this.term.attachCustomKeyEventHandler((e) => {
      if (e.ctrlKey && !e.altKey && !e.metaKey && (e.key === ']' || e.code === 'BracketRight')) {
        if (e.type === 'keydown') onLeave()
        return false
      }
      return true
    })
    const enc = new TextEncoder()
    this.term.onData((d) => this.send(enc.encode(d)))
    this.term.onBinary((d) => this.send(Uint8Array.from(d, (c) => c.charCodeAt(0))))
  }

  focus(): void {
    this.term.focus()
  }

  async run(): Promise<void> {
    const msg = {
      process: { cmd: '/bin/bash', args: ['-i', '-l'], envs: { TERM: 'xterm-256color' }, cwd: '/home/user' },
      pty: { size: { cols: this.term.cols, rows: this.term.rows } },
      tag: 'dashboard-terminal',
    }
    let why = 'the shell exited'
    try {
      for await (const m of streaming('opening a terminal', this.id, this.token, 'process.Process/Start', msg, this.stop.signal)) {
        const ev = m.event ?? {}
        if (ev.start) this.pid = ev.start.pid
        else if (ev.data?.pty) this.term.write(b64decode(ev.data.pty))
        else if (ev.end) {
          why = `the shell exited (${ev.end.status ?? ev.end.exitCode ?? 'done'})`
        }
      }
    } catch (e) {
      if (!this.stop.signal.aborted) why = describe(e)
    }
    this.pid = null
    this.onExit(why)
  }

  private send(bytes: Uint8Array): void {
    const pid = this.pid
    if (pid === null) return
    // In order: one SendInput at a time.
    this.queue = this.queue.then(() =>
      unary('sending input', this.id, this.token, 'process.Process/SendInput', {
        process: { pid },
        input: { pty: b64encode(bytes) },
      }).then(
        () => undefined,
        (e) => this.term.write(`\r\n[input failed: ${describe(e)}]\r\n`),
      ),
    )
  }

  private resize(): void {
    if (!this.host.isConnected) return
    const before = `${this.term.cols}x${this.term.rows}`
    this.fit.fit()
    const pid = this.pid
    if (pid === null || before === `${this.term.cols}x${this.term.rows}`) return
    void unary('resizing the terminal', this.id, this.token, 'process.Process/Update', {
      process: { pid },
      pty: { size: { cols: this.term.cols, rows: this.term.rows } },
    }).catch(() => undefined)
  }

  close(): void {
    const pid = this.pid
    this.stop.abort()
    this.resizeObserver.disconnect()
    // The agent keeps a process whose client is gone: end the shell, also when the
    // page itself is going away.
    if (pid !== null) {
      void unary(
        'closing the terminal',
        this.id,
        this.token,
        'process.Process/SendSignal',
        { process: { pid }, signal: 'SIGNAL_SIGKILL' },
        true,
      ).catch(() => undefined)
    }
    this.term.dispose()
  }
}
