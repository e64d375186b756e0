// Example: the proxy preset with ACME. Two sites, certificates from the CA for both names, HTTP redirected to HTTPS.
// This is the whole configuration an operator writes; the rest of the file only makes it testable.
//
//   node --import tsx examples/preset-acme.ts     (needs ports 443/80: see the package README, "Running unprivileged")
import { pathToFileURL } from 'node:url'
import { type ProxyHandle, type ProxyOptions, startProxy } from '@autotls/proxy-preset'

export function config(overrides: Partial<ProxyOptions> = {}): ProxyOptions {
  return {
    acme: { directory: 'letsencrypt-staging', termsOfServiceAgreed: true, contact: ['mailto:ops@example.com'] },
    routes: [
      { host: 'example.com', upstream: 'http://127.0.0.1:3000' },
      { host: 'api.example.com', path: '/v1', upstream: 'http://127.0.0.1:4000', websocket: true },
    ],
    ...overrides,
  }
}

export function main(overrides: Partial<ProxyOptions> = {}): Promise<ProxyHandle> {
  return startProxy(config(overrides))
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main()
