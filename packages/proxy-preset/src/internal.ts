// `@autotls/proxy-preset/internal`: helpers our own tests and the benchmark use. Not a stable API: names here may
// change in any release. Applications import from `@autotls/proxy-preset`.

export { planCertificates } from './certificates.js'
export {
  compileTrust,
  FORWARDING_HEADERS,
  type TrustFunction,
  upstreamRequestHeaders,
} from './forwarded.js'
export { endToEndCopy, HOP_BY_HOP, stripHopByHop } from './headers.js'
export { HostTable, parseRouteHost, requestHost, wildcardOf } from './hosts.js'
export { ManualCertificates, validatePair } from './manual-certs.js'
export { resolveProxyOptions } from './options.js'
export { httpsLocation } from './redirect.js'
export { pathProblem, VHOST_PREFIX } from './routes.js'
export { isWorker, runPrimary, serveAsWorker } from './workers.js'
