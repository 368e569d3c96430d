import { describe, expect, it } from 'vitest'
import { ApiError } from '../src/api.js'
import { describeError, initialLang, label, messages, reasonLabel, t } from '../src/i18n.js'
import reasons from '../src/reasons.json'

describe('t', () => {
  it('looks labels up in Chinese and English', () => {
    expect(t('zh', 'start')).toBe('启动 JupyterLab')
    expect(t('en', 'start')).toBe('Start JupyterLab')
    expect(t('zh', 'status_.running')).toBe('运行中')
  })
  it('falls back to English, then to the key', () => {
    expect(t('fr', 'stop')).toBe('Stop')
    expect(t('zh', 'no.such.key')).toBe('no.such.key')
  })
  it('fills placeholders', () => {
    expect(t('en', 'allowedPlugins', { list: 'a, b' })).toBe('Allowed plugins: a, b')
    expect(t('en', 'allowedPlugins')).toBe('Allowed plugins: {list}')
  })
  it('has the same keys in both languages', () => {
    const keys = (o, p = '') => Object.entries(o).flatMap(([k, v]) => (typeof v === 'object' ? keys(v, `${p}${k}.`) : [`${p}${k}`])).sort()
    expect(keys(messages.zh)).toEqual(keys(messages.en))
  })
})

describe('label', () => {
  it('translates statuses, stages and reasons, and shows unknown values as they are', () => {
    expect(label('zh', 'status', 'starting')).toBe('启动中')
    expect(label('en', 'status', 'not_started')).toBe('not started')
    expect(label('zh', 'stage', 'waiting_for_health')).toBe('等待就绪')
    expect(label('en', 'reason', 'user')).toBe('stopped by the user')
    expect(label('zh', 'reason', 'brand_new_reason')).toBe('brand_new_reason')
    expect(label('zh', 'stage', undefined)).toBe('')
  })
})

describe('reasonLabel', () => {
  // reasons.json is the Go list (shared/instance.Reasons); Go's
  // TestReasonsJSONIsTheList keeps it equal to it.
  it('has a label in both languages for every reason code the system emits', () => {
    expect(reasons.length).toBeGreaterThan(20)
    for (const code of reasons) {
      expect(messages.zh.reason_[code], `zh label of ${code}`).toBeTruthy()
      expect(messages.en.reason_[code], `en label of ${code}`).toBeTruthy()
    }
  })
  it('translates the code of `code: detail` and keeps the detail', () => {
    expect(reasonLabel('zh', 'start_timeout: no answer within 1m0s')).toBe('启动超时 (no answer within 1m0s)')
    expect(reasonLabel('en', 'host_lost: no report from host h1 for 5m0s')).toBe('the host stopped reporting (no report from host h1 for 5m0s)')
    expect(reasonLabel('zh', 'container_gone')).toBe('环境容器已停止或被删除')
    expect(reasonLabel('en', 'stop_timeout: user')).toBe('the host did not confirm the stop (user)')
  })
  it('shows unknown reasons as they are', () => {
    expect(reasonLabel('zh', 'brand_new: detail')).toBe('brand_new: detail')
    expect(reasonLabel('en', '')).toBe('')
  })
})

describe('describeError', () => {
  it("shows the API's message as it is", () => {
    const e = new ApiError(409, 'environment_not_running', 'the environment is not running; start it first')
    expect(describeError('zh', e)).toBe('the environment is not running; start it first')
  })
  it('translates client-side errors and keeps the detail', () => {
    const e = new ApiError(0, 'network_error', 'the request failed: Failed to fetch')
    expect(describeError('zh', e)).toBe('网络错误 (the request failed: Failed to fetch)')
    expect(describeError('en', e)).toBe('Network error (the request failed: Failed to fetch)')
  })
  it('lists the allowed plugins', () => {
    const e = new ApiError(400, 'plugin_not_allowed', 'plugin "x" is not allowed', ['jupyterlab-git', 'jupyterlab-lsp'])
    expect(describeError('en', e)).toBe('plugin "x" is not allowed — Allowed plugins: jupyterlab-git, jupyterlab-lsp')
  })
  it('handles plain errors and nothing', () => {
    expect(describeError('en', new Error('boom'))).toBe('boom')
    expect(describeError('en', null)).toBe('')
  })
})

describe('initialLang', () => {
  it('prefers ?lang=, then the saved choice, then Chinese', () => {
    expect(initialLang('?lang=en', 'zh')).toBe('en')
    expect(initialLang('?lang=xx', 'en')).toBe('en')
    expect(initialLang('', null)).toBe('zh')
  })
})
