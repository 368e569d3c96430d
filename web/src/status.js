// Pure helpers for the card: what colour a status is, whether to poll, how
// long a start has been going, how to show an access URL.

export const POLL_INTERVAL_MS = 1000

const TAG_TYPES = {
  not_started: 'info',
  starting: 'warning',
  running: 'success',
  unhealthy: 'warning',
  stopping: 'info',
  stopped: 'info',
  failed: 'danger',
}

/** tagType is the el-tag type of a status; unknown statuses are 'info'. */
export function tagType(status) {
  return TAG_TYPES[status] || 'info'
}

/** transitional: the status changes by itself soon, so the page polls. */
export function isTransitional(status) {
  return status === 'starting' || status === 'stopping'
}

/** Jupyter is up (or was, for unhealthy): it can be opened and stopped. */
export function isUp(status) {
  return status === 'running' || status === 'unhealthy'
}

/** A start is possible: nothing is active in the environment. */
export function canStart(status) {
  return !status || status === 'not_started' || status === 'stopped' || status === 'failed'
}

/** A stop is possible: an instance is starting or up. */
export function canStop(status) {
  return status === 'starting' || isUp(status)
}

/**
 * nextPollDelay decides whether to poll again and when: every second while
 * the status is starting or stopping (a little slower after failed polls,
 * at most 5 s), never otherwise.
 * @returns {number|null} milliseconds, or null to stop polling
 */
export function nextPollDelay(status, consecutiveErrors = 0) {
  if (!isTransitional(status)) return null
  if (consecutiveErrors <= 0) return POLL_INTERVAL_MS
  return Math.min(POLL_INTERVAL_MS * 2 ** consecutiveErrors, 5000)
}

/**
 * phaseStart is when the current transitional phase began: a start from the
 * instance's created_at, a stop from the moment the page first saw it
 * stopping (the API has no stop-requested time).
 * @returns {number|null} epoch milliseconds
 */
export function phaseStart(instance, stoppingSeenAt = null) {
  if (!instance) return null
  if (instance.status === 'starting') {
    const t = Date.parse(instance.created_at || '')
    return Number.isNaN(t) ? null : t
  }
  if (instance.status === 'stopping') return stoppingSeenAt
  return null
}

/** formatElapsed shows a duration as 0:07, 1:05 or 1:02:03. */
export function formatElapsed(ms) {
  if (!Number.isFinite(ms) || ms < 0) ms = 0
  const total = Math.floor(ms / 1000)
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  const ss = String(s).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`
}

/** formatTime shows an API timestamp in the page's locale; '' if absent. */
export function formatTime(iso, locale) {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return String(iso)
  return d.toLocaleString(locale, {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  })
}

/**
 * maskToken shortens the token in an access URL for display (the link keeps
 * the full URL), so a screenshot or a shoulder does not carry it.
 */
export function maskToken(url) {
  if (!url) return ''
  return String(url).replace(/([?&]token=)([^&#]+)/, (_, k, tok) => k + (tok.length > 6 ? tok.slice(0, 6) + '…' : tok))
}

/**
 * openURL is where the open button takes the browser: the short-lived access
 * link when the deployment has link keys (it keeps Jupyter's token out of the
 * browser), else the token URL. Both land on the base URL, which Jupyter
 * redirects to its interface (lab on JupyterLab).
 */
export function openURL(instance) {
  return instance?.access_link || instance?.access_url || ''
}

/** accessPath is the path of an access URL (/env-<id>/), or ''. */
export function accessPath(url) {
  try {
    return new URL(url).pathname
  } catch {
    return ''
  }
}
