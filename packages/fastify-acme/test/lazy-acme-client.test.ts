// acme-client (with axios) is loaded at the first ACME call, not when the plugin is imported (acme.ts): a process
// that only serves cached or manual certificates does not carry its ~18 MiB. Checked in a fresh process, since this
// test process may have loaded it already.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const ENTRY = fileURLToPath(new URL('../src/index.ts', import.meta.url))

function loadedAfter(script: string): Promise<string[]> {
  const code = `const { createRequire } = await import('node:module')
${script}
const cache = createRequire(import.meta.url).cache
console.log(JSON.stringify(Object.keys(cache).filter((p) => p.includes('/acme-client/'))))`
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--conditions=source', '--input-type=module', '-e', code],
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${err.message}\n${stderr}`))
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '[]') as string[])
      },
    )
  })
}

test('importing the plugin does not load acme-client; generating a challenge certificate does', async () => {
  assert.deepEqual(await loadedAfter(`await import(${JSON.stringify(ENTRY)})`), [])
  const acmeTs = fileURLToPath(new URL('../src/acme.ts', import.meta.url))
  const used = await loadedAfter(`const acme = await import(${JSON.stringify(acmeTs)})
const key = await acme.generateChallengeKey()
await acme.tlsAlpnCertificate('lazy.test', 'token.thumbprint', key)`)
  assert.ok(
    used.some((p) => p.endsWith('/acme-client/src/index.js')),
    JSON.stringify(used),
  )
})
