// @ts-check
// Peer: @autotls/proxy-preset with a manual certificate file for `localhost` and one route to the upstream, with
// the preset's defaults otherwise (HTTP/2 with HTTP/1.1 fallback, its default logger at info level: stdout goes to
// /dev/null in the benchmark). `--logger=false` turns the logger off; `--access-log=true` turns the access log on
// (one JSON line per request through that logger). `--workers=N` runs N workers under a node:cluster primary, as
// `autotls run` does with `workers: N` (the primary's pid is the peer's: the benchmark adds its workers' CPU).
// Plain JavaScript run by plain `node`, importing the package's build (dist/, as the `autotls` bin does):
// `npm run bench` builds first.
//
//   node bench/servers/proxy-preset.js --port=8443 --upstream=URL --cert=C --key=K
import { parseArgs } from 'node:util'
import { startProxy as startPreset } from '@autotls/proxy-preset'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    upstream: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    logger: { type: 'string' },
    impl: { type: 'string' },
    poll: { type: 'string' },
    'access-log': { type: 'string' },
    workers: { type: 'string' },
  },
})
const workers = Number(values.workers ?? 1)
const cluster = workers > 1 ? await import('@autotls/proxy-preset/internal') : undefined
if (cluster && !cluster.isWorker()) {
  process.exitCode = await cluster.runPrimary({ workers, signals: ['SIGTERM'], graceMs: 1000 })
  process.exit()
}
// --impl=PATH: another build of the preset (its dist/index.js), for before/after comparisons of a change.
/** @type {typeof startPreset} */
const startProxy = values.impl ? (await import(values.impl)).startProxy : startPreset

const proxy = await startProxy({
  ...(values.logger === 'false' ? { logger: false } : {}),
  https: { host: '127.0.0.1', port: Number(values.port) },
  http: false,
  certificates: [{ cert: String(values.cert), key: String(values.key), hosts: ['localhost'] }],
  routes: [{ host: 'localhost', upstream: String(values.upstream) }],
  ...(values.poll !== undefined ? { reload: { pollIntervalMs: Number(values.poll) } } : {}),
  ...(values['access-log'] === 'true' ? { accessLog: true } : {}),
  shutdown: { signals: ['SIGTERM'], graceMs: 1000 },
})
cluster?.serveAsWorker(proxy)
