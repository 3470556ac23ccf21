// Flows of the legacy JS SDK (npm e2b 2.23.0, installed as `e2b-legacy`): POST /sandboxes,
// POST /sandboxes/{id}/connect with a timeout, pause with no body, and betaCreate, the
// last release that has it.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { sdk, withSandboxes, meta, listIds, waitPaused, rejectsWith, RUN_ID } from './lib.mjs'

const e2b = sdk('e2b-legacy')
const { Sandbox, SandboxNotFoundError, CommandExitError } = e2b

test('legacy SDK is 2.23.0', () => {
  assert.equal(sdk('e2b-legacy/package.json').version, '2.23.0')
  assert.equal(typeof Sandbox.betaCreate, 'function')
})

test('legacy: pause → connect → cat file → kill', async () => {
  await withSandboxes(async (track) => {
    const sandbox = track(await Sandbox.create({ metadata: meta('legacy-pause-connect') }))
    await sandbox.commands.run('echo "Hello World" > /tmp/file.txt')
    assert.equal(await sandbox.betaPause(), true)
    assert.equal(await sandbox.betaPause(), false, 'pause of a paused sandbox')

    const resumed = await Sandbox.connect(sandbox.sandboxId)
    const result = await resumed.commands.run('cat /tmp/file.txt')
    assert.equal(result.stdout, 'Hello World\n')
    await resumed.files.write('/home/user/legacy.txt', 'from 2.23')
    assert.equal(await resumed.files.read('/home/user/legacy.txt'), 'from 2.23')
    const err = await rejectsWith(resumed.commands.run('exit 4'), CommandExitError, 'exit 4')
    assert.equal(err.exitCode, 4)
    await resumed.kill() // returns nothing in 2.23.0
    assert.equal(await resumed.isRunning(), false)
    assert.equal(await Sandbox.kill(resumed.sandboxId), false, 'static kill after kill')
  })
})

test('legacy: betaCreate({autoPause}) pauses on timeout, and again after a resume', async () => {
  await withSandboxes(async (track) => {
    // The classic example's call; 2.23.0 sends only `autoPause: true` (the nested timeout
    // is ignored), so the timeout comes from timeoutMs.
    const s = track(
      await Sandbox.betaCreate({
        autoPause: { enabled: true, timeout: 600_000 },
        timeoutMs: 4_000,
        metadata: meta('legacy-autopause'),
      }),
    )
    await s.commands.run('echo "Hello World" > /home/user/hello.txt')
    await waitPaused(Sandbox, 'legacy-autopause', s.sandboxId)

    const r = await Sandbox.connect(s.sandboxId, { timeoutMs: 4_000 })
    assert.equal((await r.commands.run('cat /home/user/hello.txt')).stdout, 'Hello World\n')
    await waitPaused(Sandbox, 'legacy-autopause', s.sandboxId)
    const info = await Sandbox.getInfo(s.sandboxId)
    assert.equal(info.state, 'paused')

    // autoPause: true without a nested object (the documented boolean form).
    const b = track(
      await Sandbox.betaCreate({ autoPause: true, timeoutMs: 3_000, metadata: meta('legacy-autopause') }),
    )
    await waitPaused(Sandbox, 'legacy-autopause', b.sandboxId)
  })
})

test('legacy: list paused with pagination, Sandbox.kill', async () => {
  await withSandboxes(async (track) => {
    const ids = []
    for (let i = 0; i < 3; i++) {
      const s = track(await Sandbox.create({ metadata: meta('legacy-list') }))
      assert.equal(await s.betaPause(), true)
      ids.push(s.sandboxId)
    }
    const p = Sandbox.list({ query: { state: ['paused'], metadata: { suite: RUN_ID, flow: 'legacy-list' } }, limit: 2 })
    const page1 = await p.nextItems()
    assert.equal(page1.length, 2)
    assert.equal(p.hasNext, true)
    const page2 = await p.nextItems()
    assert.equal(page2.length, 1)
    assert.equal(p.hasNext, false)
    assert.deepEqual([...page1, ...page2].map((s) => s.sandboxId).sort(), [...ids].sort())
    for (const s of [...page1, ...page2]) assert.equal(s.state, 'paused')

    for (const id of ids) assert.equal(await Sandbox.kill(id), true)
    assert.equal(await Sandbox.kill(ids[0]), false)
    assert.deepEqual(await listIds(Sandbox, 'legacy-list', 'paused'), [])
    await rejectsWith(Sandbox.connect(ids[0]), SandboxNotFoundError, 'connect to a killed sandbox')
  })
})
