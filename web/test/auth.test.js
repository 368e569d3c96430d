import { describe, expect, it, vi } from 'vitest'
import { loadIdentity, pickEnvironment } from '../src/auth.js'

describe('loadIdentity', () => {
  it('reads dev-identity.json', async () => {
    const fetch = vi.fn(async () => new Response('{"customer_id":"cust-demo","token":"t","environments":["env-demo",3,""]}'))
    await expect(loadIdentity(fetch)).resolves.toEqual({ customerId: 'cust-demo', token: 't', environments: ['env-demo'] })
    expect(fetch.mock.calls[0][0]).toBe('./dev-identity.json')
  })
  it('falls back to no identity when the file is missing, broken or unreachable', async () => {
    const none = { customerId: '', token: '', environments: [] }
    await expect(loadIdentity(async () => new Response('not found', { status: 404 }))).resolves.toEqual(none)
    await expect(loadIdentity(async () => new Response('<html>'))).resolves.toEqual(none)
    await expect(loadIdentity(async () => { throw new TypeError('offline') })).resolves.toEqual(none)
  })
})

describe('pickEnvironment', () => {
  it('selects ?env= and adds it to the list', () => {
    expect(pickEnvironment(['env-demo'], '?env=env-b')).toEqual({ environments: ['env-demo', 'env-b'], selected: 'env-b' })
    expect(pickEnvironment(['env-demo', 'env-b'], '?env=env-b')).toEqual({ environments: ['env-demo', 'env-b'], selected: 'env-b' })
  })
  it('defaults to the first environment', () => {
    expect(pickEnvironment(['env-demo', 'env-b'], '')).toEqual({ environments: ['env-demo', 'env-b'], selected: 'env-demo' })
    expect(pickEnvironment([], '')).toEqual({ environments: [], selected: '' })
  })
  it('ignores an invalid ?env=', () => {
    expect(pickEnvironment(['env-demo'], '?env=../x')).toEqual({ environments: ['env-demo'], selected: 'env-demo' })
  })
})
