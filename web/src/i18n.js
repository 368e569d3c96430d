// A tiny dictionary: the labels are Chinese like the product spec, English
// on request. Keys are dotted paths; a missing Chinese entry falls back to
// English, a missing English one to the key itself.

import { CLIENT_CODES } from './api.js'

export const LANGS = ['zh', 'en']

export const messages = {
  zh: {
    title: 'JupyterLab',
    subtitle: '在环境中运行 JupyterLab，一键打开',
    environment: '环境',
    chooseEnvironment: '选择环境',
    customer: '客户',
    status: '状态',
    stage: '阶段',
    elapsed: '已用时间',
    accessUrl: '访问地址',
    startedAt: '启动时间',
    stoppedAt: '停止时间',
    reason: '状态原因',
    lastActivity: '最近活动',
    kernels: '内核 / 连接',
    plugins: '插件',
    start: '启动 JupyterLab',
    open: '打开 JupyterLab',
    stop: '停止',
    refresh: '刷新',
    options: '启动选项（可选）',
    pluginsPlaceholder: '输入插件名后回车',
    password: '密码',
    passwordPlaceholder: '留空则使用带令牌的链接',
    allowedPlugins: '允许的插件：{list}',
    noIdentity: '没有身份信息，页面无法调用 API。在平台控制台中打开本页，或在本地运行 make up。',
    noEnvironment: '没有可用的环境。用 ?env=<环境 ID> 打开本页。',
    startFailed: '启动失败',
    stopFailed: '停止失败',
    refreshFailed: '刷新状态失败',
    nowRunning: 'JupyterLab 已就绪',
    nowStopped: 'JupyterLab 已停止',
    popupBlocked: '浏览器阻止了新标签页，请点击访问地址',
    switchLang: 'English',
    status_: {
      not_started: '未启动', starting: '启动中', running: '运行中', unhealthy: '异常',
      stopping: '停止中', stopped: '已停止', failed: '失败',
    },
    stage_: {
      queued: '排队中', preparing: '准备中', launching: '启动进程', waiting_for_health: '等待就绪', routing: '配置路由',
    },
    reason_: {
      user: '用户停止', stopped: '已停止', environment_stopped: '环境已停止', health_check_failed: '健康检查失败',
      no_jupyter: '环境中没有 Jupyter', exited: 'Jupyter 进程已退出', kill_failed: '无法结束 Jupyter 进程',
      command_not_sent: '命令未送达主机', start_timeout: '启动超时', stray: '清理残留实例', idle: '长时间空闲',
    },
    errors: {
      network_error: '网络错误',
      bad_response: '服务器的回答无法识别',
      unauthorized: '未授权：令牌无效或已过期',
      http_error: '请求失败',
    },
  },
  en: {
    title: 'JupyterLab',
    subtitle: 'JupyterLab in your environment, one click away',
    environment: 'Environment',
    chooseEnvironment: 'Choose an environment',
    customer: 'Customer',
    status: 'Status',
    stage: 'Stage',
    elapsed: 'Elapsed',
    accessUrl: 'Access URL',
    startedAt: 'Started at',
    stoppedAt: 'Stopped at',
    reason: 'Reason',
    lastActivity: 'Last activity',
    kernels: 'Kernels / connections',
    plugins: 'Plugins',
    start: 'Start JupyterLab',
    open: 'Open JupyterLab',
    stop: 'Stop',
    refresh: 'Refresh',
    options: 'Start options (optional)',
    pluginsPlaceholder: 'Type a plugin name, press Enter',
    password: 'Password',
    passwordPlaceholder: 'Leave empty to use the token link',
    allowedPlugins: 'Allowed plugins: {list}',
    noIdentity: 'No identity: the page cannot call the API. Open it from the platform console, or run make up locally.',
    noEnvironment: 'No environment to show. Open the page with ?env=<environment id>.',
    startFailed: 'Start failed',
    stopFailed: 'Stop failed',
    refreshFailed: 'Refreshing the status failed',
    nowRunning: 'JupyterLab is ready',
    nowStopped: 'JupyterLab stopped',
    popupBlocked: 'The browser blocked the new tab; use the access URL link',
    switchLang: '中文',
    status_: {
      not_started: 'not started', starting: 'starting', running: 'running', unhealthy: 'unhealthy',
      stopping: 'stopping', stopped: 'stopped', failed: 'failed',
    },
    stage_: {
      queued: 'queued', preparing: 'preparing', launching: 'launching', waiting_for_health: 'waiting for health', routing: 'routing',
    },
    reason_: {
      user: 'stopped by the user', stopped: 'stopped', environment_stopped: 'the environment stopped',
      health_check_failed: 'health check failed', no_jupyter: 'no Jupyter in the environment',
      exited: 'the Jupyter process exited', kill_failed: 'could not end the Jupyter process',
      command_not_sent: 'the command did not reach the host', start_timeout: 'start timed out',
      stray: 'stray instance cleaned up', idle: 'idle too long',
    },
    errors: {
      network_error: 'Network error',
      bad_response: 'Unrecognised answer from the server',
      unauthorized: 'Unauthorized: the token is invalid or expired',
      http_error: 'Request failed',
    },
  },
}

function lookup(dict, key) {
  let v = dict
  for (const part of key.split('.')) {
    if (v == null || typeof v !== 'object') return undefined
    v = v[part]
  }
  return typeof v === 'string' ? v : undefined
}

/** t looks a key up in a language, with {name} placeholders filled from vars. */
export function t(lang, key, vars = {}) {
  const s = lookup(messages[lang] || {}, key) ?? lookup(messages.en, key) ?? key
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m))
}

/** label translates an enum value (status, stage, reason); unknown values show as they are. */
export function label(lang, kind, value) {
  if (!value) return ''
  const key = `${kind}_.${value}`
  const s = t(lang, key)
  return s === key ? String(value) : s
}

/**
 * describeError is what the page shows for an ApiError: the API's own
 * message; for errors the client made up (no answer, unreadable answer) a
 * translated summary with the detail.
 */
export function describeError(lang, err) {
  if (!err) return ''
  const code = err.code || ''
  let text = err.message || String(err)
  if (CLIENT_CODES.includes(code)) {
    text = `${t(lang, `errors.${code}`)} (${text})`
  }
  if (code === 'plugin_not_allowed' && Array.isArray(err.allowed) && err.allowed.length) {
    text += ' — ' + t(lang, 'allowedPlugins', { list: err.allowed.join(', ') })
  }
  return text
}

/** initialLang: ?lang= wins, then the saved choice, then Chinese. */
export function initialLang(search, saved) {
  const q = new URLSearchParams(search || '').get('lang')
  if (LANGS.includes(q)) return q
  if (LANGS.includes(saved)) return saved
  return 'zh'
}
