// Regression from the reliability suite (check 16): forwarding headers spelled with underscores (`X_Forwarded_For`)
// passed through, and CGI-style upstreams (PHP-FPM, WSGI, Rack) read them as X-Forwarded-For. Tested through
// upstreamRequestHeaders(), the function every proxied request's headers go through (routes.ts).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { upstreamRequestHeaders } from '../src/forwarded.js'

test('underscore spellings of forwarding headers are dropped for an untrusted peer', () => {
  const headers: Record<string, unknown> = {
    x_forwarded_for: '6.6.6.6',
    'x-forwarded_for': '6.6.6.7',
    x_real_ip: '6.6.6.8',
    x_forwarded_host: 'evil.example',
    x_forwarded_proto: 'http',
    x_custom_header: 'kept',
  }
  const upstream = upstreamRequestHeaders(headers, {
    peer: '127.0.0.1',
    secure: true,
    host: 'site.test',
    trusted: () => false,
  })
  assert.deepEqual(upstream, {
    x_custom_header: 'kept',
    'x-forwarded-for': '127.0.0.1',
    'x-real-ip': '127.0.0.1',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'site.test',
  })
})
