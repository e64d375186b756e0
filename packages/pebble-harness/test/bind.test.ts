// Tests of startBind() against Debian's named: zones answer, the TSIG key updates them (nsupdate, independent of the
// fastify-acme code under test), forwarding reaches a challtestsrv, stop() leaves no process and no temp dir.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readlinkSync } from 'node:fs'
import { test } from 'node:test'
import { isAlive, startBind, startChallTestSrv, startPebble } from '../src/index.js'

function nsupdate(script: string, key: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile('nsupdate', ['-y', key], { timeout: 10_000 }, (error, _stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stderr }),
    )
    child.stdin?.end(script)
  })
}

test('bind: zones with SOA/NS/A, TSIG-signed nsupdate adds and deletes TXT, stop by PID', {
  timeout: 30_000,
}, async (t) => {
  const bind = await startBind()
  t.after(() => bind.stop())
  assert.deepEqual(bind.zones, ['acme.test.', 'validation.test.'])
  const resolver = bind.resolver()
  assert.equal((await resolver.resolveSoa('acme.test')).nsname, 'ns.acme.test')
  assert.deepEqual(await resolver.resolveNs('validation.test'), ['ns.validation.test'])
  assert.deepEqual(await resolver.resolve4('acme.test'), ['127.0.0.1'])
  assert.deepEqual(await resolver.resolve4('anything.acme.test'), ['127.0.0.1'])
  assert.deepEqual(await bind.txt('_acme-challenge.acme.test'), [])

  const key = `${bind.key.algorithm}:${bind.key.name}:${bind.key.secret}`
  const server = `server 127.0.0.1 ${bind.port}\nzone acme.test\n`
  const added = await nsupdate(`${server}update add _acme-challenge.acme.test 60 TXT "v1"\nsend\n`, key)
  assert.equal(added.code, 0, added.stderr)
  assert.deepEqual(await bind.txt('_acme-challenge.acme.test'), ['v1'])
  const wrongKey = `${bind.key.algorithm}:${bind.key.name}:${Buffer.alloc(32, 1).toString('base64')}`
  const refused = await nsupdate(`${server}update add _acme-challenge.acme.test 60 TXT "v2"\nsend\n`, wrongKey)
  assert.notEqual(refused.code, 0)
  assert.match(refused.stderr, /BADSIG|NOTAUTH|tsig/i)
  const deleted = await nsupdate(`${server}update delete _acme-challenge.acme.test TXT "v1"\nsend\n`, key)
  assert.equal(deleted.code, 0, deleted.stderr)
  assert.deepEqual(await bind.txt('_acme-challenge.acme.test'), [])

  const dir = readlinkSync(`/proc/${bind.pid}/cwd`)
  await bind.stop()
  assert.equal(isAlive(bind.pid), false)
  assert.equal(existsSync(dir), false)
})

test('bind: extra records, several NS, forwarding to a challtestsrv; Pebble takes its address', {
  timeout: 30_000,
}, async (t) => {
  const dns = await startChallTestSrv()
  t.after(() => dns.stop())
  const bind = await startBind({
    zones: [
      {
        name: 'acme.test',
        nameservers: ['ns1.acme.test', 'ns2.acme.test'],
        records: ['_acme-challenge.www CNAME www.validation.test.'],
      },
      { name: 'validation.test', allowUpdate: false },
    ],
    forwarders: [`127.0.0.1:${dns.dnsPort}`],
  })
  t.after(() => bind.stop())
  const resolver = bind.resolver()
  assert.deepEqual((await resolver.resolveNs('acme.test')).sort(), ['ns1.acme.test', 'ns2.acme.test'])
  assert.equal(await bind.cname('_acme-challenge.www.acme.test'), 'www.validation.test')
  await dns.addA('app.example.test', ['10.1.2.3'])
  assert.deepEqual(await resolver.resolve4('app.example.test'), ['10.1.2.3'])
  assert.deepEqual(await resolver.resolve4('other.example.test'), ['127.0.0.1'])

  const pebble = await startPebble({ dns, dnsServer: bind.address })
  t.after(() => pebble.stop())
  assert.equal(pebble.dnsServer, bind.address)
  assert.equal(pebble.dns, dns)
  await assert.rejects(startPebble({ dnsServer: 'nope' }), /host:port/)
})
