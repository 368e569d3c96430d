// The HTTP API of envjupyter, as the console page calls it: same origin,
// `Authorization: Bearer <token>`, JSON in and out. Every failure becomes an
// ApiError whose message is the API's own `error.message` when it sent one.

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when no answer came
   * @param {string} code the API's error code, or a client-side one:
   *   network_error, bad_response, unauthorized, http_error
   * @param {string} message what to show the user
   * @param {string[]} [allowed] for plugin_not_allowed: the allowed plugins
   */
  constructor(status, code, message, allowed = []) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.allowed = allowed
  }
}

// Client-side error codes (not sent by the API); the page translates these.
export const CLIENT_CODES = ['network_error', 'bad_response', 'unauthorized', 'http_error']

/**
 * errorFromBody turns an error answer into an ApiError. It accepts the API's
 * `{"error":{"code","message"}}`, API Gateway's `{"message":"Unauthorized"}`,
 * and anything else (an HTML error page from a proxy, an empty body).
 */
export function errorFromBody(status, text) {
  let body = null
  try {
    body = text ? JSON.parse(text) : null
  } catch {
    body = null
  }
  if (body && typeof body === 'object') {
    const e = body.error
    if (e && typeof e === 'object' && typeof e.message === 'string' && e.message) {
      return new ApiError(status, String(e.code || 'http_error'), e.message,
        Array.isArray(e.allowed) ? e.allowed.map(String) : [])
    }
    if (typeof body.message === 'string' && body.message) {
      return new ApiError(status, status === 401 ? 'unauthorized' : 'http_error', body.message)
    }
  }
  if (status === 401) return new ApiError(401, 'unauthorized', 'unauthorized (HTTP 401)')
  return new ApiError(status, 'http_error', `the server answered HTTP ${status}`)
}

/**
 * parseResponse reads a fetch Response: the JSON body of a 2xx answer, or
 * throws an ApiError.
 */
export async function parseResponse(res) {
  let text = ''
  try {
    text = await res.text()
  } catch (err) {
    throw new ApiError(res.status, 'network_error', `reading the answer failed: ${err?.message || err}`)
  }
  if (!res.ok) throw errorFromBody(res.status, text)
  try {
    const data = JSON.parse(text)
    if (data && typeof data === 'object') return data
  } catch {
    // fall through
  }
  throw new ApiError(res.status, 'bad_response', `the server answered HTTP ${res.status} with a body that is not JSON`)
}

/** startBody builds the optional start body; null when there is nothing to send. */
export function startBody({ plugins = [], password = '' } = {}) {
  const body = {}
  const list = (plugins || []).map((p) => String(p).trim()).filter(Boolean)
  if (list.length) body.plugins = [...new Set(list)]
  if (password) body.password = password
  return Object.keys(body).length ? body : null
}

/**
 * createClient returns the calls of the API for one token.
 * @param {{token?: string, fetch?: typeof fetch, base?: string}} opts
 */
export function createClient({ token = '', fetch: fetchImpl = globalThis.fetch, base = '' } = {}) {
  async function call(method, path, body) {
    const headers = { Accept: 'application/json' }
    if (token) headers.Authorization = `Bearer ${token}`
    const init = { method, headers, cache: 'no-store' }
    if (body != null) {
      headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    let res
    try {
      res = await fetchImpl(base + path, init)
    } catch (err) {
      throw new ApiError(0, 'network_error', `the request failed: ${err?.message || err}`)
    }
    return parseResponse(res)
  }
  const env = (id) => `/api/environments/${encodeURIComponent(id)}/jupyter`
  return {
    status: (id) => call('GET', env(id)),
    start: (id, opts) => call('POST', `${env(id)}/start`, startBody(opts)),
    stop: (id) => call('POST', `${env(id)}/stop`),
    // The plugin names a start may ask for: {plugins: [...]}.
    plugins: () => call('GET', '/api/jupyter/plugins'),
  }
}

/**
 * createSequencer guards against answers arriving out of order: a status poll
 * sent before a stop must not overwrite the stop's answer. Call next() when
 * sending a request, and accept(n) when its answer comes: it is true only if
 * no later request's answer has been applied yet.
 */
export function createSequencer() {
  let issued = 0
  let applied = 0
  return {
    next: () => ++issued,
    accept(n) {
      if (n < applied) return false
      applied = n
      return true
    },
    // invalidate drops every answer to a request sent so far (e.g. on an
    // environment switch).
    invalidate() {
      applied = ++issued
    },
  }
}
