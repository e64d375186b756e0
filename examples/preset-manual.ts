// Example: the proxy preset with manual certificate files. A throw-away CA and a certificate for the example's
// names are generated on the fly (with openssl) into a temporary folder; replacing those files while the proxy
// runs swaps the certificate without a restart. An upstream is started too, so the example works on its own:
//
//   node --import tsx --conditions=source examples/preset-manual.ts
//   curl --cacert <printed ca.pem> --resolve site.manual.test:8443:127.0.0.1 https://site.manual.test:8443/

import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { makeTestCertificates } from '@autotls/pebble-harness'
import { type ProxyHandle, startProxy } from '@autotls/proxy-preset'

export const NAMES = ['site.manual.test', '*.apps.manual.test']

export interface ManualExample {
  proxy: ProxyHandle
  /** PEM of the throw-away CA: trust it to reach the proxy. */
  ca: string
  certDir: string
  close(): Promise<void>
}

export async function main(opts: { httpsPort?: number; logger?: boolean } = {}): Promise<ManualExample> {
  const certDir = await mkdtemp(join(tmpdir(), 'preset-manual-'))
  const { caCert } = await makeTestCertificates({ names: NAMES, dir: certDir, days: 30 })
  const upstream: Server = createServer((req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end(`hello from the upstream: ${req.headers.host} ${req.url} via ${req.headers['x-forwarded-proto']}\n`)
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`

  const proxy = await startProxy({
    logger: opts.logger ?? true,
    https: { host: '127.0.0.1', port: opts.httpsPort ?? 8443 },
    http: false,
    certificates: [{ cert: join(certDir, 'cert.pem'), key: join(certDir, 'key.pem') }],
    shutdown: { signals: false },
    routes: [
      { host: 'site.manual.test', upstream: upstreamUrl },
      {
        host: '*.apps.manual.test',
        upstream: upstreamUrl,
        headers: { response: { set: { 'x-served-by': 'preset' } } },
      },
    ],
  })
  return {
    proxy,
    ca: caCert,
    certDir,
    close: async () => {
      await proxy.close()
      await new Promise<void>((resolve) => upstream.close(() => resolve()))
      await rm(certDir, { recursive: true, force: true })
    },
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const running = await main()
  const port = running.proxy.addresses().https.port
  console.log(`CA: ${join(running.certDir, 'ca.pem')}`)
  console.log(
    `try: curl --cacert ${join(running.certDir, 'ca.pem')} --resolve site.manual.test:${port}:127.0.0.1 https://site.manual.test:${port}/`,
  )
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void running.close())
}
