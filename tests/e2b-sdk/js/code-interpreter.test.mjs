// Code-interpreter flows (npm @e2b/code-interpreter 2.8.x): /execute on port 49999 through
// E2B_SANDBOX_URL. They need the template code-interpreter-v1; without it they are skipped.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { sdk, withSandboxes, meta, hasTemplate } from './lib.mjs'

const { Sandbox } = sdk('@e2b/code-interpreter')
const TEMPLATE = 'code-interpreter-v1'
const missing = (await hasTemplate(TEMPLATE))
  ? false
  : `template ${TEMPLATE} is not listed by GET /templates`

test('code interpreter: runCode x = 42 → pause → connect → runCode x = 42', { skip: missing }, async () => {
  await withSandboxes(async (track) => {
    const sandbox = track(await Sandbox.create({ metadata: meta('ci-pause') }))
    const first = await sandbox.runCode('x = 42')
    assert.equal(first.error, undefined, JSON.stringify(first.error))
    assert.equal(await sandbox.betaPause(), true)

    const resumed = await Sandbox.connect(sandbox.sandboxId)
    assert.equal(typeof resumed.runCode, 'function', 'connect returns the code-interpreter class')
    const exec = await resumed.runCode('x')
    assert.equal(exec.text, '42')
    assert.equal(await resumed.kill(), true)
  })
})

test('code interpreter: stdout, errors and contexts', { skip: missing }, async () => {
  await withSandboxes(async (track) => {
    const sandbox = track(await Sandbox.create({ metadata: meta('ci-misc') }))
    const out = await sandbox.runCode('print("hi"); 6 * 7')
    assert.deepEqual(out.logs.stdout, ['hi\n'])
    assert.equal(out.text, '42')

    const bad = await sandbox.runCode('1 / 0')
    assert.equal(bad.error?.name, 'ZeroDivisionError')

    const ctx = await sandbox.createCodeContext({ cwd: '/tmp' })
    assert.equal(ctx.cwd, '/tmp')
    const cwd = await sandbox.runCode('import os; os.getcwd()', { context: ctx })
    assert.equal(cwd.text, '/tmp')
    const isolated = await sandbox.runCode('"x" in globals()', { context: ctx })
    assert.equal(isolated.text, 'False')
  })
})
