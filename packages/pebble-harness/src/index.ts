// Public entry of @autotls/pebble-harness: real-ACME test infrastructure around Debian's Pebble.

export { type CaProxy, type CaProxyOptions, type CaProxyRule, startCaProxy } from './ca-proxy.js'
export { makeTestCertificates, type TestCertificateOptions, type TestCertificates } from './certs.js'
export { type ChallTestSrv, type ChallTestSrvOptions, startChallTestSrv } from './challtestsrv.js'
export { countOrders, type Pebble, type PebbleOptions, startPebble } from './pebble.js'
export { freePort } from './ports.js'
export { type RedisOptions, type RedisServer, startRedis } from './redis.js'
