// `@autotls/fastify-acme/internal`: helpers our own tests, the benchmark and @autotls/proxy-preset use. Not a
// stable API: names here may change in any release. Applications import from `@autotls/fastify-acme`.

export {
  type CertificateRecord,
  checkPair,
  inspectChain,
  parseRecord,
  recordDigest,
  recordSeal,
} from './certificate.js'
export { HTTP01_PREFIX } from './challenge-http.js'
export { ACME_TLS_ALPN, isChallengeHello } from './challenge-tls-alpn.js'
export { type ClientHelloInfo, type PeekResult, parseClientHello } from './client-hello.js'
export { clampRetryAfter, nextAttemptDelay, retryDelay } from './lifecycle/backoff.js'
export { LOAD_CONCURRENCY } from './lifecycle/load.js'
export { renewalTime, renewalWindow } from './lifecycle/renewal-policy.js'
export { canonicalName, normalizeServerName } from './names.js'
export { type ResolvedOptions, resolveOptions } from './options.js'
export { type Wiring, wiringOf } from './server.js'
// FileStorage is public too; here as well because internal.ts has no top-level code of its own: with
// `sideEffects: false`, a bundle of a storage-only test fixture keeps just the storage modules.
export { FileStorage } from './storage/file.js'
export { assertKey, directoryKey } from './storage/index.js'
