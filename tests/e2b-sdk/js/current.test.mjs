// Flows of the current JS SDK (npm e2b 2.51.x): POST /v2/sandboxes, /v2/…/connect,
// envd through E2B_SANDBOX_URL with the E2b-Sandbox-* routing headers.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  sdk,
  poll,
  withSandboxes,
  meta,
  listIds,
  waitPaused,
  rejectsWith,
  sleep,
  RUN_ID,
  API_KEY,
} from './lib.mjs'

const e2b = sdk('e2b')
const { Sandbox, CommandExitError, SandboxNotFoundError, FileNotFoundError } = e2b

test('pause → connect → cat file → kill (classic example)', async () => {
  await withSandboxes(async (track) => {
    const sandbox = track(await Sandbox.create({ metadata: meta('pause-connect') }))
    await sandbox.commands.run('echo "Hello World" > /tmp/file.txt')
    assert.equal(await sandbox.betaPause(), true, 'betaPause() of a running sandbox')
    const sandboxId = sandbox.sandboxId
    assert.match(sandboxId, /^[a-z0-9]+$/)

    const resumed = await Sandbox.connect(sandboxId)
    assert.equal(resumed.sandboxId, sandboxId)
    const result = await resumed.commands.run('cat /tmp/file.txt')
    assert.equal(result.stdout, 'Hello World\n')
    assert.equal(result.exitCode, 0)
    assert.equal(await resumed.kill(), true, 'kill() of a running sandbox')
    assert.equal(await resumed.isRunning(), false, 'isRunning() after kill')
  })
})

test('memory survives pause: a background process keeps counting', async () => {
  await withSandboxes(async (track) => {
    const sandbox = track(await Sandbox.create({ metadata: meta('memory') }))
    // A shell variable lives only in memory: a filesystem-only snapshot would lose it.
    const h = await sandbox.commands.run(
      'n=0; while true; do n=$((n+1)); echo $n > /tmp/n; sleep 0.1; done',
      { background: true, timeoutMs: 0 },
    )
    await poll('counter to reach 5', async () => {
      const r = await sandbox.commands.run('cat /tmp/n')
      return Number(r.stdout) >= 5
    })
    await h.disconnect()
    assert.equal(await sandbox.pause(), true)
    const resumed = await Sandbox.connect(sandbox.sandboxId)
    const first = Number((await resumed.commands.run('cat /tmp/n')).stdout)
    await poll('counter to go on after resume', async () => {
      const r = await resumed.commands.run('cat /tmp/n')
      return Number(r.stdout) > first
    })
    const procs = await resumed.commands.list()
    assert.ok(
      procs.some((p) => p.pid === h.pid),
      `pid ${h.pid} in commands.list() after resume: ${JSON.stringify(procs)}`,
    )
  })
})

test('list paused sandboxes with pagination (limit, nextItems, hasNext)', async () => {
  await withSandboxes(async (track) => {
    const ids = []
    for (let i = 0; i < 3; i++) {
      const s = track(await Sandbox.create({ metadata: meta('list') }))
      ids.push(s.sandboxId)
      assert.equal(await s.betaPause(), true)
    }
    const running = track(await Sandbox.create({ metadata: meta('list') }))

    // The classic example: no limit, one page.
    const all = Sandbox.list({ query: { state: ['paused'], metadata: { suite: RUN_ID, flow: 'list' } } })
    const items = await all.nextItems()
    assert.equal(all.hasNext, false)
    assert.deepEqual(items.map((s) => s.sandboxId).sort(), [...ids].sort())
    for (const s of items) {
      assert.equal(s.state, 'paused')
      assert.equal(s.templateId, 'base')
      assert.deepEqual(s.metadata, meta('list'))
      assert.ok(s.startedAt instanceof Date && !Number.isNaN(s.startedAt.getTime()))
      assert.ok(s.cpuCount > 0 && s.memoryMB > 0, JSON.stringify(s))
    }

    // Pages of two.
    const p = Sandbox.list({
      query: { state: ['paused'], metadata: { suite: RUN_ID, flow: 'list' } },
      limit: 2,
    })
    assert.equal(p.hasNext, true, 'hasNext before the first page')
    const page1 = await p.nextItems()
    assert.equal(page1.length, 2, 'first page')
    assert.equal(p.hasNext, true, 'hasNext after the first page of 2 of 3')
    assert.ok(p.nextToken, 'nextToken after the first page')
    const page2 = await p.nextItems()
    assert.equal(page2.length, 1, 'second page')
    assert.equal(p.hasNext, false, 'hasNext after the last page')
    assert.deepEqual(
      [...page1, ...page2].map((s) => s.sandboxId).sort(),
      [...ids].sort(),
      'pages cover every paused sandbox once',
    )

    assert.deepEqual(await listIds(Sandbox, 'list', 'running'), [running.sandboxId])
    const both = Sandbox.list({ query: { metadata: { suite: RUN_ID, flow: 'list' } } })
    const bothIds = (await both.nextItems()).map((s) => s.sandboxId)
    assert.equal(bothIds.length, 4, `no state filter lists running and paused: ${bothIds}`)
  })
})

test('list filters by metadata (AND of pairs, encoded keys and values)', async () => {
  await withSandboxes(async (track) => {
    const odd = { 'user id': 'a&b=c/é', 'x+y': '1 2' }
    const red = track(await Sandbox.create({ metadata: meta('metadata', { color: 'red', ...odd }) }))
    const blue = track(await Sandbox.create({ metadata: meta('metadata', { color: 'blue' }) }))
    const ids = async (metadata) => {
      const p = Sandbox.list({ query: { metadata: { suite: RUN_ID, ...metadata } } })
      return (await p.nextItems()).map((s) => s.sandboxId).sort()
    }
    assert.deepEqual(await ids({ flow: 'metadata' }), [red.sandboxId, blue.sandboxId].sort())
    assert.deepEqual(await ids({ color: 'red' }), [red.sandboxId])
    assert.deepEqual(await ids({ color: 'blue', flow: 'metadata' }), [blue.sandboxId])
    assert.deepEqual(await ids({ color: 'green' }), [])
    assert.deepEqual(await ids({ 'user id': 'a&b=c/é' }), [red.sandboxId], 'encoded metadata')
    assert.deepEqual(await ids({ 'x+y': '1 2' }), [red.sandboxId], 'plus and space')
    assert.deepEqual((await red.getInfo()).metadata, meta('metadata', { color: 'red', ...odd }))
  })
})

test('Sandbox.kill(id): true, then false for a killed and for an unknown id', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('kill') }))
    assert.equal(await Sandbox.kill(s.sandboxId), true)
    assert.equal(await Sandbox.kill(s.sandboxId), false, 'second kill')
    assert.equal(await Sandbox.kill('inosuchsandbox0000000'), false, 'unknown id')
    assert.deepEqual(await listIds(Sandbox, 'kill', 'running'), [])

    // A paused sandbox can be killed too, and its snapshot goes with it.
    const p = track(await Sandbox.create({ metadata: meta('kill') }))
    assert.equal(await p.pause(), true)
    assert.equal(await Sandbox.kill(p.sandboxId), true, 'kill of a paused sandbox')
    assert.deepEqual(await listIds(Sandbox, 'kill', 'paused'), [])
    await rejectsWith(Sandbox.connect(p.sandboxId), SandboxNotFoundError, 'connect after kill')
  })
})

test('auto-pause: lifecycle.onTimeout=pause pauses, and again after a resume', async () => {
  await withSandboxes(async (track) => {
    const s = track(
      await Sandbox.create({
        lifecycle: { onTimeout: 'pause' },
        timeoutMs: 4_000,
        metadata: meta('autopause'),
      }),
    )
    await s.files.write('/home/user/state.txt', 'kept')
    await waitPaused(Sandbox, 'autopause', s.sandboxId)
    const info = await Sandbox.getInfo(s.sandboxId)
    assert.equal(info.state, 'paused')
    assert.equal(info.lifecycle?.onTimeout, 'pause', `lifecycle: ${JSON.stringify(info.lifecycle)}`)

    const r = await Sandbox.connect(s.sandboxId, { timeoutMs: 4_000 })
    assert.equal(await r.files.read('/home/user/state.txt'), 'kept')
    assert.equal((await Sandbox.getInfo(s.sandboxId)).state, 'running')
    await waitPaused(Sandbox, 'autopause', s.sandboxId)

    const r2 = await Sandbox.connect(s.sandboxId, { timeoutMs: 60_000 })
    assert.equal((await r2.commands.run('cat /home/user/state.txt')).stdout, 'kept')
  })
})

test('timeout without auto-pause kills the sandbox', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('timeout-kill'), timeoutMs: 60_000 }))
    await s.setTimeout(3_000)
    await poll(
      'the sandbox to be killed at its timeout',
      async () =>
        (await listIds(Sandbox, 'timeout-kill', 'running')).length === 0 &&
        (await listIds(Sandbox, 'timeout-kill', 'paused')).length === 0,
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    assert.equal(await s.isRunning(), false)
    await rejectsWith(Sandbox.getInfo(s.sandboxId), SandboxNotFoundError, 'getInfo after expiry')
  })
})

test('background command, commands.list, commands.kill', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('commands') }))
    const h = await s.commands.run('sleep 600', { background: true, timeoutMs: 0 })
    assert.ok(h.pid > 0)
    const procs = await s.commands.list()
    const p = procs.find((x) => x.pid === h.pid)
    assert.ok(p, `pid ${h.pid} in ${JSON.stringify(procs)}`)
    assert.equal(p.cmd, '/bin/bash')
    assert.deepEqual(p.args, ['-l', '-c', 'sleep 600'])

    assert.equal(await s.commands.kill(h.pid), true)
    const err = await rejectsWith(h.wait(), CommandExitError, 'wait() of a killed command')
    assert.notEqual(err.exitCode, 0)
    assert.equal(await s.commands.kill(h.pid), false, 'kill of a gone pid')
    assert.ok(!(await s.commands.list()).some((x) => x.pid === h.pid), 'gone from list')

    // Output of a background command arrives through the callbacks and wait().
    const out = []
    const h2 = await s.commands.run('for i in 1 2 3; do echo line$i; sleep 0.2; done; echo err >&2', {
      background: true,
      onStdout: (d) => out.push(d),
    })
    const res = await h2.wait()
    assert.equal(res.exitCode, 0)
    assert.equal(res.stdout, 'line1\nline2\nline3\n')
    assert.equal(res.stderr, 'err\n')
    assert.equal(out.join(''), 'line1\nline2\nline3\n')

    // envs, cwd and user.
    const r = await s.commands.run('echo "$FOO $(pwd) $(whoami)"', { envs: { FOO: 'bar' }, cwd: '/tmp' })
    assert.equal(r.stdout, 'bar /tmp user\n')
    const root = await s.commands.run('whoami', { user: 'root' })
    assert.equal(root.stdout, 'root\n')
  })
})

test('stdin: sendStdin and closeStdin', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('stdin') }))
    const chunks = []
    const h = await s.commands.run('cat', { background: true, stdin: true, onStdout: (d) => chunks.push(d) })
    await s.commands.sendStdin(h.pid, 'hello\n')
    await poll('echo of the first line', () => chunks.join('').includes('hello\n'))
    await s.commands.sendStdin(h.pid, new TextEncoder().encode('world\n'))
    await poll('echo of the second line', () => chunks.join('').includes('world\n'))
    await s.commands.closeStdin(h.pid)
    const res = await h.wait()
    assert.equal(res.exitCode, 0)
    assert.equal(res.stdout, 'hello\nworld\n')
  })
})

test('commands.connect to a background command after a resume', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('commands-connect') }))
    const h = await s.commands.run('i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done', {
      background: true,
      timeoutMs: 0,
    })
    await poll('first ticks', () => h.stdout.includes('tick 3'))
    await h.disconnect()
    assert.equal(await s.betaPause(), true)

    const r = await Sandbox.connect(s.sandboxId)
    assert.ok((await r.commands.list()).some((p) => p.pid === h.pid), 'pid survives the pause')
    const seen = []
    const c = await r.commands.connect(h.pid, { onStdout: (d) => seen.push(d), timeoutMs: 0 })
    await poll('ticks after the resume', () => (seen.join('').match(/tick \d+/g) ?? []).length >= 3)
    const nums = seen.join('').match(/tick (\d+)/g).map((t) => Number(t.slice(5)))
    assert.ok(nums[0] > 3, `the counter continues, it does not restart: ${nums.slice(0, 5)}`)
    assert.equal(await r.commands.kill(h.pid), true)
    await rejectsWith(c.wait(), CommandExitError, 'wait() of the killed, connected command')
    await rejectsWith(r.commands.connect(999999), e2b.NotFoundError, 'connect to an unknown pid')
  })
})

test('pty: create, send input, resize, kill', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('pty') }))
    const dec = new TextDecoder()
    let out = ''
    const pty = await s.pty.create({ cols: 80, rows: 24, onData: (d) => (out += dec.decode(d, { stream: true })), timeoutMs: 0 })
    assert.ok(pty.pid > 0)
    const enc = new TextEncoder()
    await s.pty.sendInput(pty.pid, enc.encode('echo pty-$((6*7)); tty\n'))
    await poll('pty output', () => out.includes('pty-42'))
    await poll('a tty', () => /\/dev\/pts\/\d+/.test(out))
    await s.pty.sendInput(pty.pid, enc.encode('stty size\n'))
    await poll('initial size 24 80', () => out.includes('24 80'))
    await s.pty.resize(pty.pid, { cols: 120, rows: 40 })
    await s.pty.sendInput(pty.pid, enc.encode('stty size\n'))
    await poll('size after resize', () => out.includes('40 120'), { timeoutMs: 20_000 })
    assert.equal(await s.pty.kill(pty.pid), true)
    await pty.wait().catch(() => {})
    assert.ok(!(await s.commands.list()).some((p) => p.pid === pty.pid), 'pty gone after kill')
  })
})

test('files: write, read, list, exists, getInfo, makeDir, rename, remove', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('files') }))
    const info = await s.files.write('/home/user/dir/a.txt', 'hello files')
    assert.equal(info.path, '/home/user/dir/a.txt')
    assert.equal(await s.files.read('/home/user/dir/a.txt'), 'hello files')
    const bytes = await s.files.read('/home/user/dir/a.txt', { format: 'bytes' })
    assert.deepEqual(Buffer.from(bytes), Buffer.from('hello files'))
    // relative paths resolve against the home of the default user
    assert.equal(await s.files.read('dir/a.txt'), 'hello files')
    const owner = await s.commands.run('stat -c %U /home/user/dir/a.txt')
    assert.equal(owner.stdout, 'user\n', 'written files belong to the default user')

    const bin = Uint8Array.from({ length: 256 }, (_, i) => i)
    await s.files.write('/tmp/bin.dat', bin.buffer)
    assert.deepEqual(Buffer.from(await s.files.read('/tmp/bin.dat', { format: 'bytes' })), Buffer.from(bin))

    const multi = await s.files.write([
      { path: '/tmp/m/one.txt', data: '1' },
      { path: '/tmp/m/two.txt', data: '2' },
    ])
    assert.equal(multi.length, 2)
    assert.equal(await s.files.read('/tmp/m/two.txt'), '2')

    const entries = await s.files.list('/home/user/dir')
    const a = entries.find((e) => e.name === 'a.txt')
    assert.ok(a, JSON.stringify(entries))
    assert.equal(a.type, 'file')
    assert.equal(a.path, '/home/user/dir/a.txt')
    assert.equal(a.size, 11)

    assert.equal(await s.files.exists('/home/user/dir/a.txt'), true)
    assert.equal(await s.files.exists('/home/user/dir/none.txt'), false)
    const st = await s.files.getInfo('/home/user/dir')
    assert.equal(st.type, 'dir')

    assert.equal(await s.files.makeDir('/home/user/dir/sub/deep'), true)
    assert.equal(await s.files.makeDir('/home/user/dir/sub/deep'), false, 'makeDir of an existing dir')
    assert.equal((await s.files.getInfo('/home/user/dir/sub/deep')).type, 'dir')

    const moved = await s.files.rename('/home/user/dir/a.txt', '/home/user/dir/sub/b.txt')
    assert.equal(moved.path, '/home/user/dir/sub/b.txt')
    assert.equal(await s.files.exists('/home/user/dir/a.txt'), false)
    assert.equal(await s.files.read('/home/user/dir/sub/b.txt'), 'hello files')

    await s.files.remove('/home/user/dir/sub')
    assert.equal(await s.files.exists('/home/user/dir/sub/b.txt'), false)
    assert.equal(await s.files.exists('/home/user/dir/sub'), false)
    await rejectsWith(s.files.read('/home/user/dir/sub/b.txt'), FileNotFoundError, 'read of a removed file')
  })
})

test('files.watchDir reports create, write and remove', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('watch') }))
    await s.files.makeDir('/home/user/w')
    const events = []
    const handle = await s.files.watchDir('/home/user/w', (ev) => events.push(ev), { timeoutMs: 0 })
    try {
      await s.files.write('/home/user/w/x.txt', 'one')
      await poll('a create event for x.txt', () =>
        events.some((e) => e.name === 'x.txt' && e.type === 'create'),
      )
      await s.commands.run('echo more >> /home/user/w/x.txt')
      await poll('a write event for x.txt', () =>
        events.some((e) => e.name === 'x.txt' && e.type === 'write'),
      )
      await s.files.remove('/home/user/w/x.txt')
      await poll('a remove event for x.txt', () =>
        events.some((e) => e.name === 'x.txt' && e.type === 'remove'),
      )
    } finally {
      await handle.stop()
    }
  })
})

test('uploadUrl / downloadUrl: signed URLs over plain HTTP', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('signed-urls') }))
    const up = await s.uploadUrl('/home/user/up.txt')
    assert.match(up, /signature=v1_/)
    const form = new FormData()
    form.append('file', new Blob(['uploaded via url']), 'up.txt')
    const res = await fetch(up, { method: 'POST', body: form })
    assert.equal(res.status, 200, `upload: ${res.status} ${await res.clone().text()}`)
    assert.equal(await s.files.read('/home/user/up.txt'), 'uploaded via url')

    const down = await s.downloadUrl('/home/user/up.txt', { useSignatureExpiration: 120 })
    assert.match(down, /signature_expiration=\d+/)
    const got = await fetch(down)
    assert.equal(got.status, 200)
    assert.equal(await got.text(), 'uploaded via url')

    // A signature for another path, a tampered expiry or an expired signature must not be
    // accepted. Without routing headers the server routes by signature, and a URL whose
    // signature matches no sandbox is unroutable: 502 "not found" (e2b-compat.md §1.5) is
    // then a rejection too. With the routing headers, envd itself must refuse it.
    const routed = { 'E2b-Sandbox-Id': s.sandboxId, 'E2b-Sandbox-Port': '49983' }
    const rejected = async (what, url, headers) => {
      const r = await fetch(url, { headers })
      const body = await r.text()
      const ok = [401, 403].includes(r.status) || (!headers && r.status === 502 && /was not found/.test(body))
      assert.ok(ok, `${what}${headers ? ' (with routing headers)' : ''}: ${r.status} ${body}`)
    }
    const forged = down.replace('up.txt', 'other.txt')
    await s.files.write('/home/user/other.txt', 'secret')
    await rejected('URL signed for another path', forged)
    await rejected('URL signed for another path', forged, routed)
    const tampered = new URL(down)
    tampered.searchParams.set('signature_expiration', String(Number(tampered.searchParams.get('signature_expiration')) + 1000))
    await rejected('tampered expiry', tampered)
    await rejected('tampered expiry', tampered, routed)
    const short = await s.downloadUrl('/home/user/up.txt', { useSignatureExpiration: 1 })
    await sleep(2_500)
    await rejected('expired signature', short)
    await rejected('expired signature', short, routed)
  })
})

test('getInfo, setTimeout, isRunning, getMetrics', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('info'), timeoutMs: 120_000 }))
    const info = await s.getInfo()
    assert.equal(info.sandboxId, s.sandboxId)
    assert.equal(info.templateId, 'base')
    assert.equal(info.state, 'running')
    assert.deepEqual(info.metadata, meta('info'))
    assert.ok(info.cpuCount > 0 && info.memoryMB > 0)
    assert.match(info.envdVersion, /^\d+\.\d+\.\d+$/)
    const ttl = (info.endAt - info.startedAt) / 1000
    assert.ok(ttl > 100 && ttl < 140, `endAt - startedAt = ${ttl} s for a 120 s timeout`)

    await s.setTimeout(600_000)
    const later = await s.getInfo()
    const left = (later.endAt - Date.now()) / 1000
    assert.ok(left > 540 && left < 660, `endAt is ${left} s away after setTimeout(600 s)`)

    assert.equal(await s.isRunning(), true)
    await s.commands.run('head -c 20000000 /dev/urandom | sha256sum')
    const metrics = await poll('metrics', async () => {
      const m = await s.getMetrics()
      return m.length > 0 && m
    }, { timeoutMs: 30_000, intervalMs: 1_000 })
    const m = metrics.at(-1)
    for (const k of ['cpuCount', 'cpuUsedPct', 'memUsed', 'memTotal', 'diskUsed', 'diskTotal']) {
      assert.equal(typeof m[k], 'number', `${k} in ${JSON.stringify(m)}`)
    }
    assert.ok(m.timestamp instanceof Date && !Number.isNaN(m.timestamp.getTime()))
    assert.ok(m.memTotal > 0 && m.memUsed > 0, JSON.stringify(m))

    assert.equal(await s.pause(), true)
    assert.equal(await s.isRunning(), false, 'isRunning() of a paused sandbox')
    assert.equal((await Sandbox.getInfo(s.sandboxId)).state, 'paused')
  })
})

test('error mapping', async () => {
  await withSandboxes(async (track) => {
    await rejectsWith(Sandbox.connect('inosuchsandbox0000000'), SandboxNotFoundError, 'connect unknown')
    await rejectsWith(Sandbox.getInfo('inosuchsandbox0000000'), SandboxNotFoundError, 'getInfo unknown')
    await rejectsWith(Sandbox.pause('inosuchsandbox0000000'), SandboxNotFoundError, 'pause unknown')
    await rejectsWith(
      Sandbox.create('no-such-template-xyz').then((x) => track(x)),
      e2b.SandboxError,
      'create from an unknown template',
    )
    await rejectsWith(
      Sandbox.list({ apiKey: 'e2b_' + 'f'.repeat(40) }).nextItems(),
      e2b.AuthenticationError,
      'list with a wrong API key',
    )

    const s = track(await Sandbox.create({ metadata: meta('errors') }))
    const err = await rejectsWith(
      s.commands.run('echo out; echo oops >&2; exit 3'),
      CommandExitError,
      'non-zero exit',
    )
    assert.equal(err.exitCode, 3)
    assert.equal(err.stderr, 'oops\n')
    assert.equal(err.stdout, 'out\n')

    await rejectsWith(
      s.commands.run('pwd', { cwd: '/no/such/dir' }),
      e2b.InvalidArgumentError,
      'cwd that does not exist',
    )
    await rejectsWith(s.files.read('/tmp'), e2b.InvalidArgumentError, 'read of a directory')
    await rejectsWith(s.files.list('/no/such/dir'), e2b.NotFoundError, 'list of a missing dir')
    await rejectsWith(s.commands.run('whoami', { user: 'nosuchuser' }), e2b.AuthenticationError, 'unknown user')

    assert.equal(await s.betaPause(), true)
    assert.equal(await s.betaPause(), false, 'pause of a paused sandbox')
    assert.equal(await Sandbox.pause(s.sandboxId), false, 'static pause of a paused sandbox')
    await rejectsWith(s.commands.run('true'), e2b.SandboxError, 'command in a paused sandbox')

    assert.equal(await s.kill(), true)
    assert.equal(await s.isRunning(), false)
    const gone = await rejectsWith(s.commands.run('true'), e2b.SandboxError, 'command after kill')
    assert.match(String(gone.message), /not found|not running|killed/i)
    assert.equal(await s.kill(), false, 'kill() of a killed sandbox')
  })
})

test('sandbox env vars from create reach commands', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('envs'), envs: { STASIS_SDK: 'yes', FOO: 'sandbox' } }))
    const r = await s.commands.run('echo $STASIS_SDK $FOO', { envs: { FOO: 'command' } })
    assert.equal(r.stdout, 'yes command\n', 'per-command envs win over sandbox envs')
  })
})

test('files: large, gzip, octet-stream, recursive watch, list depth', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('files-more') }))
    const big = Buffer.alloc(3 * 1024 * 1024)
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff
    await s.files.write('/tmp/big.bin', big.buffer.slice(big.byteOffset, big.byteOffset + big.length))
    const back = Buffer.from(await s.files.read('/tmp/big.bin', { format: 'bytes' }))
    assert.equal(back.length, big.length)
    assert.ok(back.equals(big), '3 MiB round trip')
    const sum = await s.commands.run('sha256sum /tmp/big.bin | cut -c1-64')
    const { createHash } = await import('node:crypto')
    assert.equal(sum.stdout.trim(), createHash('sha256').update(big).digest('hex'))

    await s.files.write('/tmp/gz.txt', 'compressed '.repeat(1000), { gzip: true })
    assert.equal(await s.files.read('/tmp/gz.txt'), 'compressed '.repeat(1000), 'gzip upload')
    assert.equal(await s.files.read('/tmp/gz.txt', { gzip: true }), 'compressed '.repeat(1000), 'gzip download')

    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('streamed '))
        c.enqueue(new TextEncoder().encode('upload'))
        c.close()
      },
    })
    await s.files.write('/tmp/stream.txt', stream)
    assert.equal(await s.files.read('/tmp/stream.txt'), 'streamed upload', 'octet-stream upload')
    const chunks = []
    for await (const c of await s.files.read('/tmp/big.bin', { format: 'stream' })) chunks.push(Buffer.from(c))
    assert.ok(Buffer.concat(chunks).equals(big), 'streamed download')

    await s.files.makeDir('/tmp/tree/a/b')
    await s.files.write('/tmp/tree/a/b/c.txt', 'c')
    const shallow = (await s.files.list('/tmp/tree')).map((e) => e.path).sort()
    assert.deepEqual(shallow, ['/tmp/tree/a'])
    const deep = (await s.files.list('/tmp/tree', { depth: 3 })).map((e) => e.path).sort()
    assert.deepEqual(deep, ['/tmp/tree/a', '/tmp/tree/a/b', '/tmp/tree/a/b/c.txt'])

    const events = []
    const h = await s.files.watchDir('/tmp/tree', (e) => events.push(e), { recursive: true, timeoutMs: 0 })
    try {
      await s.files.write('/tmp/tree/a/b/new.txt', 'n')
      await poll('a recursive create event', () =>
        events.some((e) => e.name === 'a/b/new.txt' && e.type === 'create'),
      )
    } finally {
      await h.stop()
    }
  })
})

test('commands: timeout kills the process, large and UTF-8 output', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('commands-more') }))
    await rejectsWith(
      s.commands.run('echo started > /tmp/t; sleep 30; echo done > /tmp/t', { timeoutMs: 1_500 }),
      e2b.TimeoutError,
      'a command past its timeout',
    )
    await poll('the timed-out process to be gone', async () =>
      !(await s.commands.list()).some((p) => p.args?.some((a) => a.includes('sleep 30'))),
      { timeoutMs: 10_000 },
    )
    assert.equal((await s.commands.run('cat /tmp/t')).stdout, 'started\n')

    const big = await s.commands.run('head -c 2000000 /dev/zero | tr "\\0" "x"; echo')
    assert.equal(big.stdout.length, 2_000_001)
    const utf = await s.commands.run("printf 'héllo wörld ✓ 日本語\\n'")
    assert.equal(utf.stdout, 'héllo wörld ✓ 日本語\n')
  })
})

test('connect to a running sandbox extends but never shortens its timeout', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('connect-running'), timeoutMs: 600_000 }))
    const before = (await s.getInfo()).endAt
    const c = await Sandbox.connect(s.sandboxId, { timeoutMs: 10_000 })
    assert.equal((await c.commands.run('echo hi')).stdout, 'hi\n')
    const after = (await s.getInfo()).endAt
    assert.ok(after >= before - 1000, `endAt moved from ${before.toISOString()} to ${after.toISOString()}`)
    await Sandbox.connect(s.sandboxId, { timeoutMs: 1_200_000 })
    const extended = ((await s.getInfo()).endAt - Date.now()) / 1000
    assert.ok(extended > 1100 && extended < 1300, `endAt ${extended} s away after connect(1200 s)`)
  })
})

test('files.write metadata is kept (X-Metadata-* → EntryInfo.metadata, envd >= 0.6.2)', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('files-metadata') }))
    await s.files.write('/tmp/meta.txt', 'm', { metadata: { owner: 'sdk-suite', Kind: 'Test' } })
    const st = await s.files.getInfo('/tmp/meta.txt')
    // Keys are lowercased by the sandbox (SDK docs).
    assert.deepEqual(st.metadata, { owner: 'sdk-suite', kind: 'Test' }, `getInfo: ${JSON.stringify(st)}`)
    const listed = (await s.files.list('/tmp')).find((e) => e.name === 'meta.txt')
    assert.deepEqual(listed?.metadata, { owner: 'sdk-suite', kind: 'Test' }, `list: ${JSON.stringify(listed)}`)
  })
})

// A tree for the EntryInfo flows: a 0755 dir, a 0640 file, links to both and a broken one.
const ENTRY_TREE = [
  'mkdir -p /tmp/e/real && chmod 755 /tmp/e/real',
  'echo data > /tmp/e/real/f.txt && chmod 640 /tmp/e/real/f.txt',
  'ln -s real/f.txt /tmp/e/to-file && ln -s /tmp/e/real /tmp/e/to-dir && ln -s missing /tmp/e/broken',
].join(' && ')

test('files: EntryInfo.mode is the permission bits alone (a 0755 dir is 493)', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('entry-mode') }))
    await s.commands.run(ENTRY_TREE)
    const dir = await s.files.getInfo('/tmp/e/real')
    assert.equal(dir.mode, 0o755, JSON.stringify(dir))
    assert.equal(dir.permissions, 'drwxr-xr-x')
    assert.equal((await s.files.getInfo('/tmp/e/real/f.txt')).mode, 0o640)
    const listed = await s.files.list('/tmp/e/real')
    assert.deepEqual(listed.map((e) => [e.name, e.mode]), [['f.txt', 0o640]])
  })
})

test('files: a symlink shows its resolved absolute target and the type and mode of that target', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('entry-symlink') }))
    await s.commands.run(ENTRY_TREE)
    const link = await s.files.getInfo('/tmp/e/to-file')
    assert.equal(link.type, 'file', JSON.stringify(link))
    assert.equal(link.symlinkTarget, '/tmp/e/real/f.txt', 'not the link text real/f.txt')
    assert.equal(link.mode, 0o640)
    assert.equal(link.path, '/tmp/e/to-file')
    const listed = Object.fromEntries((await s.files.list('/tmp/e')).map((e) => [e.name, e]))
    assert.equal(listed['to-dir']?.type, 'dir', JSON.stringify(listed))
    assert.equal(listed['to-dir'].symlinkTarget, '/tmp/e/real')
    assert.equal(listed['to-file'].symlinkTarget, '/tmp/e/real/f.txt')
    // a broken link has no type (so files.list leaves it out) and is its own target
    assert.equal(listed.broken, undefined, JSON.stringify(listed.broken))
    const broken = await s.files.getInfo('/tmp/e/broken')
    assert.equal(broken.type, undefined, JSON.stringify(broken))
    assert.equal(broken.symlinkTarget, '/tmp/e/broken')
  })
})

test('files.write answers with the metadata it stored', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('write-metadata') }))
    const w = await s.files.write('/tmp/m.txt', 'one', { metadata: { Owner: 'sdk-suite' } })
    assert.deepEqual(w.metadata, { owner: 'sdk-suite' }, JSON.stringify(w))
    const plain = await s.files.write('/tmp/plain.txt', 'x')
    assert.equal(plain.metadata, undefined, JSON.stringify(plain))
  })
})

test('files.write without metadata over a file clears its old metadata', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('overwrite-metadata') }))
    await s.files.write('/tmp/m.txt', 'one', { metadata: { owner: 'sdk-suite', kind: 'a' } })
    await s.files.write('/tmp/m.txt', 'two', { metadata: { kind: 'b' } })
    assert.deepEqual((await s.files.getInfo('/tmp/m.txt')).metadata, { kind: 'b' }, 'keys not sent again are gone')
    await s.files.write('/tmp/m.txt', 'three')
    const st = await s.files.getInfo('/tmp/m.txt')
    assert.equal(st.metadata, undefined, `old metadata cleared: ${JSON.stringify(st)}`)
    assert.equal(await s.files.read('/tmp/m.txt'), 'three')
  })
})

test('files.remove of a path where nothing is succeeds (remove-all)', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('remove-missing') }))
    await s.files.remove('/tmp/never-was')
    await s.files.remove('/tmp/no/such/dir')
    assert.equal(await s.files.exists('/tmp/never-was'), false)
  })
})

test('files.read of /proc files (size 0 in stat) returns their content', async () => {
  await withSandboxes(async (track) => {
    const s = track(await Sandbox.create({ metadata: meta('read-proc') }))
    const boot = await s.files.read('/proc/sys/kernel/random/boot_id')
    assert.match(boot, /^[0-9a-f-]{36}\n$/, JSON.stringify(boot))
    assert.equal(boot, (await s.commands.run('cat /proc/sys/kernel/random/boot_id')).stdout)
    assert.match(await s.files.read('/proc/self/status'), /^Name:/)
  })
})

test("envd answers only with the sandbox's own access token", async () => {
  await withSandboxes(async (track) => {
    const a = track(await Sandbox.create({ metadata: meta('tokens') }))
    const b = track(await Sandbox.create({ metadata: meta('tokens') }))
    assert.ok(a.envdAccessToken && b.envdAccessToken && a.envdAccessToken !== b.envdAccessToken)
    const url = process.env.E2B_SANDBOX_URL
    const listDir = (token) =>
      fetch(`${url}/filesystem.Filesystem/ListDir`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Connect-Protocol-Version': '1',
          'E2b-Sandbox-Id': a.sandboxId,
          'E2b-Sandbox-Port': '49983',
          ...(token ? { 'X-Access-Token': token } : {}),
        },
        body: JSON.stringify({ path: '/tmp', depth: 1 }),
      })
    assert.equal((await listDir(a.envdAccessToken)).status, 200, "a's token")
    assert.equal((await listDir(b.envdAccessToken)).status, 401, "b's token on a")
    assert.equal((await listDir(undefined)).status, 401, 'no token')
    const file = (token) =>
      fetch(`${url}/files?path=/etc/hostname`, {
        headers: {
          'E2b-Sandbox-Id': a.sandboxId,
          'E2b-Sandbox-Port': '49983',
          ...(token ? { 'X-Access-Token': token } : {}),
        },
      })
    assert.equal((await file(a.envdAccessToken)).status, 200, "GET /files with a's token")
    assert.equal((await file(b.envdAccessToken)).status, 401, "GET /files with b's token")
    assert.equal((await file(undefined)).status, 401, 'GET /files with neither token nor signature')
  })
})
