// Shared helpers of the JS conformance tests. The SDKs are installed by run.sh into
// E2B_SDK_NODE_DIR (default <repo>/.cache/e2b-sdk/node), outside this directory, so they
// are loaded from there explicitly.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const NODE_DIR =
  process.env.E2B_SDK_NODE_DIR ?? join(here, '..', '..', '..', '.cache', 'e2b-sdk', 'node')
const sdkRequire = createRequire(join(NODE_DIR, 'package.json'))

/** Loads an installed package (`e2b`, `e2b-legacy`, `@e2b/code-interpreter`). */
export function sdk(name) {
  return sdkRequire(name)
}

for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  assert.ok(process.env[v], `${v} is not set: run the suite with tests/e2b-sdk/run.sh`)
}
export const API_URL = process.env.E2B_API_URL
export const API_KEY = process.env.E2B_API_KEY

/** Tags every sandbox of this run, so list queries see only their own sandboxes. */
export const RUN_ID = process.env.E2B_SDK_RUN_ID ?? `run${process.pid}${Date.now()}`

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * Calls `fn` until it returns a truthy value; fails with `what` after `timeoutMs`.
 * Returns the truthy value.
 */
export async function poll(what, fn, { timeoutMs = 60_000, intervalMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    last = await fn()
    if (last) return last
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/**
 * Runs `body(track)`; every sandbox id passed to `track` (or sandbox, whose id is taken)
 * is killed afterwards through the control API, also when the body throws.
 */
export async function withSandboxes(body) {
  const ids = new Set()
  const track = (sbx) => {
    ids.add(typeof sbx === 'string' ? sbx : sbx.sandboxId)
    return sbx
  }
  try {
    return await body(track)
  } finally {
    for (const id of ids) {
      try {
        await fetch(`${API_URL}/sandboxes/${id}`, {
          method: 'DELETE',
          headers: { 'X-API-KEY': API_KEY },
        })
      } catch (e) {
        console.error(`cleanup: could not kill ${id}: ${e}`)
      }
    }
  }
}

/** Metadata for a sandbox of `flow` in this run. */
export function meta(flow, extra = {}) {
  return { suite: RUN_ID, flow, ...extra }
}

/** The ids of this run's sandboxes of `flow` that the list endpoint reports in `state`. */
export async function listIds(Sandbox, flow, state) {
  const p = Sandbox.list({ query: { state: [state], metadata: { suite: RUN_ID, flow } } })
  const ids = []
  while (p.hasNext) for (const s of await p.nextItems()) ids.push(s.sandboxId)
  return ids
}

/**
 * Waits until the list endpoint reports sandbox `id` (of `flow`) as paused. Polls the list
 * rather than `getInfo`, which is not meant to be activity on the sandbox but might be.
 */
export async function waitPaused(Sandbox, flow, id, timeoutMs = 90_000) {
  await poll(
    `sandbox ${id} to be auto-paused`,
    async () => (await listIds(Sandbox, flow, 'paused')).includes(id),
    { timeoutMs, intervalMs: 500 },
  )
}

/** Whether the server lists template `name` (GET /templates). */
export async function hasTemplate(name) {
  const res = await fetch(`${API_URL}/templates`, { headers: { 'X-API-KEY': API_KEY } })
  const body = await res.text()
  assert.equal(res.status, 200, `GET /templates: ${res.status} ${body}`)
  const list = JSON.parse(body)
  return list.some(
    (t) =>
      t.templateID === name ||
      (t.aliases ?? []).includes(name) ||
      (t.names ?? []).includes(name),
  )
}

/** Asserts that `promise` rejects with an instance of `cls`; returns the error. */
export async function rejectsWith(promise, cls, what) {
  try {
    await promise
  } catch (e) {
    assert.ok(
      e instanceof cls,
      `${what}: expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}`,
    )
    return e
  }
  assert.fail(`${what}: expected ${cls.name}, but it succeeded`)
}
