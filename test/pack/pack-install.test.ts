// Installability as a user gets it: pack every publishable package (`pnpm pack`, which applies publishConfig and
// runs the build through `prepack`), install the tarballs with npm into a scratch project outside the workspace,
// type-check an ESM and a CommonJS consumer with skipLibCheck false under NodeNext, Node16 and Bundler, and run
// both with plain `node`: the plugin example against the harness's Pebble (the harness is installed from its
// tarball too) and startProxy() with a certificate file, each answering a real HTTPS request; and the preset's
// `autotls` bin checks a good and a bad configuration file.
//
// The consumers live in ./consumer and are excluded from the workspace's type-check: they are checked here, with a
// user's compiler settings against the installed declarations.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CONSUMERS = fileURLToPath(new URL('./consumer', import.meta.url))
const TSC = createRequire(join(ROOT, 'package.json')).resolve('typescript/bin/tsc')

interface Run {
  stdout: string
  stderr: string
}

// pnpm and npm export their settings as npm_* variables to scripts; the scratch project must not inherit them
// (e.g. a lockfile or workspace setting of the run that started the suite).
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (!/^(npm_|pnpm_)/i.test(key)) env[key] = value
  return env
}

function run(cmd: string, args: string[], cwd: string, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { cwd, env: cleanEnv(), timeout: timeoutMs, maxBuffer: 32 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error)
          reject(new Error(`${cmd} ${args.join(' ')} failed in ${cwd}: ${error.message}\n${stdout}\n${stderr}`))
        else resolve({ stdout, stderr })
      },
    )
  })
}

async function publishable(): Promise<Array<{ dir: string; name: string }>> {
  const found = []
  for (const entry of (await readdir(join(ROOT, 'packages'))).sort()) {
    const pkg = JSON.parse(await readFile(join(ROOT, 'packages', entry, 'package.json'), 'utf8'))
    if (!pkg.private) found.push({ dir: join(ROOT, 'packages', entry), name: pkg.name as string })
  }
  return found
}

const since = (start: number) => `${((performance.now() - start) / 1000).toFixed(1)} s`

test('packed packages install with npm and work for ESM and CommonJS consumers', { timeout: 240_000 }, async (t) => {
  const started = performance.now()
  const scratch = await mkdtemp(join(tmpdir(), 'autotls-pack-'))
  t.after(() => rm(scratch, { recursive: true, force: true }))
  const tarballs = join(scratch, 'tarballs')
  const app = join(scratch, 'app')
  await mkdir(tarballs)
  await mkdir(app)

  // 1. Pack: pnpm replaces `workspace:` ranges and `exports` (publishConfig) in the tarball's package.json.
  const packages = await publishable()
  assert.deepEqual(packages.map((p) => p.name).sort(), [
    '@autotls/fastify-acme',
    '@autotls/pebble-harness',
    '@autotls/proxy-preset',
    '@autotls/storage-redis',
  ])
  for (const { dir } of packages) await run('pnpm', ['pack', '--pack-destination', tarballs], dir)
  const files = (await readdir(tarballs)).filter((f) => f.endsWith('.tgz')).sort()
  assert.equal(files.length, packages.length, `one tarball per package: ${files.join(', ')}`)
  for (const file of files) {
    const { stdout: listing } = await run('tar', ['-tzf', join(tarballs, file)], scratch)
    assert.match(listing, /^package\/LICENSE$/m, `${file} carries a LICENSE`)
    assert.match(listing, /^package\/dist\/index\.d\.ts$/m, `${file} carries declarations`)
    const { stdout: manifest } = await run('tar', ['-xzOf', join(tarballs, file), 'package/package.json'], scratch)
    const pkg = JSON.parse(manifest)
    assert.doesNotMatch(
      JSON.stringify(pkg.exports),
      /"source"|(?<!\.d)\.ts"/,
      `${file}: no source condition in exports`,
    )
    assert.doesNotMatch(manifest, /workspace:/, `${file}: no workspace: ranges`)
    for (const field of ['repository', 'homepage', 'bugs', 'keywords', 'license'])
      assert.ok(pkg[field], `${file} has ${field}`)
  }
  t.diagnostic(`packed ${files.length} tarballs in ${since(started)}`)

  // 2. Install into a project outside the workspace, as a user would (plus fastify for the plugin example and the
  // Node types the consumers are checked with, at the workspace's versions).
  const root = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))
  const acme = JSON.parse(await readFile(join(ROOT, 'packages/fastify-acme/package.json'), 'utf8'))
  const dependencies: Record<string, string> = {
    fastify: acme.devDependencies.fastify,
    '@types/node': root.devDependencies['@types/node'],
  }
  for (const [i, { name }] of packages.entries()) dependencies[name] = `file:../tarballs/${files[i]}`
  await writeFile(join(app, 'package.json'), `${JSON.stringify({ name: 'consumer', private: true, dependencies })}\n`)
  const installStart = performance.now()
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], app)
  t.diagnostic(`npm install in ${since(installStart)}`)

  // 3. Type-check the consumers against the installed declarations, skipLibCheck false.
  for (const file of ['esm-consumer.mts', 'cjs-consumer.cts']) await copyFile(join(CONSUMERS, file), join(app, file))
  const common = ['--strict', '--skipLibCheck', 'false', '--types', 'node', '--target', 'ES2022', '--noEmit']
  const checks: Array<[string, string, string]> = [
    ['esm-consumer.mts', 'NodeNext', 'NodeNext'],
    ['esm-consumer.mts', 'Node16', 'Node16'],
    ['esm-consumer.mts', 'ESNext', 'Bundler'],
    // require() of an ES module type-checks under NodeNext (TypeScript >= 5.8); Node16 predates require(esm).
    ['cjs-consumer.cts', 'NodeNext', 'NodeNext'],
  ]
  const checkStart = performance.now()
  await Promise.all(
    checks.map(([file, module, resolution]) =>
      run(process.execPath, [TSC, ...common, '--module', module, '--moduleResolution', resolution, file], app).catch(
        (error: Error) => {
          throw new Error(`${file} under moduleResolution ${resolution}: ${error.message}`)
        },
      ),
    ),
  )
  t.diagnostic(`type-checked ${checks.map(([f, , r]) => `${f}@${r}`).join(', ')} in ${since(checkStart)}`)

  // 4. Compile as a user's build would and run with plain node (no tsx, no source condition).
  const common2 = ['--strict', '--skipLibCheck', '--types', 'node', '--target', 'ES2022', '--module', 'NodeNext']
  await run(process.execPath, [TSC, ...common2, '--outDir', 'out', 'esm-consumer.mts', 'cjs-consumer.cts'], app)
  const runStart = performance.now()
  const [esm, cjs] = await Promise.all([
    run(process.execPath, ['out/esm-consumer.mjs'], app, 60_000),
    run(process.execPath, ['out/cjs-consumer.cjs'], app, 60_000),
  ])
  const esmReply = JSON.parse(esm.stdout.trim().split('\n').pop()!)
  assert.equal(esmReply.status, 200)
  assert.equal(esmReply.body, 'hello from the packed plugin')
  assert.match(esmReply.issuer, /Pebble/i, 'served the certificate Pebble issued')
  const cjsReply = JSON.parse(cjs.stdout.trim().split('\n').pop()!)
  assert.deepEqual(cjsReply, { status: 200, body: 'upstream saw cjs.consumer.test /x', subject: 'cjs.consumer.test' })
  assert.doesNotMatch(cjs.stderr, /ExperimentalWarning/, 'require() of the packages is not experimental on this Node')
  t.diagnostic(`consumers ran in ${since(runStart)}`)

  // 5. The `autotls` bin of the installed preset: a good file prints the plan, a bad one exits 1 naming the option.
  await writeFile(
    join(app, 'good.yaml'),
    'acme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\nroutes:\n  - host: packed.example.test\n    upstream: http://127.0.0.1:3000\n',
  )
  await writeFile(
    join(app, 'bad.yaml'),
    'acme: { directory: letsencrypt-staging, termsOfServiceAgreed: true }\nroutes:\n  - host: packed.example.test\n    upstream: 127.0.0.1:3000\n',
  )
  const bin = join(app, 'node_modules', '.bin', 'autotls')
  const good = await run(bin, ['check', '-c', 'good.yaml'], app)
  assert.match(good.stdout, /packed\.example\.test\/ +-> http:\/\/127\.0\.0\.1:3000/)
  assert.match(good.stdout, /good\.yaml: OK/)
  await assert.rejects(run(bin, ['check', '-c', 'bad.yaml'], app), (err: Error) => {
    assert.match(
      err.message,
      /bad\.yaml:4:5: FPROXY_INVALID_OPTIONS: routes\.0\.upstream: .*write "http:\/\/127\.0\.0\.1:3000"/,
    )
    assert.match(err.message, /exit code 1|Command failed/)
    return true
  })
  // ... and the CLI tests (`autotls check` on 5 good and 10 bad files; `autotls run` with ACME against Pebble and
  // files, status, reloads), run against that installed bin.
  const cliTests = ['cli-check', 'cli-run'].map((f) =>
    fileURLToPath(new URL(`../../packages/proxy-preset/test/${f}.test.ts`, import.meta.url)),
  )
  // A test run of its own (this one's NODE_TEST_CONTEXT would make it skip its files).
  const { NODE_TEST_CONTEXT: _context, ...parentEnv } = process.env
  const cliRun = await new Promise<{ code: number | null; out: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--conditions=source', '--test', '--test-concurrency=1', ...cliTests],
      { env: { ...parentEnv, AUTOTLS_CLI_BIN: bin }, timeout: 240_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    )
  })
  assert.equal(cliRun.code, 0, cliRun.out.slice(-3000))
  assert.match(cliRun.out, /# fail 0/)
  const passed = Number(/# pass (\d+)/.exec(cliRun.out)?.[1])
  assert.ok(passed >= 4, `${passed} CLI tests passed against the installed bin`)
  t.diagnostic(`CLI tests against the installed bin: ${passed} passed`)
  t.diagnostic(`whole test ${since(started)}`)
})
