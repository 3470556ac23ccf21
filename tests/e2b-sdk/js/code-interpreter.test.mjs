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

test('code interpreter: every language, its contexts, the defaults and root', { skip: missing }, async () => {
  await withSandboxes(async (track) => {
    const sandbox = track(await Sandbox.create({ metadata: meta('ci-languages') }))
    const defaults = await sandbox.listCodeContexts()
    assert.deepEqual(
      defaults.map((c) => c.language),
      ['python', 'javascript'],
      'the default contexts exist from the start, in creation order',
    )

    // tslab prints the last expression's value on stdout (e2b-compat §5.1).
    const js = await sandbox.runCode('console.log("from js"); [1, 2].length + 40', { language: 'js' })
    assert.equal(js.logs.stdout.join(''), 'from js\n42\n')
    const awaited = await sandbox.runCode('await Promise.resolve(process.cwd())', { language: 'javascript' })
    assert.equal(awaited.logs.stdout.join(''), '/home/user\n')
    const thrown = await sandbox.runCode("JSON.parse('{')", { language: 'js' })
    assert.equal(thrown.error?.name, 'SyntaxError')

    const ts = await sandbox.runCode('const greeting: string = "typed"; console.log(greeting)', { language: 'ts' })
    assert.deepEqual(ts.logs.stdout, ['typed\n'])
    const typeError = await sandbox.runCode('const k: number = "text"', { language: 'typescript' })
    assert.ok(typeError.error, 'a type error is an error')

    const r = await sandbox.runCode('mean(c(1, 2, 6))', { language: 'r' })
    assert.equal(r.results[0]?.text.trim(), '[1] 3')
    const rEnv = await sandbox.runCode('Sys.getenv("FOO")', { language: 'r', envs: { FOO: 'bar' } })
    assert.equal(rEnv.results[0]?.text.trim(), '[1] "bar"')

    const java = await sandbox.runCode('int a = 40;\na + 2', { language: 'java' })
    assert.equal(java.error, undefined, JSON.stringify(java.error))
    assert.equal(java.results[0]?.text.trim(), '42')

    for (const language of ['javascript', 'typescript', 'r']) {
      const ctx = await sandbox.createCodeContext({ language, cwd: '/tmp' })
      assert.equal(ctx.language, language)
      const out = await sandbox.runCode(language === 'r' ? 'getwd()' : 'process.cwd()', { context: ctx })
      const got = language === 'r' ? out.results[0]?.text.trim() : out.logs.stdout.join('').trim()
      assert.equal(got, language === 'r' ? '[1] "/tmp"' : '/tmp', language)
    }

    // Kernels run as root: root's home is a working directory like any other.
    const rootCtx = await sandbox.createCodeContext({ language: 'python', cwd: '/root' })
    const who = await sandbox.runCode('import os; (os.getcwd(), os.getuid())', { context: rootCtx })
    assert.equal(who.text, "('/root', 0)")
    const listed = await sandbox.listCodeContexts()
    assert.equal(listed[listed.length - 1].id, rootCtx.id, 'the newest context is listed last')
  })
})
