// Check 5: a read-only or full cache folder. The folder is a tmpfs mounted for the test (as root file modes stop
// nothing, a mount does), read-only, or filled so that only k pages remain for k = 0 .. 16. Whatever the space left, the
// app stays up with a clear FACME_STORAGE error, and no order is sent whose certificate could not be stored (orders
// Pebble received = certificates found in the folder afterwards). Account registrations that could not be stored are
// counted as well.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { mkdir, open, readFile, rm, statfs } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { FileStorage } from '@autotls/fastify-acme'
import { directoryKey } from '@autotls/fastify-acme/internal'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import { figure, httpsGet, run, startAcmeApp, tempDir } from './helpers.js'

const NAME = 'full.storage.reliability.test'
const PAGE = 4096

/** Whether this process may mount a tmpfs (root, and a kernel/sandbox that allows it): probed once, synchronously. */
function canMount(): boolean {
  if (process.getuid?.() !== 0) return false
  const dir = mkdtempSync(join(tmpdir(), 'autotls-rel-probe-'))
  try {
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status !== 0) return false
    spawnSync('umount', [dir])
    return true
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
const mountable = canMount()

async function mountTmpfs(path: string, bytes: number): Promise<void> {
  await mkdir(path, { recursive: true })
  const { code, out } = await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0700`, 'tmpfs', path])
  if (code !== 0) throw new Error(`mount failed: ${out}`)
}

async function unmount(path: string): Promise<void> {
  await run('umount', ['-l', path])
}

/** Fills the file system at `path` so that exactly `pages` pages remain free. */
async function fillLeaving(path: string, pages: number): Promise<void> {
  const fs = await statfs(path)
  const free = fs.bavail * fs.bsize
  const filler = await open(join(path, 'filler'), 'w')
  try {
    const target = free - pages * PAGE
    const chunk = Buffer.alloc(64 * 1024)
    let written = 0
    while (written < target) {
      const { bytesWritten } = await filler.write(chunk, 0, Math.min(chunk.length, target - written))
      written += bytesWritten
    }
  } finally {
    await filler.close()
  }
}

/** Pebble logs one line per registered account. */
function accountsAtCa(pebble: Pebble): number {
  return (pebble.logs().match(/There are now \d+ accounts in memory/g) ?? []).length
}

describe('check 5: read-only or full cache folder', {
  skip: mountable ? false : 'needs root and permission to mount a tmpfs',
}, () => {
  let pebble: Pebble
  let base: Awaited<ReturnType<typeof tempDir>>
  const mounts: string[] = []
  const rows: string[] = []
  let totalSent = 0
  let totalUnstored = 0
  let accountsUnstored = 0

  before(async () => {
    pebble = await startPebble()
    base = await tempDir('full')
  })
  after(async () => {
    for (const m of mounts) await unmount(m)
    await pebble?.stop()
    await base?.remove()
    if (rows.length > 0) {
      figure(
        `check 5: ${rows.join('; ')}. Total: ${totalSent} orders sent, ${totalUnstored} sent but not stored, ` +
          `${accountsUnstored} account registrations not stored`,
      )
    }
  })

  async function mountFresh(label: string, bytes = 512 * 1024): Promise<string> {
    const path = join(base.path, label)
    await mountTmpfs(path, bytes)
    mounts.push(path)
    return path
  }

  /** Runs the app on `folder` until the name is issued or its first attempt failed; returns what happened. */
  async function attempt(folder: string) {
    const ordersBefore = countOrders(pebble)
    const accountsBefore = accountsAtCa(pebble)
    const lines: string[] = []
    const app = await startAcmeApp({
      port: pebble.tlsPort,
      log: { level: 'warn', lines },
      acme: {
        names: [NAME],
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new FileStorage(folder),
        retryMinMs: 60_000,
      },
    })
    try {
      await Promise.race([
        app.acme.waitForCertificate(NAME).catch(() => {}),
        new Promise<void>((resolve) => app.acme.once('order-failed', () => resolve())),
        new Promise<void>((resolve) => setTimeout(resolve, 15_000)),
      ])
      const status = app.acme.status(NAME)!
      const served = status.state === 'valid'
      const up = (await httpsGet(pebble.tlsPort, NAME, await pebble.issuingRoot()).catch(() => undefined))?.status
      return {
        status,
        served,
        up: (app.server as unknown as { listening: boolean }).listening,
        reachable: up,
        orders: countOrders(pebble) - ordersBefore,
        accounts: accountsAtCa(pebble) - accountsBefore,
        lines,
      }
    } finally {
      await app.close()
    }
  }

  async function stored(folder: string): Promise<{ certificate: boolean; account: boolean }> {
    const dir = join(folder, directoryKey(pebble.directoryUrl))
    const parse = async (file: string) => {
      try {
        return JSON.parse(await readFile(join(dir, file), 'utf8')) as Record<string, unknown>
      } catch {
        return undefined
      }
    }
    const cert = await parse(`certificates/${NAME}.json`)
    const account = await parse('account.json')
    return { certificate: typeof cert?.['keyPem'] === 'string', account: typeof account?.['url'] === 'string' }
  }

  test('read-only, empty: a clear FACME_STORAGE error, 0 orders, the process up', async () => {
    const folder = await mountFresh('ro-empty')
    await run('mount', ['-o', 'remount,ro', folder])
    const r = await attempt(folder)
    assert.equal(r.status.lastError?.code, 'FACME_STORAGE', JSON.stringify(r.status))
    assert.match(r.status.lastError?.message ?? '', /EROFS|read-only/i)
    assert.equal(r.orders, 0)
    assert.equal(r.accounts, 0)
    assert.ok(r.up)
    rows.push(
      `read-only empty folder: ${r.status.lastError?.code} "...${/failed: .*/.exec(r.status.lastError?.message ?? '')?.[0].slice(0, 60)}", 0 orders, up`,
    )
  })

  test('read-only with a valid certificate: served, 0 orders', async () => {
    const folder = await mountFresh('ro-valid')
    const first = await attempt(folder)
    assert.ok(first.served)
    totalSent += first.orders
    await run('mount', ['-o', 'remount,ro', folder])
    const r = await attempt(folder)
    assert.ok(r.served, JSON.stringify(r.status))
    assert.equal(r.reachable, 200)
    assert.equal(r.orders, 0)
    rows.push('read-only folder with a valid certificate: served, 0 orders')
  })

  for (const pages of [0, 1, 2, 3, 4, 6, 8, 10, 12, 16]) {
    test(`full: ${pages} page(s) left: every order sent is stored`, async () => {
      const folder = await mountFresh(`full-${pages}`)
      await fillLeaving(folder, pages)
      const r = await attempt(folder)
      const kept = await stored(folder)
      const unstored = r.orders > 0 && !kept.certificate ? r.orders : 0
      totalSent += r.orders
      totalUnstored += unstored
      if (r.accounts > 0 && !kept.account) accountsUnstored += r.accounts
      rows.push(
        `${pages} pages left: ${r.orders} orders, certificate stored ${kept.certificate}, ` +
          `${r.served ? 'issued' : r.status.lastError?.code}`,
      )
      assert.ok(r.up)
      assert.equal(unstored, 0, `${pages} pages: an order was sent whose certificate could not be stored`)
      if (!r.served) assert.equal(r.status.lastError?.code, 'FACME_STORAGE', JSON.stringify(r.status))
      // The folder may stay full, but the filler goes away with the mount; make room for nothing else here.
      await rm(join(folder, 'filler'), { force: true })
    })
  }
})
