import { startRig } from './fixtures/rig.js'

const rig = await startRig({ certificateValidityPeriod: 20 })
try {
  const inst = await rig.startInstances(1, {
    names: ['a.dbg.test'],
    storage: { lockTtlMs: 5000 },
    acme: { retryMinMs: 500, retryMaxMs: 2000 },
    logLevel: 'info',
  })
  await rig.cluster.waitFor((e) => e.event === 'certificate-issued' || e.event === 'order-failed', 30000, 'x')
  await new Promise((r) => setTimeout(r, 3000))
  console.log(rig.cluster.describe())
  console.log(
    'tls conns',
    [...rig.tls.connections],
    'refused',
    [...rig.tls.refused],
    rig.tls.dropped,
    'tlsPort',
    rig.pebble.tlsPort,
    inst.map((i) => i.httpsPort),
  )
  console.log(
    rig.pebble
      .logs()
      .split('\n')
      .filter((l) => /alpn|valid|connect/i.test(l))
      .slice(-10)
      .join('\n'),
  )
} finally {
  await rig.stop()
}
