import { createApp } from 'vue'
import {
  ElAlert, ElButton, ElCard, ElCollapse, ElCollapseItem, ElConfigProvider,
  ElForm, ElFormItem, ElInput, ElLink, ElOption, ElSelect, ElTag,
} from 'element-plus'
import 'element-plus/dist/index.css'
import App from './App.vue'
import './style.css'

const app = createApp(App)
for (const c of [ElAlert, ElButton, ElCard, ElCollapse, ElCollapseItem, ElConfigProvider,
  ElForm, ElFormItem, ElInput, ElLink, ElOption, ElSelect, ElTag]) {
  app.use(c)
}
app.mount('#envjupyter-console')
