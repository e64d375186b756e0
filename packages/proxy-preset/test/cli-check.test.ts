// `autotls check` as a user runs it (a real process): five good files (YAML and JSON, ACME, files, mixed, admin
// with a token from the environment) print the plan and exit 0; ten bad ones exit 1 with one line that names the
// file, the line and the option path, and says what to write instead.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type CertFiles, certFiles, runCli } from './helpers.js'

describe('autotls check', () => {
  let dir: string
  let certs: CertFiles
  let wild: CertFiles
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'autotls-check-'))
    certs = await certFiles(['files.example.test', 'www.files.example.test'])
    wild = await certFiles(['*.apps.example.test'])
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
    await certs?.remove()
    await wild?.remove()
  })

  const write = async (name: string, text: string) => {
    const file = join(dir, name)
    await writeFile(file, text)
    return file
  }

  test('five good files: exit 0 and the plan (listeners, routes, ACME names, files)', async () => {
    const good: Array<[string, () => string, RegExp[]]> = [
      [
        'acme.yaml',
        () => `# the shortest ACME configuration
acme:
  directory: letsencrypt-staging
  termsOfServiceAgreed: true
  contact: [mailto:ops@example.test]
routes:
  - host: example.test
    upstream: http://127.0.0.1:3000
  - host: www.example.test
    upstream: http://127.0.0.1:3000
`,
        [
          /https +\[::\]:443/,
          /http +\[::\]:80 +308 to https/,
          /ACME from https:\/\/acme-staging/,
          /^ {4}example\.test$/m,
        ],
      ],
      [
        'files.json',
        () =>
          JSON.stringify({
            https: { host: '127.0.0.1', port: 8443 },
            http: false,
            certificates: [{ cert: certs.cert, key: certs.key }],
            routes: [{ host: 'files.example.test', upstream: 'http://127.0.0.1:3000' }],
          }),
        [/https +127\.0\.0\.1:8443/, /http +off/, /ACME: none/, /files\.example\.test, www\.files\.example\.test/],
      ],
      [
        'mixed.yaml',
        () => `https: { port: 8443 }
http: { port: 8080, redirectPort: 443 }
admin: { port: 9190, token: "\${ADMIN_TOKEN}" }
acme:
  directory: https://acme.internal.example.test/directory
  termsOfServiceAgreed: true
  eab: { kid: "kid-1", hmacKey: "\${EAB_KEY}" }
certificates:
  - { cert: ${wild.cert}, key: ${wild.key} }
routes:
  - { host: api.example.test, upstream: [http://10.0.0.1:8080, http://10.0.0.2:8080], path: /v1, rewritePrefix: "" }
  - { host: "*.apps.example.test", upstream: http://127.0.0.1:5000, websocket: true }
`,
        [/admin +127\.0\.0\.1:9190 +bearer token/, /\*\.apps\.example\.test\//, /ACME from https:\/\/acme\.internal/],
      ],
      [
        'features.yaml',
        () => `https: { host: 127.0.0.1, port: 0, http2: false }
http: false
health: false
accessLog: true
defaultCertificate: { cert: ${certs.cert}, key: ${certs.key} }
routes:
  - host: app.example.test
    upstream: [http://127.0.0.1:3001, http://127.0.0.1:3002]
    timeouts: { connectMs: 2000, responseMs: 0 }
    headers: { request: { set: { x-env: prod } }, response: { remove: [server] } }
`,
        [
          /HTTP\/1\.1$/m,
          /app\.example\.test\/ +-> http:\/\/127\.0\.0\.1:3001, http:\/\/127\.0\.0\.1:3002/,
          /default certificate/,
          /access log: on/,
        ],
      ],
      [
        'ipv4.json',
        () =>
          JSON.stringify({
            trustedProxies: ['loopback', '10.0.0.0/8'],
            limits: { bodyBytes: 1048576, headersTimeoutMs: 10000 },
            http: { redirect: false },
            defaultCertificate: { cert: certs.cert, key: certs.key },
            routes: [{ host: '192.0.2.10', upstream: 'https://backend.example.test:8443' }],
          }),
        [/192\.0\.2\.10\/ +-> https:\/\/backend\.example\.test:8443/, /ACME HTTP-01/],
      ],
    ]
    const env = { ADMIN_TOKEN: 'an-admin-token-of-some-length', EAB_KEY: 'aGVsbG8td29ybGQ' }
    const results = await Promise.all(
      good.map(async ([name, text]) => runCli(['check', '-c', await write(name, text())], env)),
    )
    for (const [i, [name, , patterns]] of good.entries()) {
      const { code, stdout, stderr } = results[i]!
      assert.equal(code, 0, `${name}: ${stderr}`)
      assert.match(stdout, new RegExp(`${name}: OK`))
      for (const pattern of patterns) assert.match(stdout, pattern, `${name}:\n${stdout}`)
    }
    // --json is machine-readable.
    const json = await runCli(['check', '--json', '-c', join(dir, 'files.json')])
    assert.equal(json.code, 0)
    assert.deepEqual(JSON.parse(json.stdout).files[0].hosts, ['files.example.test', 'www.files.example.test'])
  })

  test('ten bad files: exit 1, one message naming file:line, the option path and the fix', async () => {
    const base = 'routes:\n  - host: app.example.test\n    upstream: http://127.0.0.1:3000\n'
    const bad: Array<[string, string, RegExp[]]> = [
      [
        'no-scheme.yaml',
        'acme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\nroutes:\n  - host: app.example.test\n    upstream: 127.0.0.1:3000\n',
        [/no-scheme\.yaml:4:5: /, /routes\.0\.upstream/, /write "http:\/\/127\.0\.0\.1:3000"/],
      ],
      [
        'host-port.yaml',
        `acme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\n${base}  - host: api.example.test:8443\n    upstream: http://127.0.0.1:4000\n`,
        [/host-port\.yaml:5:5: /, /routes\.1\.host/, /write "api\.example\.test"/, /https: \{ port: 8443 \}/],
      ],
      [
        'host-scheme.json',
        JSON.stringify(
          {
            acme: { directory: 'letsencrypt-staging', termsOfServiceAgreed: true },
            routes: [{ host: 'https://app.example.test', upstream: 'http://127.0.0.1:1' }],
          },
          null,
          2,
        ),
        [/host-scheme\.json:8:7: /, /routes\.0\.host/, /has no scheme; write "app\.example\.test"/],
      ],
      ['misspelt.yaml', `htps: { port: 8443 }\n${base}`, [/misspelt\.yaml:1:1: /, /htps/, /did you mean "https"/]],
      [
        'env.yaml',
        `admin: { token: "\${AUTOTLS_TEST_UNSET_TOKEN}" }\n${base}`,
        [/env\.yaml:1:10: /, /admin\.token/, /AUTOTLS_TEST_UNSET_TOKEN is not set/],
      ],
      ['syntax.yaml', `${base}  - host: [unclosed\n`, [/syntax\.yaml:5:1: /, /not valid YAML\/JSON/]],
      [
        'missing-file.yaml',
        `certificates:\n  - cert: /nonexistent/autotls/cert.pem\n    key: /nonexistent/autotls/key.pem\n${base}`,
        [/missing-file\.yaml:2:\d+: /, /certificates\.0/, /FPROXY_BAD_CERTIFICATE/, /nonexistent/],
      ],
      [
        'wildcard.yaml',
        `acme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\n${base}  - host: "*.example.test"\n    upstream: http://127.0.0.1:3000\n`,
        [/wildcard\.yaml:5:5: /, /routes\.1\.host/, /FPROXY_WILDCARD_NEEDS_CERTIFICATE/, /add a `certificates` entry/],
      ],
      [
        'duplicate.yaml',
        `acme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\n${base}${base.slice('routes:\n'.length)}`,
        [/duplicate\.yaml:5:5: /, /routes\.1/, /FPROXY_DUPLICATE_ROUTE/],
      ],
      [
        'port.yaml',
        `https:\n  port: 70000\nacme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\n${base}`,
        [/port\.yaml:2:3: /, /https\.port/, /less or equal to 65535/],
      ],
    ]
    const results = await Promise.all(bad.map(async ([name, text]) => runCli(['check', '-c', await write(name, text)])))
    for (const [i, [name, , patterns]] of bad.entries()) {
      const { code, stdout, stderr } = results[i]!
      assert.equal(code, 1, `${name} must be refused: ${stdout}`)
      assert.equal(stdout, '', `${name}: no plan printed`)
      const lines = stderr.trim().split('\n')
      assert.equal(lines.length, 1, `${name}: one line:\n${stderr}`)
      for (const pattern of patterns) assert.match(stderr, pattern, name)
    }
  })
})
