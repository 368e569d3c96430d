import { describe, expect, it } from 'vitest'
import {
  POLL_INTERVAL_MS, accessPath, canStart, canStop, formatElapsed, formatTime, isUp, maskToken, nextPollDelay, openURL, phaseStart, tagType,
} from '../src/status.js'

describe('tagType', () => {
  it.each([
    ['starting', 'warning'],
    ['running', 'success'],
    ['stopping', 'info'],
    ['stopped', 'info'],
    ['failed', 'danger'],
    ['unhealthy', 'warning'],
    ['not_started', 'info'],
    ['something_new', 'info'],
    [undefined, 'info'],
  ])('%s → %s', (status, type) => {
    expect(tagType(status)).toBe(type)
  })
})

describe('nextPollDelay', () => {
  it('polls every second while starting or stopping', () => {
    expect(nextPollDelay('starting')).toBe(POLL_INTERVAL_MS)
    expect(nextPollDelay('stopping')).toBe(1000)
  })
  it('does not poll otherwise', () => {
    for (const s of ['running', 'unhealthy', 'stopped', 'failed', 'not_started', undefined]) {
      expect(nextPollDelay(s)).toBeNull()
    }
  })
  it('backs off after failed polls, up to 5 s', () => {
    expect(nextPollDelay('starting', 1)).toBe(2000)
    expect(nextPollDelay('starting', 2)).toBe(4000)
    expect(nextPollDelay('starting', 3)).toBe(5000)
    expect(nextPollDelay('starting', 30)).toBe(5000)
    expect(nextPollDelay('running', 3)).toBeNull()
  })
})

describe('buttons', () => {
  it('start only when nothing is active', () => {
    expect(['not_started', 'stopped', 'failed', undefined].every(canStart)).toBe(true)
    expect(['starting', 'running', 'unhealthy', 'stopping'].some(canStart)).toBe(false)
  })
  it('stop while starting or up; open while up', () => {
    expect(['starting', 'running', 'unhealthy'].every(canStop)).toBe(true)
    expect(['stopping', 'stopped', 'failed', 'not_started'].some(canStop)).toBe(false)
    expect(isUp('running') && isUp('unhealthy')).toBe(true)
    expect(isUp('starting')).toBe(false)
  })
})

describe('formatElapsed', () => {
  it.each([
    [0, '0:00'],
    [999, '0:00'],
    [7000, '0:07'],
    [65_000, '1:05'],
    [3_723_000, '1:02:03'],
    [-5000, '0:00'],
    [NaN, '0:00'],
  ])('%s ms → %s', (ms, text) => {
    expect(formatElapsed(ms)).toBe(text)
  })
})

describe('phaseStart', () => {
  it('a start counts from created_at', () => {
    expect(phaseStart({ status: 'starting', created_at: '2026-01-26T10:00:00Z' })).toBe(Date.parse('2026-01-26T10:00:00Z'))
    expect(phaseStart({ status: 'starting' })).toBeNull()
  })
  it('a stop counts from when the page saw it', () => {
    expect(phaseStart({ status: 'stopping', created_at: '2026-01-26T10:00:00Z' }, 1234)).toBe(1234)
  })
  it('nothing otherwise', () => {
    expect(phaseStart({ status: 'running', created_at: '2026-01-26T10:00:00Z' })).toBeNull()
    expect(phaseStart(null)).toBeNull()
  })
})

describe('formatTime', () => {
  it('formats a timestamp, passes junk through, and is empty for nothing', () => {
    expect(formatTime('2026-01-26T10:00:00Z', 'en-GB')).toMatch(/26\/01\/2026/)
    expect(formatTime('not a time')).toBe('not a time')
    expect(formatTime('')).toBe('')
    expect(formatTime(undefined)).toBe('')
  })
})

describe('openURL', () => {
  it('prefers the short-lived access link to the token URL', () => {
    expect(openURL({ access_url: 'http://h/env-a/?token=t', access_link: 'http://h/env-a/_access?t=x' })).toBe('http://h/env-a/_access?t=x')
    expect(openURL({ access_url: 'http://h/env-a/?token=t' })).toBe('http://h/env-a/?token=t')
    expect(openURL({})).toBe('')
    expect(openURL(null)).toBe('')
  })
})

describe('maskToken and accessPath', () => {
  const url = 'http://127.0.0.1:8080/env-demo/?token=0123456789abcdef'
  it('shortens the token for display only', () => {
    expect(maskToken(url)).toBe('http://127.0.0.1:8080/env-demo/?token=012345…')
    expect(maskToken('http://h/env-a/?x=1&token=abc')).toBe('http://h/env-a/?x=1&token=abc')
    expect(maskToken('http://h/env-a/')).toBe('http://h/env-a/')
    expect(maskToken('')).toBe('')
  })
  it('gives the path of an access URL', () => {
    expect(accessPath(url)).toBe('/env-demo/')
    expect(accessPath('not a url')).toBe('')
  })
})
