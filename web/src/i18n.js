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
    passwordPlaceholder: '可选：另设登录密码',
    passwordHint: '访问链接无论是否设置密码都可直接打开；密码只用于 Jupyter 登录页。',
    allowedPlugins: '允许的插件：{list}',
    noPluginsAllowed: '没有可用的插件',
    noIdentity: '没有身份信息，页面无法调用 API。在平台控制台中打开本页，或在本地运行 make up。',
    noEnvironment: '没有可用的环境。用 ?env=<环境 ID> 打开本页。',
    startFailed: '启动失败',
    stopFailed: '停止失败',
    openFailed: '打开失败',
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
      queued: '排队中', preparing: '准备中', installing_plugins: '安装插件', launching: '启动进程', waiting_for_health: '等待就绪', routing: '配置路由',
    },
    reason_: {
      user: '用户停止', idle: '长时间空闲，已自动停止',
      environment_stopping: '环境正在停止', environment_stopped: '环境已停止', environment_deleted: '环境已删除',
      stopped: '已停止', stray: '清理残留实例', reaped: '已由平台结束',
      command_not_sent: '命令未送达主机', start_timeout: '启动超时', host_lost: '与主机失去联系',
      stop_timeout: '停止未获主机确认',
      stopped_before_start: '启动完成前已停止', container_not_running: '环境容器未运行',
      container_gone: '环境容器已停止或被删除', docker_error: '主机上的 Docker 出错',
      container_unresponsive: '环境容器内的检查未按时结束',
      no_jupyter_in_image: '环境镜像中没有 Jupyter', port_in_use: 'Jupyter 端口已被容器内其他程序占用',
      plugin_install_failed: '插件安装失败', launch_failed: '无法启动 Jupyter 进程',
      firewall_error: '无法配置端口转发', route_error: '无法写入访问路由',
      jupyter_exited: 'Jupyter 进程在启动时退出', sidecar_stopping: '主机代理在启动过程中停止',
      not_responding: 'Jupyter 无响应', jupyter_died: 'Jupyter 进程已退出，正在重启',
      jupyter_crashed: 'Jupyter 反复崩溃，已放弃重启',
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
    passwordPlaceholder: 'Optional: also allow this password',
    passwordHint: "The access link opens JupyterLab with or without a password; the password is for Jupyter's login page.",
    allowedPlugins: 'Allowed plugins: {list}',
    noPluginsAllowed: 'No plugins are available',
    noIdentity: 'No identity: the page cannot call the API. Open it from the platform console, or run make up locally.',
    noEnvironment: 'No environment to show. Open the page with ?env=<environment id>.',
    startFailed: 'Start failed',
    stopFailed: 'Stop failed',
    openFailed: 'Opening failed',
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
      queued: 'queued', preparing: 'preparing', installing_plugins: 'installing plugins', launching: 'launching', waiting_for_health: 'waiting for health', routing: 'routing',
    },
    reason_: {
      user: 'stopped by the user', idle: 'idle too long, stopped automatically',
      environment_stopping: 'the environment is stopping', environment_stopped: 'the environment stopped',
      environment_deleted: 'the environment was deleted',
      stopped: 'stopped', stray: 'stray instance cleaned up', reaped: 'ended by the platform',
      command_not_sent: 'the command did not reach the host', start_timeout: 'start timed out',
      host_lost: 'the host stopped reporting', stop_timeout: 'the host did not confirm the stop',
      stopped_before_start: 'stopped before the start finished', container_not_running: 'the environment container is not running',
      container_gone: 'the environment container stopped or was removed', docker_error: 'Docker failed on the host',
      container_unresponsive: 'a check in the environment container did not finish in time',
      no_jupyter_in_image: 'no Jupyter in the environment image', port_in_use: "another program in the container uses Jupyter's port",
      plugin_install_failed: 'a plugin could not be installed', launch_failed: 'the Jupyter process could not be started',
      firewall_error: 'the port forward could not be set up', route_error: 'the access route could not be written',
      jupyter_exited: 'the Jupyter process exited while starting', sidecar_stopping: 'the host agent stopped during the start',
      not_responding: 'Jupyter is not responding', jupyter_died: 'Jupyter exited and is being restarted',
      jupyter_crashed: 'Jupyter kept crashing; restarts gave up',
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
 * reasonLabel shows a status reason: reasons arrive as `code` or
 * `code: detail`; the code is translated, the detail (the system's own
 * words, e.g. pip's last line) is kept after it. Unknown codes show as they
 * are.
 */
export function reasonLabel(lang, reason) {
  if (!reason) return ''
  const text = String(reason)
  const i = text.indexOf(':')
  const code = (i < 0 ? text : text.slice(0, i)).trim()
  const detail = i < 0 ? '' : text.slice(i + 1).trim()
  const name = label(lang, 'reason', code)
  if (name === code) return text
  return detail ? `${name} (${detail})` : name
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
