// The demo: on a fresh machine, starts a local ACME test CA (Pebble; installed from Debian's packages when missing
// and we are root), an example upstream and the proxy preset; obtains certificates over TLS-ALPN-01 for two demo
// names; makes a proxied HTTPS request trusting only the CA's root and shows what came back and who issued it.
//
//   pnpm demo            stays up, prints curl commands to try, Ctrl-C to stop
//   pnpm demo --check    non-interactive: verifies everything, prints one summary line, exits 0 (or 1 with the reason)
import { spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { accessSync, constants } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { connect as h2connect } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { delimiter, join, resolve } from 'node:path'
import { type DetailedPeerCertificate, type TLSSocket, connect as tlsConnect } from 'node:tls'
import { MemoryStorage } from '@autotls/fastify-acme'
import { type Pebble, startPebble } from '@autotls/pebble-harness'
import { createProxy, type ProxyHandle } from '@autotls/proxy-preset'

const CHECK = process.argv.includes('--check')
const NAMES = ['app.demo.test', 'api.demo.test'] as const
const ISSUE_TIMEOUT_MS = 60_000

function say(line: string): void {
  if (!CHECK) console.log(line)
}

function hasPebble(): boolean {
  for (const dir of [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin']) {
    if (!dir) continue
    try {
      accessSync(join(dir, 'pebble'), constants.X_OK)
      return true
    } catch {}
  }
  return false
}

/** Pebble from Debian's package; installs it when we are root, otherwise says how. */
function ensurePebble(): void {
  if (hasPebble()) return
  if (process.getuid?.() !== 0) {
    throw new Error(
      "pebble (Let's Encrypt's test CA) is not installed: run `sudo apt-get install -y pebble`, then retry",
    )
  }
  say('pebble is missing: installing it with apt-get (Debian package "pebble")...')
  const quiet = {
    stdio: CHECK ? 'ignore' : 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  } as const
  let install = spawnSync('apt-get', ['install', '-y', 'pebble'], quiet)
  if (install.status !== 0) {
    spawnSync('apt-get', ['update'], quiet)
    install = spawnSync('apt-get', ['install', '-y', 'pebble'], quiet)
  }
  if (install.status !== 0 || !hasPebble()) throw new Error('apt-get install -y pebble failed; install it and retry')
}

function startUpstream(): Promise<Server> {
  const server = createServer((req, res) => {
    const host = String(req.headers.host ?? '')
    res.setHeader('content-type', 'text/html; charset=utf-8')
    res.end(
      `<!doctype html><title>autotls demo</title><h1>Hello from the demo upstream</h1>` +
        `<p id="host">${host.replace(/[<>&"]/g, '')}</p><p id="path">${String(req.url).replace(/[<>&"]/g, '')}</p>` +
        `<p id="forwarded">${String(req.headers['x-forwarded-proto'] ?? '')}</p>` +
        `<p id="protocol"></p><script>document.getElementById('protocol').textContent = 'protocol=' + ` +
        `(performance.getEntriesByType('navigation')[0] || {}).nextHopProtocol</script>\n`,
    )
  })
  return new Promise((done) => server.listen(0, '127.0.0.1', () => done(server)))
}

interface Fetched {
  status: number
  body: string
  protocol: string
  chain: X509Certificate[]
}

/** GET over HTTP/2 to the proxy, trusting only `root` (Node verifies the chain and the name). */
function fetchH2(port: number, name: string, path: string, root: string): Promise<Fetched> {
  return new Promise((done, fail) => {
    // Connect to loopback, but with the demo name for SNI, certificate verification and :authority.
    const session = h2connect(`https://127.0.0.1:${port}`, { ca: root, servername: name })
    session.on('error', fail)
    const stream = session.request({ ':path': path, ':authority': `${name}:${port}` })
    let status = 0
    let body = ''
    stream.on('response', (h) => {
      status = Number(h[':status'])
    })
    stream.setEncoding('utf8')
    stream.on('data', (c: string) => {
      body += c
    })
    stream.on('end', () => {
      const socket = session.socket as TLSSocket
      const protocol = String(socket.alpnProtocol)
      session.close()
      presentedChain(port, name, root).then((chain) => done({ status, body, protocol, chain }), fail)
    })
    stream.on('error', fail)
    stream.end()
  })
}

/** The certificates the server presents for `name` (leaf first), from a plain TLS handshake trusting `root`. */
function presentedChain(port: number, name: string, root: string): Promise<X509Certificate[]> {
  return new Promise((done, fail) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: name, ca: root, ALPNProtocols: ['h2'] })
    socket.once('secureConnect', () => {
      const chain: X509Certificate[] = []
      const seen = new Set<string>()
      let node: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true)
      while (node?.raw && !seen.has(node.fingerprint256)) {
        seen.add(node.fingerprint256)
        chain.push(new X509Certificate(node.raw))
        node = node.issuerCertificate
      }
      socket.destroy()
      done(chain)
    })
    socket.once('error', fail)
  })
}

/** Independent of TLS: each certificate is signed by the next, the last by the root. */
function verifyChain(chain: X509Certificate[], rootPem: string): void {
  const root = new X509Certificate(rootPem)
  const [leaf] = chain
  if (!leaf) throw new Error('no certificate presented')
  const path = [...chain.filter((c) => c.fingerprint256 !== root.fingerprint256)]
  for (let i = 0; i + 1 < path.length; i++) {
    if (!path[i]!.verify(path[i + 1]!.publicKey))
      throw new Error(`certificate ${i} is not signed by certificate ${i + 1}`)
  }
  if (!path.at(-1)!.verify(root.publicKey)) {
    throw new Error(
      `the chain (${chain.map((c) => c.subject.replace(/\n/g, ' ')).join(' <- ')}) does not end at the CA root`,
    )
  }
}

async function run(): Promise<void> {
  const started = Date.now()
  ensurePebble()
  say('starting Pebble (local ACME test CA)...')
  const pebble: Pebble = await startPebble()
  let proxy: ProxyHandle | undefined
  let upstream: Server | undefined
  const cleanup = async () => {
    await proxy?.close()
    if (upstream) await new Promise<void>((done) => upstream!.close(() => done()))
    await pebble.stop()
  }
  try {
    upstream = await startUpstream()
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
    proxy = await createProxy({
      logger: CHECK ? false : { level: 'warn' },
      https: { host: '127.0.0.1', port: pebble.tlsPort },
      http: { host: '127.0.0.1', port: pebble.httpPort },
      shutdown: { signals: false },
      acme: {
        directory: pebble.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: pebble.caBundle,
        challenges: ['tls-alpn-01'],
        storage: new MemoryStorage(),
      },
      routes: [
        { host: 'app.demo.test', upstream: upstreamUrl },
        { host: 'api.demo.test', path: '/v1', upstream: upstreamUrl, rewritePrefix: '/api' },
      ],
    })
    await proxy.listen()
    say(
      `proxy on https://127.0.0.1:${pebble.tlsPort}, ordering certificates for ${NAMES.join(', ')} over TLS-ALPN-01...`,
    )
    const acme = proxy.acme!
    const timeout = new Promise<never>((_, fail) =>
      setTimeout(() => fail(new Error(`no certificate within ${ISSUE_TIMEOUT_MS / 1000} s`)), ISSUE_TIMEOUT_MS).unref(),
    )
    await Promise.race([Promise.all(NAMES.map((n) => acme.waitForCertificate(n))), timeout])
    if (acme.tlsAlpnStats.diverted < NAMES.length) throw new Error('certificates were not validated over TLS-ALPN-01')

    const root = await pebble.issuingRoot()
    const rootFile = resolve('.demo', 'pebble-root.pem')
    await mkdir(resolve('.demo'), { recursive: true })
    await writeFile(rootFile, root)

    const results: Array<{ name: string; path: string; res: Fetched }> = []
    for (const [name, path] of [
      ['app.demo.test', '/hello?from=demo'],
      ['api.demo.test', '/v1/items'],
    ] as const) {
      const res = await fetchH2(pebble.tlsPort, name, path, root)
      if (res.status !== 200) throw new Error(`${name}${path}: status ${res.status}`)
      if (!res.body.includes('Hello from the demo upstream')) throw new Error(`${name}${path}: unexpected body`)
      if (res.protocol !== 'h2') throw new Error(`${name}: negotiated ${res.protocol}, expected h2`)
      verifyChain(res.chain, root)
      const san = res.chain[0]!.subjectAltName ?? ''
      if (!san.includes(`DNS:${name}`)) throw new Error(`${name}: certificate is for ${san}`)
      results.push({ name, path, res })
    }
    const first = results[0]!
    const leaf = first.res.chain[0]!
    const issuer = leaf.issuer.replace(/\n/g, ', ')
    if (CHECK) {
      console.log(
        `demo: OK ${results.map((r) => `https://${r.name}${r.path} ${r.res.status} ${r.res.protocol}`).join(', ')}; ` +
          `issuer "${issuer}"; chains verified against Pebble's root (${((Date.now() - started) / 1000).toFixed(1)} s)`,
      )
      await cleanup()
      return
    }
    for (const { name, path, res } of results) {
      const cert = res.chain[0]!
      console.log(`\nGET https://${name}${path}  ->  ${res.status} over ${res.protocol}`)
      console.log(
        `  body:    ${res.body
          .replace(/<script>[\s\S]*?<\/script>/g, '')
          .replace(/<[^>]+>/g, ' ')
          .replace(/\s+/g, ' ')
          .trim()
          .slice(0, 100)}`,
      )
      console.log(`  issuer:  ${cert.issuer.replace(/\n/g, ', ')}`)
      console.log(`  subject: ${cert.subjectAltName}`)
      console.log(`  serial:  ${cert.serialNumber}`)
      console.log(`  valid:   ${cert.validFrom} -> ${cert.validTo}`)
    }
    const port = pebble.tlsPort
    console.log(`\nPebble's root is in ${rootFile}. Try:`)
    for (const [name, path] of [
      ['app.demo.test', '/'],
      ['api.demo.test', '/v1/anything'],
    ]) {
      console.log(
        `  curl -v --http2 --cacert ${rootFile} --resolve ${name}:${port}:127.0.0.1 https://${name}:${port}${path}`,
      )
    }
    console.log(
      `  curl -i --resolve app.demo.test:${pebble.httpPort}:127.0.0.1 http://app.demo.test:${pebble.httpPort}/x?y=1   (308 to HTTPS)`,
    )
    console.log(
      `  curl -s --cacert ${rootFile} --resolve app.demo.test:${port}:127.0.0.1 https://app.demo.test:${port}/.well-known/proxy-health`,
    )
    console.log('\nCtrl-C to stop.')
    await new Promise<void>((done) => {
      for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => done())
    })
    console.log('stopping...')
    await cleanup()
  } catch (err) {
    await cleanup().catch(() => {})
    throw err
  }
}

try {
  await run()
  process.exit(0)
} catch (err) {
  const message = (err as Error).message.split('\n')[0]
  console.log(CHECK ? `demo: FAILED ${message}` : `demo failed: ${(err as Error).stack ?? message}`)
  process.exit(1)
}
