// node --test: the alarm checks pass on template.yaml and name what is wrong
// in a template whose alarms watch a metric the code never emits, a
// function that does not exist, or leave a function unwatched.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const cfnParser = require('cfn-lint/lib/parser');
const { checkAlarms, emitted } = require('./check-alarms');

const root = path.join(__dirname, '..', '..');
const template = () => cfnParser.openFile(path.join(root, 'template.yaml'));

test('template.yaml passes', () => {
  assert.deepStrictEqual(checkAlarms(template(), root), []);
});

test('the code emits the metrics the alarms watch', () => {
  const code = emitted(root);
  assert.strictEqual(code.namespace, 'envjupyter');
  for (const name of ['Transitions', 'StartFailures', 'HostsLost', 'StartTimeouts']) assert.ok(code.names.has(name), name);
});

test('a broken template is refused with reasons', () => {
  const t = template();
  t.Resources.SilentHostsAlarm.Properties.MetricName = 'HostLost';
  t.Resources.ApiErrorsAlarm.Properties.Dimensions[0].Value = { Ref: 'NoSuchFunction' };
  delete t.Resources.ReaperLogGroup;
  const problems = checkAlarms(t, root).join('\n');
  assert.match(problems, /SilentHostsAlarm: envjupyter\/HostLost is not a metric the code emits/);
  assert.match(problems, /ApiErrorsAlarm: its FunctionName must refer to a AWS::Serverless::Function/);
  assert.match(problems, /ApiFunction: no alarm on its Errors/);
  assert.match(problems, /ReaperFunction: no log group/);
  assert.match(problems, /no alarm on envjupyter\/HostsLost/);
});
