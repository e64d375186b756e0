// Issuance run: proxy-preset managing `--names` new names over ACME against the local Pebble (TLS-ALPN-01 on its
// HTTPS port, a fresh cache folder), preset defaults otherwise (logger at info level to /dev/null, concurrency 8).
// Prints one JSON line when every certificate is being served: times since the process started, and its CPU.
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { startProxy } from '@autotls/proxy-preset'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    directory: { type: 'string' },
    ca: { type: 'string' },
    cache: { type: 'string' },
    names: { type: 'string' },
    suffix: { type: 'string' },
    upstream: { type: 'string' },
  },
})
const names = Array.from({ length: Number(values.names) }, (_, i) => `i${i}.${values.suffix}`)
const started = performance.now()
const proxy = await startProxy({
  https: { host: '127.0.0.1', port: Number(values.port) },
  http: false,
  acme: {
    directory: values.directory!,
    termsOfServiceAgreed: true,
    caRoots: readFileSync(values.ca!, 'utf8'),
    cacheDir: values.cache!,
    names,
  },
  routes: [{ host: names[0]!, upstream: values.upstream! }],
  shutdown: { signals: ['SIGTERM'], graceMs: 1000 },
})
const listeningMs = performance.now() - started
let firstMs = 0
await Promise.all(
  names.map((name) =>
    proxy.acme!.waitForCertificate(name).then(() => {
      firstMs ||= performance.now() - started
    }),
  ),
)
const allMs = performance.now() - started
const cpu = process.cpuUsage()
process.stderr.write(
  `${JSON.stringify({
    done: true,
    names: names.length,
    sinceProcessStartMs: performance.now(),
    listeningMs,
    firstMs,
    allMs,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    orders: proxy.acme!.statuses().filter((s) => s.state === 'valid').length,
  })}\n`,
)
