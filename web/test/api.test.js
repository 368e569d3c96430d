import { describe, expect, it, vi } from 'vitest'
import { ApiError, createClient, createSequencer, errorFromBody, parseResponse, startBody } from '../src/api.js'

const response = (status, body, contentType = 'application/json') =>
  new Response(body, { status, headers: { 'Content-Type': contentType } })

describe('errorFromBody', () => {
  it("takes the API's error code, message and allowed list", () => {
    const e = errorFromBody(409, '{"error":{"code":"environment_not_running","message":"the environment is not running; start it first"}}')
    expect(e).toBeInstanceOf(ApiError)
    expect(e.status).toBe(409)
    expect(e.code).toBe('environment_not_running')
    expect(e.message).toBe('the environment is not running; start it first')
    const p = errorFromBody(400, '{"error":{"code":"plugin_not_allowed","message":"plugin \\"x\\" is not allowed","allowed":["jupyterlab-git"]}}')
    expect(p.allowed).toEqual(['jupyterlab-git'])
  })

  it("takes API Gateway's own {message} answers", () => {
    const e = errorFromBody(401, '{"message":"Unauthorized"}')
    expect(e.code).toBe('unauthorized')
    expect(e.message).toBe('Unauthorized')
    expect(errorFromBody(429, '{"message":"Too Many Requests"}').code).toBe('http_error')
  })

  it('survives a body that is not JSON', () => {
    const e = errorFromBody(502, '<html><body>502 Bad Gateway</body></html>')
    expect(e.code).toBe('http_error')
    expect(e.status).toBe(502)
    expect(e.message).toContain('502')
    expect(errorFromBody(500, '').message).toContain('500')
    expect(errorFromBody(401, '').code).toBe('unauthorized')
  })

  it('ignores JSON without a usable message', () => {
    expect(errorFromBody(500, '{"error":{"code":"x"}}').code).toBe('http_error')
    expect(errorFromBody(500, '[1,2]').code).toBe('http_error')
    expect(errorFromBody(500, 'null').code).toBe('http_error')
  })
})

describe('parseResponse', () => {
  it('returns the JSON of a 2xx answer', async () => {
    await expect(parseResponse(response(202, '{"status":"starting"}'))).resolves.toEqual({ status: 'starting' })
  })
  it('throws bad_response for a 2xx answer that is not JSON', async () => {
    await expect(parseResponse(response(200, '<html>console</html>', 'text/html'))).rejects.toMatchObject({ code: 'bad_response', status: 200 })
  })
  it("throws the API's error for an error answer", async () => {
    await expect(parseResponse(response(404, '{"error":{"code":"environment_not_found","message":"no such environment"}}')))
      .rejects.toMatchObject({ code: 'environment_not_found', message: 'no such environment', status: 404 })
  })
})

describe('createClient', () => {
  it('calls the API with the bearer token, same origin', async () => {
    const fetch = vi.fn(async () => response(200, '{"status":"not_started"}'))
    const c = createClient({ token: 'tok', fetch })
    await c.status('env-a')
    const [url, init] = fetch.mock.calls[0]
    expect(url).toBe('/api/environments/env-a/jupyter')
    expect(init.method).toBe('GET')
    expect(init.headers.Authorization).toBe('Bearer tok')
    expect(init.body).toBeUndefined()
  })

  it('sends a start body only when there are options', async () => {
    const fetch = vi.fn(async () => response(202, '{"status":"starting"}'))
    const c = createClient({ token: 'tok', fetch })
    await c.start('env-a', { plugins: [], password: '' })
    expect(fetch.mock.calls[0][1].body).toBeUndefined()
    await c.start('env-a', { plugins: ['jupyterlab-git', ' jupyterlab-git '], password: '' })
    const [url, init] = fetch.mock.calls[1]
    expect(url).toBe('/api/environments/env-a/jupyter/start')
    expect(init.method).toBe('POST')
    expect(init.headers['Content-Type']).toBe('application/json')
    expect(JSON.parse(init.body)).toEqual({ plugins: ['jupyterlab-git'] })
  })

  it('stops with a POST and no body', async () => {
    const fetch = vi.fn(async () => response(202, '{"status":"stopping"}'))
    await createClient({ token: 't', fetch }).stop('env-b')
    expect(fetch.mock.calls[0][0]).toBe('/api/environments/env-b/jupyter/stop')
    expect(fetch.mock.calls[0][1].method).toBe('POST')
  })

  it('asks for the allowed plugins', async () => {
    const fetch = vi.fn(async () => response(200, '{"plugins":["jupyterlab-git"]}'))
    expect(await createClient({ token: 't', fetch }).plugins()).toEqual({ plugins: ['jupyterlab-git'] })
    expect(fetch.mock.calls[0][0]).toBe('/api/jupyter/plugins')
    expect(fetch.mock.calls[0][1].method).toBe('GET')
  })

  it('omits Authorization without a token', async () => {
    const fetch = vi.fn(async () => response(401, '{"message":"Unauthorized"}'))
    await expect(createClient({ fetch }).status('e')).rejects.toMatchObject({ code: 'unauthorized', status: 401 })
    expect(fetch.mock.calls[0][1].headers.Authorization).toBeUndefined()
  })

  it('turns a network failure into network_error', async () => {
    const fetch = vi.fn(async () => { throw new TypeError('Failed to fetch') })
    const err = await createClient({ token: 't', fetch }).start('e').catch((e) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(err.code).toBe('network_error')
    expect(err.status).toBe(0)
    expect(err.message).toContain('Failed to fetch')
  })

  it('escapes the environment id in the path', async () => {
    const fetch = vi.fn(async () => response(200, '{}'))
    await createClient({ fetch }).status('a/b')
    expect(fetch.mock.calls[0][0]).toBe('/api/environments/a%2Fb/jupyter')
  })
})

describe('startBody', () => {
  it('keeps only what is set', () => {
    expect(startBody()).toBeNull()
    expect(startBody({ plugins: ['', '  '] })).toBeNull()
    expect(startBody({ password: 'pw' })).toEqual({ password: 'pw' })
    expect(startBody({ plugins: ['a', 'b', 'a'], password: 'pw' })).toEqual({ plugins: ['a', 'b'], password: 'pw' })
  })
})

describe('createSequencer', () => {
  it('drops an answer to an older request once a newer one was applied', () => {
    const s = createSequencer()
    const poll = s.next()
    const stop = s.next()
    expect(s.accept(stop)).toBe(true) // the stop answers first
    expect(s.accept(poll)).toBe(false) // the poll's older "running" is dropped
    const later = s.next()
    expect(s.accept(later)).toBe(true)
  })
  it('accepts answers in order', () => {
    const s = createSequencer()
    const a = s.next()
    const b = s.next()
    expect(s.accept(a)).toBe(true)
    expect(s.accept(b)).toBe(true)
  })
  it('invalidate drops everything in flight', () => {
    const s = createSequencer()
    const a = s.next()
    s.invalidate()
    expect(s.accept(a)).toBe(false)
    expect(s.accept(s.next())).toBe(true)
  })
})
