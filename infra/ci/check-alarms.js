// Checks the template's alarms and log groups against the code and the
// template itself, which cfn-lint cannot: every function has a log group
// with a retention and an Errors alarm; every dead-letter queue has a depth
// alarm; failing starts and silent hosts are watched; and every alarm's
// metric is one the code emits (namespace and name, read from the Go
// sources' EMF calls) or an AWS metric of a resource this template defines.
'use strict';

const fs = require('fs');
const path = require('path');

// The AWS metrics alarms may use, with the dimension that names the
// resource, the resource type it must be, and how the template refers to it.
const AWS_METRICS = {
  'AWS/Lambda': { names: ['Errors', 'Throttles', 'Duration', 'Invocations', 'ConcurrentExecutions'], dimension: 'FunctionName', type: 'AWS::Serverless::Function', ref: (v) => v && v.Ref },
  'AWS/SQS': {
    names: ['ApproximateNumberOfMessagesVisible', 'ApproximateAgeOfOldestMessage', 'NumberOfMessagesSent'],
    dimension: 'QueueName', type: 'AWS::SQS::Queue',
    ref: (v) => v && Array.isArray(v['Fn::GetAtt']) && v['Fn::GetAtt'][1] === 'QueueName' && v['Fn::GetAtt'][0],
  },
};

/** emitted reads the EMF namespace and metric names from the Go sources under root. */
function emitted(root) {
  const names = new Set();
  let namespace = '';
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.') || e.name === 'node_modules') continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.go') && !e.name.endsWith('_test.go')) {
        const src = fs.readFileSync(p, 'utf8');
        for (const m of src.matchAll(/\{Name: "(\w+)", Value: [^}]*Unit: "/g)) names.add(m[1]);
        const ns = path.basename(dir) === 'emf' && src.match(/const Namespace = "([^"]+)"/);
        if (ns) namespace = ns[1];
      }
    }
  };
  walk(root);
  return { namespace, names };
}

/** metricsOf lists an alarm's metrics: {Namespace, MetricName, Dimensions}. */
function metricsOf(props) {
  if (props.MetricName) return [props];
  return (props.Metrics || []).filter((m) => m.MetricStat).map((m) => m.MetricStat.Metric);
}

function checkAlarms(template, root) {
  const problems = [];
  const resources = template.Resources || {};
  const ofType = (type) => Object.keys(resources).filter((id) => resources[id].Type === type);
  const code = emitted(root);
  if (!code.namespace || code.names.size === 0) {
    problems.push(`no EMF namespace or metrics found in the Go sources under ${root}`);
  }
  const alarms = ofType('AWS::CloudWatch::Alarm');
  const watched = []; // {namespace, name, target}
  for (const id of alarms) {
    const props = resources[id].Properties || {};
    const metrics = metricsOf(props);
    if (!metrics.length) problems.push(`${id}: the alarm watches no metric`);
    for (const m of metrics) {
      const aws = AWS_METRICS[m.Namespace];
      if (m.Namespace === code.namespace) {
        if (!code.names.has(m.MetricName)) {
          problems.push(`${id}: ${m.Namespace}/${m.MetricName} is not a metric the code emits (it emits ${[...code.names].join(', ')})`);
        }
        watched.push({ namespace: m.Namespace, name: m.MetricName });
      } else if (aws) {
        if (!aws.names.includes(m.MetricName)) problems.push(`${id}: ${m.Namespace}/${m.MetricName} is not a known metric`);
        const dim = (m.Dimensions || []).find((d) => d.Name === aws.dimension);
        const target = dim && aws.ref(dim.Value);
        if (!target || !resources[target] || resources[target].Type !== aws.type) {
          problems.push(`${id}: its ${aws.dimension} must refer to a ${aws.type} of this template`);
        }
        watched.push({ namespace: m.Namespace, name: m.MetricName, target });
      } else {
        problems.push(`${id}: namespace ${m.Namespace} is neither the code's (${code.namespace}) nor a known AWS one`);
      }
    }
  }
  const runbook = fs.readFileSync(path.join(root, 'docs', 'OPERATIONS.md'), 'utf8');
  for (const id of alarms) {
    if (!runbook.includes(id)) problems.push(`${id}: docs/OPERATIONS.md does not say what it means and what to do`);
  }
  const has = (namespace, name, target) => watched.some((w) => w.namespace === namespace && w.name === name && (target === undefined || w.target === target));

  for (const fn of ofType('AWS::Serverless::Function')) {
    if (!has('AWS/Lambda', 'Errors', fn)) problems.push(`${fn}: no alarm on its Errors`);
    const group = ofType('AWS::Logs::LogGroup').find((g) => {
      const p = resources[g].Properties || {};
      return p.LogGroupName && p.LogGroupName['Fn::Sub'] === `/aws/lambda/\${${fn}}` && p.RetentionInDays !== undefined;
    });
    if (!group) problems.push(`${fn}: no log group /aws/lambda/\${${fn}} with a RetentionInDays`);
  }
  for (const q of ofType('AWS::SQS::Queue')) {
    const isDLQ = ofType('AWS::SQS::Queue').some((o) => {
      const target = (((resources[o].Properties || {}).RedrivePolicy || {}).deadLetterTargetArn || {})['Fn::GetAtt'];
      return Array.isArray(target) && target[0] === q;
    });
    if (isDLQ && !has('AWS/SQS', 'ApproximateNumberOfMessagesVisible', q)) problems.push(`${q}: a dead-letter queue without a depth alarm`);
  }
  for (const [name, what] of [['StartFailures', 'failing starts'], ['StartTimeouts', 'starts past the timeout'], ['HostsLost', 'silent hosts']]) {
    if (!has(code.namespace, name)) problems.push(`no alarm on ${code.namespace}/${name} (${what})`);
  }
  return problems;
}

module.exports = { checkAlarms, emitted };
