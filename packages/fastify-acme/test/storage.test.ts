// FileStorage and MemoryStorage against the shared Storage contract (@autotls/fastify-acme/testing), then what is
// FileStorage's own (file modes, atomicity on disk, lock files of dead processes) and what the plugin does with a
// corrupt cache.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { FileStorage, MemoryStorage, type Storage } from '../src/index.js'
import { directoryKey, keys } from '../src/storage/index.js'
import { storageContract } from '../src/testing/storage-contract.js'

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'facme-storage-'))
}

storageContract('FileStorage', async () => {
  const root = await tempDir()
  const storage = new FileStorage(join(root, 'cache'))
  // Two instances on one folder stand for two processes sharing it.
  return {
    storage,
    peer: new FileStorage(join(root, 'cache')),
    close: () => rm(root, { recursive: true, force: true }),
  }
})
storageContract('MemoryStorage', () => ({ storage: new MemoryStorage() }))

describe('FileStorage on disk', () => {
  let root: string
  before(async () => {
    root = join(await tempDir(), 'cache')
  })
  after(async () => {
    await rm(root, { recursive: true, force: true })
  })

  test('files are 0600 and folders 0700, and no temp file is left behind', async () => {
    const s = new FileStorage(root)
    await s.put('dir/certificates/a.example.json', 'secret')
    assert.equal((await stat(join(root, 'dir/certificates/a.example.json'))).mode & 0o777, 0o600)
    assert.equal((await stat(join(root, 'dir/certificates'))).mode & 0o777, 0o700)
    assert.equal((await stat(join(root, 'dir'))).mode & 0o777, 0o700)
    assert.equal((await stat(root)).mode & 0o777, 0o700)
    assert.deepEqual(await readdir(join(root, 'dir/certificates')), ['a.example.json'])
  })

  test('concurrent writers of one key: the result is one complete value, never a mix', async () => {
    const s = new FileStorage(root)
    const values = Array.from({ length: 20 }, (_, i) => String(i).repeat(100_000))
    await Promise.all(values.map((v) => s.put('dir/race.json', v)))
    const final = (await s.get('dir/race.json'))!.toString()
    assert.ok(values.includes(final))
    assert.deepEqual(
      (await readdir(join(root, 'dir'))).filter((f) => f.includes('.tmp-')),
      [],
    )
  })

  test('the lock excludes another process, and a stale lock of a dead process is taken over', async () => {
    const s = new FileStorage(root)
    // Another process takes the lock and is killed while holding it.
    const script = `
      import { FileStorage } from ${JSON.stringify(new URL('../src/storage/file.ts', import.meta.url).href)}
      const s = new FileStorage(${JSON.stringify(root)})
      await s.lock('locks/shared')
      process.stdout.write('locked\\n')
      setInterval(() => {}, 1000)
    `
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('locked') && resolve())
      child.on('exit', () => reject(new Error('child exited early')))
    })
    await assert.rejects(s.lock('locks/shared', { timeoutMs: 500 }), { code: 'FACME_LOCK_TIMEOUT' })
    child.kill('SIGKILL')
    await new Promise((resolve) => child.on('exit', resolve))
    // The holder is dead (same host, no such pid): its lock is taken over at once, not after LOCK_STALE_MS.
    const started = Date.now()
    const lease = await s.lock('locks/shared', { timeoutMs: 2_000 })
    assert.ok(Date.now() - started < 2_000)
    await lease.release()
  })

  test('a lock whose holder stopped refreshing it is taken over after the stale time', async () => {
    const s = new FileStorage(root)
    const lockFile = join(root, 'locks/aged.lock')
    await import('node:fs/promises').then(async (fs) => {
      await fs.mkdir(join(root, 'locks'), { recursive: true })
      // A live pid on another host: only the age can make it stale.
      await fs.writeFile(
        lockFile,
        JSON.stringify({ token: '1@some-other-host:abcd', created: new Date().toISOString() }),
      )
      await assert.rejects(s.lock('locks/aged', { timeoutMs: 400 }), { code: 'FACME_LOCK_TIMEOUT' })
      const old = new Date(Date.now() - 30_000)
      await fs.utimes(lockFile, old, old)
    })
    const lease = await s.lock('locks/aged', { timeoutMs: 2_000 })
    await lease.release()
  })

  test('a read-only cache folder gives a clear FACME_STORAGE error', {
    skip: process.getuid?.() === 0 ? 'root ignores file modes' : false,
  }, async () => {
    const ro = join(await tempDir(), 'ro')
    const s = new FileStorage(ro)
    await s.put('x.json', '1')
    await import('node:fs/promises').then((fs) => fs.chmod(ro, 0o500))
    await assert.rejects(s.put('y.json', '2'), { code: 'FACME_STORAGE' })
  })
})

describe('directory keys', () => {
  test('staging and production never share a folder', () => {
    const a = directoryKey('https://acme-v02.api.letsencrypt.org/directory')
    const b = directoryKey('https://acme-staging-v02.api.letsencrypt.org/directory')
    assert.notEqual(a, b)
    assert.match(a, /^[A-Za-z0-9._-]+$/)
    assert.equal(keys.certificate(a, 'x.example'), `${a}/certificates/x.example.json`)
  })
})

describe('the plugin and a damaged cache', () => {
  test('a truncated certificate and a corrupt account are logged and treated as missing; the app boots', async () => {
    const { default: Fastify } = await import('fastify')
    const { acmeServerFactory, fastifyAcme } = await import('../src/index.js')
    const root = join(await tempDir(), 'cache')
    const directory = 'https://ca.invalid/dir'
    const dir = directoryKey(directory)
    const storage = new FileStorage(root)
    await storage.put(keys.certificate(dir, 'broken.example.com'), '{"name":"broken.example.com","keyPem":"-----BEGIN')
    await storage.put(keys.certificate(dir, 'garbage.example.com'), Buffer.from([0xff, 0xfe, 0x00, 0x01]))
    await storage.put(keys.account(dir), 'not json')
    await writeFile(join(root, dir, 'certificates', 'stray.tmp-123-abc'), 'partial')
    const lines: string[] = []
    const app = Fastify({
      serverFactory: acmeServerFactory(),
      logger: { level: 'warn', stream: { write: (l: string) => lines.push(l) } },
    } as never) as unknown as import('fastify').FastifyInstance
    await app.register(fastifyAcme, {
      names: ['broken.example.com', 'garbage.example.com'],
      directory,
      termsOfServiceAgreed: true,
      storage,
      issueOnStart: false,
    })
    await app.ready()
    assert.equal(app.acme.status('broken.example.com')?.state, 'pending')
    assert.equal(app.acme.status('garbage.example.com')?.state, 'pending')
    assert.ok(
      lines.some((l) => l.includes('corrupt')),
      'the corruption is logged',
    )
    assert.equal((await readFile(join(root, dir, 'certificates', 'stray.tmp-123-abc'))).toString(), 'partial')
    await app.close()
  })
})

test('FileStorage.getMany: bytes, undefined for a missing key, an Error (FACME_STORAGE) for an unreadable one', async () => {
  const root = join(await tempDir(), 'cache')
  const s = new FileStorage(root)
  await s.put('d/certificates/a.json', 'one')
  await s.put('d/certificates/dir/x.json', 'inside')
  const [a, missing, dir] = await s.getMany(['d/certificates/a.json', 'd/certificates/b.json', 'd/certificates/dir'])
  assert.equal((a as Buffer).toString(), 'one')
  assert.equal(missing, undefined)
  assert.ok(dir instanceof Error)
  assert.equal((dir as Error & { code?: string }).code, 'FACME_STORAGE')
  await rm(root, { recursive: true, force: true })
})

test('load() reads cached certificates through getMany when the storage has it, and logs unreadable ones', async () => {
  const storage = new MemoryStorage() as MemoryStorage & { getMany: Storage['getMany'] }
  const batches: number[] = []
  storage.getMany = async (list) => {
    batches.push(list.length)
    return list.map((key) => (key.endsWith('broken.test.json') ? new Error('EIO: simulated') : undefined))
  }
  const { default: Fastify } = await import('fastify')
  const { acmeServerFactory, fastifyAcme } = await import('../src/index.js')
  const lines: string[] = []
  const app = Fastify({
    serverFactory: acmeServerFactory(),
    logger: { level: 'info', stream: { write: (l: string) => lines.push(l) } },
  })
  const names = Array.from({ length: 300 }, (_, i) => `n${i}.many.test`).concat('broken.test')
  await app.register(fastifyAcme, {
    names,
    directory: 'https://127.0.0.1:9/dir',
    termsOfServiceAgreed: true,
    storage,
    issueOnStart: false,
  })
  await app.ready()
  assert.deepEqual(batches, [256, 45])
  assert.ok(lines.some((l) => l.includes('reading the cached certificate failed') && l.includes('broken.test')))
  assert.equal(app.acme.status('broken.test')?.state, 'pending')
  await app.close()
})
