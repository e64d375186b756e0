// The proxies under test and the shared upstream. Each peer is started pinned to the proxy core with the same
// certificate and the same upstream, limited to one worker/thread, with access logs off and keep-alive to the
// upstream on; start() resolves once a TLS handshake on its port succeeds and reports what was negotiated.
import { mkdir, writeFile } from 'node:fs/promises'
import { connect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { freePort } from '@autotls/pebble-harness'
import { type Child, LOAD_CORE, PROXY_CORE, startPinned } from './sys.js'

export interface CertFiles {
  kind: 'ecdsa' | 'rsa'
  cert: string
  key: string
  /** cert + key in one file (HAProxy). */
  combined: string
}

export interface Running {
  name: string
  port: number
  pid: number
  child: Child
  /** What a client negotiated in the readiness check. */
  tls: { protocol: string; cipher: string; alpn: string; key: string }
  stop(): Promise<void>
}

export const BODIES = { small: 64, '16k': 16 * 1024, '1m': 1024 * 1024 } as const
export type BodyName = keyof typeof BODIES

/** Waits until a TLS handshake (SNI localhost, offering h2 and http/1.1) succeeds on `port`. */
export async function waitForTls(port: number, child: Child, timeoutMs = 30_000): Promise<Running['tls']> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
      throw new Error(`exited before serving (${child.proc.exitCode ?? child.proc.signalCode}):\n${child.output()}`)
    }
    try {
      return await new Promise((resolve, reject) => {
        const socket = connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          rejectUnauthorized: false,
          ALPNProtocols: ['h2', 'http/1.1'],
        })
        socket.setTimeout(2000, () => socket.destroy(new Error('timeout')))
        socket.once('secureConnect', () => {
          const cert = socket.getPeerCertificate()
          const info = {
            protocol: socket.getProtocol() ?? '?',
            cipher: socket.getCipher().standardName,
            alpn: socket.alpnProtocol || 'none',
            key: cert.asn1Curve ? `EC ${cert.nistCurve ?? cert.asn1Curve}` : `RSA ${cert.bits ?? '?'}`,
          }
          socket.end()
          resolve(info)
        })
        socket.once('error', reject)
      })
    } catch (err) {
      last = (err as Error).message
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  throw new Error(`no TLS on port ${port} after ${timeoutMs} ms (${last}):\n${child.output()}`)
}

async function nginxDirs(dir: string): Promise<string> {
  for (const sub of ['logs', 'tmp']) await mkdir(`${dir}/${sub}`, { recursive: true })
  return [
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/logs/error.log warn;`,
    'events { worker_connections 8192; }',
  ].join('\n')
}

function nginxTemps(dir: string): string {
  return ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${dir}/tmp/${t};`).join('\n')
}

/** The shared upstream: nginx serving three static bodies over plain HTTP/1.1, pinned to the load core. */
export async function startUpstream(dir: string): Promise<{ port: number; child: Child; stop(): Promise<void> }> {
  await mkdir(`${dir}/www`, { recursive: true })
  for (const [name, size] of Object.entries(BODIES)) await writeFile(`${dir}/www/${name}`, Buffer.alloc(size, 'x'))
  const port = await freePort()
  const conf = `${await nginxDirs(dir)}
http {
  access_log off;
  ${nginxTemps(dir)}
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    root ${dir}/www;
  }
}
`
  await writeFile(`${dir}/nginx.conf`, conf)
  const child = startPinned(LOAD_CORE, 'nginx', ['-p', dir, '-c', `${dir}/nginx.conf`])
  const deadline = Date.now() + 10_000
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/small`).then(
      (r) => r.ok,
      () => false,
    )
    if (ok) break
    if (Date.now() > deadline) throw new Error(`upstream nginx did not start:\n${child.output()}`)
    await new Promise((r) => setTimeout(r, 100))
  }
  return { port, child, stop: () => child.stop() }
}

export interface PeerContext {
  /** Working folder for this peer's config files. */
  dir: string
  upstreamPort: number
  cert: CertFiles
}

export interface Peer {
  name: string
  start(ctx: PeerContext): Promise<Running>
}

async function finish(name: string, port: number, child: Child): Promise<Running> {
  try {
    const tls = await waitForTls(port, child)
    return { name, port, pid: child.pid, child, tls, stop: () => child.stop() }
  } catch (err) {
    await child.stop()
    throw new Error(`${name}: ${(err as Error).message}`)
  }
}

const nginx: Peer = {
  name: 'nginx',
  async start({ dir, upstreamPort, cert }) {
    await mkdir(dir, { recursive: true })
    const port = await freePort()
    const conf = `${await nginxDirs(dir)}
http {
  access_log off;
  ${nginxTemps(dir)}
  upstream up {
    server 127.0.0.1:${upstreamPort};
    keepalive 128;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:${port} ssl http2 backlog=4096;
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 100000000;
    http2_max_requests 100000000;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_buffers 16 64k;
      proxy_buffer_size 64k;
      proxy_max_temp_file_size 0;
    }
  }
}
`
    await writeFile(`${dir}/nginx.conf`, conf)
    return finish('nginx', port, startPinned(PROXY_CORE, 'nginx', ['-p', dir, '-c', `${dir}/nginx.conf`]))
  },
}

const haproxy: Peer = {
  name: 'HAProxy',
  async start({ dir, upstreamPort, cert }) {
    await mkdir(dir, { recursive: true })
    const port = await freePort()
    const conf = `global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:${port} ssl crt ${cert.combined} alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend be
backend be
  server up 127.0.0.1:${upstreamPort}
`
    await writeFile(`${dir}/haproxy.cfg`, conf)
    return finish('HAProxy', port, startPinned(PROXY_CORE, 'haproxy', ['-db', '-f', `${dir}/haproxy.cfg`]))
  },
}

const caddy: Peer = {
  name: 'Caddy',
  async start({ dir, upstreamPort, cert }) {
    await mkdir(dir, { recursive: true })
    const port = await freePort()
    const conf = `{
  admin off
  auto_https disable_redirects
  servers {
    protocols h1 h2
  }
}
https://localhost:${port} {
  bind 127.0.0.1
  tls ${cert.cert} ${cert.key}
  reverse_proxy 127.0.0.1:${upstreamPort} {
    transport http {
      keepalive 300s
      keepalive_idle_conns 256
      keepalive_idle_conns_per_host 256
    }
  }
}
`
    await writeFile(`${dir}/Caddyfile`, conf)
    const env = {
      ...process.env,
      GOMAXPROCS: '1',
      XDG_DATA_HOME: `${dir}/data`,
      XDG_CONFIG_HOME: `${dir}/config`,
      HOME: dir,
    }
    return finish(
      'Caddy',
      port,
      startPinned(PROXY_CORE, 'caddy', ['run', '--config', `${dir}/Caddyfile`, '--adapter', 'caddyfile'], { env }),
    )
  },
}

export function nodePeer(
  name: string,
  script: string,
  extra: string[] = [],
  nodeFlags: string[] = [],
  cores: number | string = PROXY_CORE,
): Peer {
  const path = fileURLToPath(new URL(`../servers/${script}`, import.meta.url))
  return {
    name,
    async start({ upstreamPort, cert }) {
      const port = await freePort()
      const args = [
        // Extra V8/Node flags for the Node peers, for experiments (e.g. BENCH_NODE_FLAGS=--no-flush-bytecode).
        ...(process.env['BENCH_NODE_FLAGS'] ?? '').split(' ').filter((f) => f !== ''),
        ...nodeFlags,
        path,
        `--port=${port}`,
        `--upstream=http://127.0.0.1:${upstreamPort}`,
        `--cert=${cert.cert}`,
        `--key=${cert.key}`,
        ...extra,
      ]
      return finish(name, port, startPinned(cores, process.execPath, args, { keepOutput: false }))
    },
  }
}

export const PEERS: Record<string, Peer> = {
  nginx,
  haproxy,
  caddy,
  fastify: nodePeer('Fastify + http-proxy', 'fastify-plain.js'),
  preset: nodePeer('proxy-preset', 'proxy-preset.js'),
  floor: nodePeer('Node http2 + undici (no Fastify)', 'node-floor.js'),
  'preset-nopoll': nodePeer('proxy-preset (reload poll off)', 'proxy-preset.js', ['--poll=0']),
  'preset-accesslog': nodePeer('proxy-preset (access log on)', 'proxy-preset.js', ['--access-log=true']),
  // workers: 2 pinned to the proxy core like every peer (what the cluster costs), and on both cores (what it gains
  // when the load generator, on core 1, leaves room).
  'preset-workers2': nodePeer('proxy-preset (workers: 2, one core)', 'proxy-preset.js', ['--workers=2']),
  'preset-workers2-2cores': nodePeer(
    'proxy-preset (workers: 2, both cores)',
    'proxy-preset.js',
    ['--workers=2'],
    [],
    '0,1',
  ),
}
