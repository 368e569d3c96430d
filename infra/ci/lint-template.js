#!/usr/bin/env node
// Validates a CloudFormation/SAM template with cfn-lint from npm
// (martysweet/cfn-lint): YAML and intrinsic-function syntax, Ref/GetAtt/Sub
// targets and attributes, resource types, property names, required
// properties and value types, SAM Globals. Prints every finding and exits
// non-zero if there is any error or warning.
//
// Usage: node lint-template.js TEMPLATE
//
// cfn-lint's bundled SAM model predates some SAM features this project uses.
// Its checks on those are false positives ("invalid Type of
// AWS::Serverless::HttpApi", "ApiId is not a valid property of
// ...ApiEvent", "FunctionResponseTypes is not a valid property of
// ...SQSEvent", "unsupported SAM Globals property name: Architectures"), and
// the unknown HttpApi type made it stop before checking resource properties
// at all. Rather than ignore those messages, SAM_EXTENSIONS below teaches it
// the missing pieces from the SAM specification
// (https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-specification.html),
// so they are still checked: a misspelt or mistyped property in them is
// reported. Only what the template uses is added; using another newer SAM
// property will be reported until it is added here.
'use strict';

const cfnLint = require('cfn-lint');
const samData = require('cfn-lint/lib/samData');
const cfnParser = require('cfn-lint/lib/parser');
const path = require('path');
const { checkAlarms } = require('./check-alarms');

const str = { Required: false, PrimitiveType: 'String', UpdateType: 'Mutable' };
const bool = { Required: false, PrimitiveType: 'Boolean', UpdateType: 'Mutable' };
const int = { Required: false, PrimitiveType: 'Integer', UpdateType: 'Mutable' };
const json = { Required: false, PrimitiveType: 'Json', UpdateType: 'Mutable' };
const strList = { Required: false, Type: 'List', PrimitiveItemType: 'String', UpdateType: 'Mutable' };
const required = (p) => Object.assign({}, p, { Required: true });
const typed = (type, extra) => Object.assign({ Required: false, Type: type, UpdateType: 'Mutable' }, extra);

const SAM_EXTENSIONS = {
  ResourceTypes: {
    // https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-resource-httpapi.html
    'AWS::Serverless::HttpApi': {
      Documentation: 'https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-resource-httpapi.html',
      AdditionalProperties: false,
      Attributes: {},
      Properties: {
        AccessLogSettings: json,
        Auth: typed('HttpApiAuth'),
        CorsConfiguration: json,
        DefaultRouteSettings: json,
        DefinitionBody: json,
        DefinitionUri: json,
        Description: str,
        DisableExecuteApiEndpoint: bool,
        Domain: json,
        FailOnWarnings: bool,
        Name: str,
        PropagateTags: bool,
        RouteSettings: json,
        StageName: str,
        StageVariables: json,
        Tags: typed('Map', { PrimitiveItemType: 'String' }),
      },
    },
  },
  PropertyTypes: {
    // https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-httpapi-httpapiauth.html
    'AWS::Serverless::HttpApi.HttpApiAuth': {
      Properties: {
        Authorizers: typed('Map', { ItemType: 'HttpApiAuthorizer' }),
        DefaultAuthorizer: str,
        EnableIamAuthorizer: bool,
      },
    },
    // OAuth2 (JWT) and Lambda authorizers share this map; their properties:
    // sam-property-httpapi-oauth2authorizer.html, sam-property-httpapi-lambdaauthorizer.html
    'AWS::Serverless::HttpApi.HttpApiAuthorizer': {
      Properties: {
        AuthorizationScopes: strList,
        IdentitySource: str,
        JwtConfiguration: typed('JwtConfiguration'),
        AuthorizerPayloadFormatVersion: str,
        EnableFunctionDefaultPermissions: bool,
        EnableSimpleResponses: bool,
        FunctionArn: str,
        FunctionInvokeRole: str,
        Identity: json,
      },
    },
    'AWS::Serverless::HttpApi.JwtConfiguration': {
      Properties: {
        issuer: required(str),
        audience: required(strList),
      },
    },
    // https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-httpapi.html
    'AWS::Serverless::Function.HttpApiEvent': {
      Properties: {
        ApiId: str,
        Auth: json,
        Method: str,
        Path: str,
        PayloadFormatVersion: str,
        RouteSettings: json,
        TimeoutInMillis: int,
      },
    },
  },
};

function extendSAMModel() {
  const spec = samData.samResources20161031;
  Object.assign(spec.ResourceTypes, SAM_EXTENSIONS.ResourceTypes);
  Object.assign(spec.PropertyTypes, SAM_EXTENSIONS.PropertyTypes);

  // An event's Properties are matched to the candidate type sharing most
  // property names; HttpApiEvent goes after ApiEvent so a REST Api event
  // (Method and Path only) still resolves to ApiEvent.
  const candidates = spec.PropertyTypes['AWS::Serverless::Function.EventSource'].Properties.Properties.Type;
  const httpApi = 'EventSource#Properties<HttpApiEvent>';
  if (!candidates.includes(httpApi)) {
    candidates.splice(candidates.indexOf('EventSource#Properties<ApiEvent>') + 1, 0, httpApi);
  }

  // https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-sqs.html
  Object.assign(spec.PropertyTypes['AWS::Serverless::Function.SQSEvent'].Properties, {
    FunctionResponseTypes: strList,
    MaximumBatchingWindowInSeconds: int,
  });

  // https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-eventbridgerule.html
  Object.assign(spec.PropertyTypes['AWS::Serverless::Function.CloudWatchEventEvent'].Properties, {
    RetryPolicy: json,
  });

  // https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-resource-function.html
  // Architectures is missing. The others are modelled as unions of several
  // primitive types, which cfn-lint then leaves unchecked (MemorySize: lots
  // passed); their documented types make it check them.
  Object.assign(spec.ResourceTypes['AWS::Serverless::Function'].Properties, {
    Architectures: strList,
    Description: str,
    Handler: str,
    MemorySize: int,
    Runtime: str,
    Timeout: int,
    Tracing: str,
  });
  const globals = samData.samGlobals20161031.AllowedProperties.Function;
  if (!globals.includes('Architectures')) {
    globals.push('Architectures');
  }
}

function main(argv) {
  if (argv.length !== 1) {
    console.error('usage: lint-template.js TEMPLATE');
    return 2;
  }
  extendSAMModel();
  // cfn-lint's YAML parser hands js-yaml warnings (e.g. deficient
  // indentation) to console.error as whole exception objects: keep their
  // message only, and count them as problems.
  const yamlWarnings = [];
  const consoleError = console.error;
  console.error = (...args) => {
    if (args.length === 1 && args[0] instanceof Error) yamlWarnings.push(args[0].message);
    else consoleError(...args);
  };
  let result;
  try {
    result = cfnLint.validateFile(argv[0], {});
  } catch (err) {
    // The parser throws on unreadable files and YAML syntax errors.
    result = { error: err };
  } finally {
    console.error = consoleError;
  }
  for (const w of yamlWarnings) {
    console.error(`${argv[0]}: yaml: ${w}`);
  }
  if (result.error) {
    console.error(`${argv[0]}: ${result.error.message}`);
    return 1;
  }
  let problems = yamlWarnings.length;
  for (const level of ['crit', 'warn', 'info']) {
    for (const e of result.errors[level]) {
      if (level !== 'info') problems++;
      console.error(`${argv[0]}: ${level}: ${e.resource}: ${e.message}`);
    }
  }
  // The alarms and log groups, against the code (the repository holding
  // infra/ci) and the template's own resources.
  for (const p of checkAlarms(cfnParser.openFile(argv[0]), path.join(__dirname, '..', '..'))) {
    problems++;
    console.error(`${argv[0]}: alarms: ${p}`);
  }
  if (!result.templateValid || problems > 0) {
    console.error(`${argv[0]}: invalid (${result.errors.crit.length} errors, ${result.errors.warn.length} warnings)`);
    return 1;
  }
  console.log(`${argv[0]}: valid`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
