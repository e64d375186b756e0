// FileStorage.watch() between processes: what another process puts and deletes in the shared folder reaches this
// one's listener (inotify), with final keys only, and this process's puts reach a watcher in another process.
// (Two FileStorage objects in one process are covered by the contract kit's watch cases in storage.test.ts.)
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { test } from 'node:test'
import { FileStorage, type StorageChange } from '../src/index.js'

const FILE = JSON.stringify(new URL('../src/storage/file.ts', import.meta.url).href)

/** A Node process running `script` (ESM, TypeScript through tsx), its stdout lines as an async iterator. */
function child(script: string) {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]()
  const next = async (): Promise<string> => {
    const line = await lines.next()
    if (line.done) throw new Error('the child process ended')
    return line.value
  }
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await once(proc, 'exit')
    }
  }
  return { proc, next, stop }
}

function waitFor(changes: StorageChange[], match: (c: StorageChange) => boolean, ms = 5_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const poll = setInterval(() => {
      if (changes.some(match)) {
        clearInterval(poll)
        resolve()
      } else if (Date.now() - started > ms) {
        clearInterval(poll)
        reject(new Error(`no matching change within ${ms} ms: ${JSON.stringify(changes)}`))
      }
    }, 10)
  })
}

test('another process puts and deletes: the listener here hears every final key, never a temp name', async (t) => {
  const root = join(await mkdtemp(join(tmpdir(), 'facme-watch-')), 'cache')
  t.after(() => rm(root, { recursive: true, force: true }))
  const changes: StorageChange[] = []
  const watch = new FileStorage(root).watch('dir/', (c) => changes.push(c))
  t.after(() => watch.close())
  // The writer puts what it reads from stdin, one key per line ('-key' deletes), and says 'done <key>'.
  const writer = child(`
    import { createInterface } from 'node:readline'
    import { FileStorage } from ${FILE}
    const s = new FileStorage(${JSON.stringify(root)})
    for await (const line of createInterface({ input: process.stdin })) {
      if (line.startsWith('-')) await s.delete(line.slice(1))
      else await s.put(line, 'v-' + line)
      process.stdout.write('done ' + line + '\\n')
    }
  `)
  t.after(writer.stop)
  const keys = [
    'dir/certificates/a.example.json',
    'dir/certificates/b.example.json',
    'dir/state/a.example.json',
    'dir/account.json',
    'other/not-watched.json',
  ]
  for (const key of keys) {
    writer.proc.stdin.write(`${key}\n`)
    assert.equal(await writer.next(), `done ${key}`)
  }
  for (const key of keys.slice(0, 4)) await waitFor(changes, (c) => c.type === 'changed' && c.key === key)
  writer.proc.stdin.write('-dir/certificates/a.example.json\n')
  await writer.next()
  await waitFor(
    changes,
    () => changes.filter((c) => c.type === 'changed' && c.key === 'dir/certificates/a.example.json').length >= 2,
  )
  // The last write outside the prefix came before the delete; inotify events of one watcher set arrive in order.
  const reported = new Set(changes.flatMap((c) => (c.type === 'changed' ? [c.key] : [])))
  assert.deepEqual([...reported].sort(), keys.slice(0, 4).sort())
  assert.ok(changes.every((c) => c.type === 'changed'))
})

test('a put here reaches a watcher in another process', async (t) => {
  const root = join(await mkdtemp(join(tmpdir(), 'facme-watch-')), 'cache')
  t.after(() => rm(root, { recursive: true, force: true }))
  const watcher = child(`
    import { FileStorage } from ${FILE}
    new FileStorage(${JSON.stringify(root)}).watch('dir/certificates/', (c) => process.stdout.write(JSON.stringify(c) + '\\n'))
    process.stdout.write('watching\\n')
    setInterval(() => {}, 1000)
  `)
  t.after(watcher.stop)
  assert.equal(await watcher.next(), 'watching')
  const s = new FileStorage(root)
  await s.put('dir/certificates/c.example.json', 'c')
  assert.deepEqual(JSON.parse(await watcher.next()), { type: 'changed', key: 'dir/certificates/c.example.json' })
  await s.delete('dir/certificates/c.example.json')
  assert.deepEqual(JSON.parse(await watcher.next()), { type: 'changed', key: 'dir/certificates/c.example.json' })
})

test('the watched folder wiped: reported as unreachable (no made-up key), watched again, then a resync', async (t) => {
  const root = join(await mkdtemp(join(tmpdir(), 'facme-watch-')), 'cache')
  t.after(() => rm(root, { recursive: true, force: true }))
  const storage = new FileStorage(root)
  await storage.put('dir/certificates/a.example.json', 'v1')
  const changes: StorageChange[] = []
  const watch = storage.watch('dir/', (c) => changes.push(c))
  t.after(() => watch.close())
  await rm(join(root, 'dir'), { recursive: true, force: true })
  await waitFor(changes, (c) => c.type === 'unreachable')
  await waitFor(changes, (c) => c.type === 'resync')
  for (const c of changes) {
    if (c.type === 'changed') assert.ok(c.key.startsWith('dir/certificates/'), `a made-up key: ${c.key}`)
  }
  // Watched again: a put after the resync is heard.
  await storage.put('dir/certificates/b.example.json', 'v2')
  await waitFor(changes, (c) => c.type === 'changed' && c.key === 'dir/certificates/b.example.json')
})
