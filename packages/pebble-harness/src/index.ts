// Public entry of @autotls/pebble-harness: real-ACME test infrastructure around Debian's Pebble.

export {
  type AcmeFront,
  type AcmeFrontOptions,
  DEFAULT_ARI_RETRY_AFTER_SECONDS,
  DEFAULT_PROFILES,
  RENEWAL_INFO_PATH,
  startAcmeFront,
} from './acme-front.js'
export { type Balancer, type BalancerOptions, startBalancer } from './balancer.js'
export {
  type Bind,
  type BindOptions,
  type BindTsigAlgorithm,
  type BindZone,
  DEFAULT_BIND_ZONES,
  startBind,
} from './bind.js'
export { type CaProxy, type CaProxyOptions, type CaProxyRule, startCaProxy } from './ca-proxy.js'
export { ariCertId, type CertIdParts, certIdFromParts, certIdParts, normalizeSerial } from './cert-id.js'
export { makeTestCertificates, type TestCertificateOptions, type TestCertificates } from './certs.js'
export { type ChallTestSrv, type ChallTestSrvOptions, startChallTestSrv } from './challtestsrv.js'
export type { FrontOrder, ReplacesProblem } from './order-book.js'
export { countOrders, type Pebble, type PebbleOptions, startPebble } from './pebble.js'
export { freePort, freePorts } from './ports.js'
export { isAlive } from './processes.js'
export { type RedisOptions, type RedisServer, startRedis } from './redis.js'
export { type AriScript, type AriWindow, defaultAriWindow, type IssuedCertificate } from './renewal-info.js'
