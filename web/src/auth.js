// Who the page acts as. In the platform's console the page gets the user's
// token from the platform session; the local stack serves dev-identity.json
// instead (the demo customer's token and environments). Without either the
// page still loads and shows that it has no identity.

/**
 * loadIdentity reads ./dev-identity.json; it falls back to an empty identity
 * when the file is missing or malformed.
 * @returns {Promise<{customerId: string, token: string, environments: string[]}>}
 */
export async function loadIdentity(fetchImpl = globalThis.fetch, url = './dev-identity.json') {
  const none = { customerId: '', token: '', environments: [] }
  // A platform embedding the page may hand the identity over directly.
  const injected = globalThis.window?.ENVJUPYTER_IDENTITY
  if (injected && typeof injected === 'object') return normalize(injected)
  try {
    const res = await fetchImpl(url, { cache: 'no-store' })
    if (!res.ok) return none
    return normalize(await res.json())
  } catch {
    return none
  }
}

function normalize(raw) {
  const envs = Array.isArray(raw?.environments) ? raw.environments.filter((e) => typeof e === 'string' && e) : []
  return {
    customerId: typeof raw?.customer_id === 'string' ? raw.customer_id : '',
    token: typeof raw?.token === 'string' ? raw.token : '',
    environments: envs,
  }
}

const ENV_ID = /^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$/

/**
 * pickEnvironment merges the ?env= query parameter into the environment list:
 * it returns the list (with the query's id added if new and valid) and the
 * selected id (the query's, else the first).
 */
export function pickEnvironment(environments, search) {
  const list = [...environments]
  const wanted = new URLSearchParams(search || '').get('env') || ''
  if (wanted && ENV_ID.test(wanted) && !list.includes(wanted)) list.push(wanted)
  const selected = wanted && list.includes(wanted) ? wanted : list[0] || ''
  return { environments: list, selected }
}
