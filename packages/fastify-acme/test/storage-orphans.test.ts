// Regression from the reliability suite (check 2): a writer SIGKILLed mid-write leaves its temp file (a copy of a
// record, maybe of a private key) behind, and nothing removed it; a crash-looping process piled them up.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { FileStorage } from '../src/index.js'

test('a write removes the old temp files of that key left by dead writers, and only those', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'facme-orphans-'))
  t.after(() => rm(root, { recursive: true, force: true }))
  const storage = new FileStorage(root)
  await storage.put('certificates/a.example.json', 'first')
  // A pid that existed and is gone.
  const child = spawn(process.execPath, ['-e', '0'])
  const dead = child.pid!
  await new Promise((resolve) => child.on('exit', resolve))
  const folder = join(root, 'certificates')
  const old = new Date(Date.now() - 120_000)
  const files = {
    deadOld: `a.example.json.tmp-${dead}-aaaaaaaaaaaa`,
    deadFresh: `a.example.json.tmp-${dead}-bbbbbbbbbbbb`,
    aliveOld: `a.example.json.tmp-${process.pid}-cccccccccccc`,
    otherKey: `b.example.json.tmp-${dead}-dddddddddddd`,
  }
  for (const name of Object.values(files)) await writeFile(join(folder, name), 'partial')
  for (const name of [files.deadOld, files.aliveOld, files.otherKey]) await utimes(join(folder, name), old, old)
  await storage.put('certificates/a.example.json', 'second')
  const left = await readdir(folder)
  assert.ok(!left.includes(files.deadOld), 'the old temp file of a dead writer is removed')
  assert.ok(left.includes(files.deadFresh), 'a recent one is kept (its write could still be running elsewhere)')
  assert.ok(left.includes(files.aliveOld), "a live process's temp file is kept")
  assert.ok(left.includes(files.otherKey), "another key's temp files are left to that key's writes")
  assert.equal(String(await storage.get('certificates/a.example.json')), 'second')
})
