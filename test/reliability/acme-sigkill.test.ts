// Check 2: SIGKILL during certificate writes. (a) 200 times, a child process that rewrites real Pebble-issued
// records through FileStorage as fast as it can (two records per name, alternating) is SIGKILLed at a random
// instant; after each kill every stored record must be exactly one of the two, parse, and have a key matching its
// chain. Then the plugin starts on that folder and must send 0 orders. (b) A few times, the full plugin in a child
// process is SIGKILLed in the middle of issuing; the folder must stay consistent and a restart must finish the job,
// after which one more restart sends 0 orders.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { cp, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { FileStorage } from '@autotls/fastify-acme'
import { checkPair, directoryKey } from '@autotls/fastify-acme/internal'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import {
  bundle,
  exited,
  figure,
  httpsGet,
  killChild,
  message,
  ROOT,
  sleep,
  spawnTs,
  startAcmeApp,
  startupSettled,
  tempDir,
} from './helpers.js'

const KILLS = 201
const LANES = 3
const NAMES = ['a.kill.reliability.test', 'b.kill.reliability.test', 'c.kill.reliability.test']

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const full = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await filesUnder(full)))
    else out.push(full)
  }
  return out
}

/** Every certificate record in the folder: parses, key matches chain. Returns how many were checked and bad. */
async function auditCertificates(folder: string): Promise<{ checked: number; bad: string[] }> {
  const bad: string[] = []
  let checked = 0
  for (const file of await filesUnder(folder)) {
    if (!file.includes('/certificates/') || !file.endsWith('.json')) continue
    checked++
    try {
      const record = JSON.parse(await readFile(file, 'utf8')) as { name: string; keyPem: string; chainPem: string }
      checkPair(record.name, record.keyPem, record.chainPem)
    } catch (err) {
      bad.push(`${file}: ${(err as Error).message}`)
    }
  }
  return { checked, bad }
}

describe('check 2: SIGKILL during certificate writes', () => {
  let pebble: Pebble
  let root: string
  let work: Awaited<ReturnType<typeof tempDir>>
  const children: ChildProcess[] = []
  const rows: string[] = []

  before(async () => {
    pebble = await startPebble()
    root = await pebble.issuingRoot()
    work = await tempDir('kill')
  })
  after(async () => {
    for (const child of children) await killChild(child)
    await pebble?.stop()
    await work?.remove()
    if (rows.length > 0) figure(`check 2: ${rows.join('; ')}`)
  })

  test(`${KILLS} SIGKILLs of a writer of real records: 0 corrupt pairs, 0 orders after restart`, async () => {
    // Two real certificates per name from Pebble, stored the way the plugin stores them.
    const folder = join(work.path, 'writer')
    const dir = directoryKey(pebble.directoryUrl)
    const app = await startAcmeApp({
      port: pebble.tlsPort,
      acme: {
        names: NAMES,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new FileStorage(folder),
      },
    })
    const records: Record<string, [string, string]> = {}
    try {
      await Promise.all(NAMES.map((n) => app.acme.waitForCertificate(n)))
      const first = await Promise.all(
        NAMES.map((n) => readFile(join(folder, dir, 'certificates', `${n}.json`), 'utf8')),
      )
      await Promise.all(NAMES.map((n) => app.acme.issue(n)))
      for (const [i, n] of NAMES.entries()) {
        const second = await readFile(join(folder, dir, 'certificates', `${n}.json`), 'utf8')
        assert.notEqual(second, first[i])
        records[`${dir}/certificates/${n}.json`] = [first[i]!, second]
      }
    } finally {
      await app.close()
    }
    const recordsFile = join(work.path, 'records.json')
    await writeFile(recordsFile, JSON.stringify(records))
    const known = new Set(Object.values(records).flat())
    const writer = await bundle(join(ROOT, 'test/reliability/fixtures/cert-writer.ts'), work.path)

    let corrupt = 0
    let unknown = 0
    let killedAfterWrites = 0
    const started = Date.now()
    // Node's start-up dominates each round, so three writers run side by side, each on its own copy of the folder.
    const lanes = Array.from({ length: LANES }, (_, lane) => join(work.path, `writer-${lane}`))
    await Promise.all(lanes.map((lane) => cp(folder, lane, { recursive: true })))
    await Promise.all(
      lanes.map(async (lane) => {
        for (let i = 0; i < Math.ceil(KILLS / LANES); i++) {
          const child = spawn(process.execPath, [writer, lane, recordsFile], { stdio: ['ignore', 'pipe', 'inherit'] })
          children.push(child)
          await new Promise<void>((resolve, reject) => {
            child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve())
            child.once('exit', (code) => reject(new Error(`writer exited early (${code})`)))
          })
          // Somewhere inside the write loop: a few ms is several temp-file/fsync/rename cycles.
          await sleep(Math.random() * 25)
          child.kill('SIGKILL')
          await exited(child)
          children.splice(children.indexOf(child), 1)
          if (child.signalCode === 'SIGKILL') killedAfterWrites++
          for (const key of Object.keys(records)) {
            const text = await readFile(join(lane, ...key.split('/')), 'utf8').catch(() => '')
            if (!known.has(text)) unknown++
          }
          const audit = await auditCertificates(lane)
          corrupt += audit.bad.length
          assert.deepEqual(audit.bad, [], `${lane}: after kill ${i + 1}`)
        }
      }),
    )
    const seconds = ((Date.now() - started) / 1000).toFixed(1)
    const leftovers = (await Promise.all(lanes.map(filesUnder))).flat().filter((f) => f.includes('.tmp-')).length
    assert.equal(unknown, 0, 'a file held something other than one of the two records')

    // A restart on the folder: everything valid is served and nothing is ordered.
    const ordersBefore = countOrders(pebble)
    const restartLines: string[] = []
    const restarted = await startAcmeApp({
      port: pebble.tlsPort,
      log: { level: 'info', lines: restartLines },
      acme: {
        names: NAMES,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new FileStorage(lanes[0]!),
      },
    })
    try {
      for (const n of NAMES) assert.equal((await httpsGet(pebble.tlsPort, n, root)).status, 200)
      await startupSettled(restarted, restartLines, NAMES)
      assert.equal(restarted.acme.ordersSent, 0)
    } finally {
      await restarted.close()
    }
    const reorders = countOrders(pebble) - ordersBefore
    assert.equal(reorders, 0)
    rows.push(
      `${killedAfterWrites} SIGKILLs of a FileStorage writer of real records (${NAMES.length} names x 2 records, ${LANES} writers side by side, ${seconds} s): ` +
        `${corrupt} corrupt key/cert pairs, ${unknown} torn files, ${reorders} orders after restart; ${leftovers} temp files of killed writers present at the end (ignored by the store; removed by the next write of their key once older than 60 s)`,
    )
  })

  test('the full plugin SIGKILLed mid-issuance: consistent cache, restart completes, then 0 orders', async () => {
    const folder = join(work.path, 'plugin')
    const names = [
      'p.kill.reliability.test',
      'q.kill.reliability.test',
      'r.kill.reliability.test',
      's.kill.reliability.test',
    ]
    const setup = {
      port: pebble.tlsPort,
      folder,
      names,
      directory: pebble.directoryUrl,
      caRoots: pebble.caBundle,
      retryMinMs: 200,
      retryMaxMs: 500,
    }
    let kills = 0
    let midOrder = 0
    for (let i = 0; i < 4; i++) {
      const child = spawnTs('test/reliability/fixtures/acme-app.ts')
      children.push(child)
      child.send(setup)
      await message(child, (m: { listening?: number }) => m.listening !== undefined)
      // Kill at a random point after the first order of this run started (some runs may find nothing left to do).
      const ordering = await Promise.race([
        message(child, (m: { event?: string }) => m.event === 'order-started', 5_000).then(() => true),
        sleep(3_000).then(() => false),
      ]).catch(() => false)
      if (ordering) midOrder++
      await sleep(Math.random() * 600)
      child.kill('SIGKILL')
      await exited(child)
      children.pop()
      kills++
      const audit = await auditCertificates(folder)
      assert.deepEqual(audit.bad, [], `after plugin kill ${kills}`)
      const account = await readFile(join(folder, directoryKey(pebble.directoryUrl), 'account.json'), 'utf8').catch(
        () => undefined,
      )
      if (account !== undefined) assert.doesNotThrow(() => JSON.parse(account), 'account.json parses')
    }
    // Restart until every name is served (a name interrupted mid-order waits out its retry delay).
    const lines: string[] = []
    const app = await startAcmeApp({
      port: pebble.tlsPort,
      log: { level: 'warn', lines },
      acme: {
        names,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new FileStorage(folder),
        retryMinMs: 200,
        retryMaxMs: 500,
      },
    })
    try {
      await Promise.all(names.map((n) => app.acme.waitForCertificate(n)))
      for (const n of names) assert.equal((await httpsGet(pebble.tlsPort, n, root)).status, 200)
    } finally {
      await app.close()
    }
    const ordersBefore = countOrders(pebble)
    const againLines: string[] = []
    const again = await startAcmeApp({
      port: pebble.tlsPort,
      log: { level: 'info', lines: againLines },
      acme: {
        names,
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        storage: new FileStorage(folder),
      },
    })
    try {
      await startupSettled(again, againLines, names)
    } finally {
      await again.close()
    }
    const sent = again.acme.ordersSent
    assert.equal(sent, 0)
    assert.equal(countOrders(pebble) - ordersBefore, 0)
    const audit = await auditCertificates(folder)
    rows.push(
      `${kills} SIGKILLs of the full plugin during issuance (${midOrder} with an order in flight): ${audit.checked} stored pairs all valid, ` +
        `restart completed all ${names.length} names, then 0 orders on the next restart`,
    )
  })
})
