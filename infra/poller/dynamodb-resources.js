// CloudFormation resources for Kafka Ingress's DynamoDB tables, generated when serverless.yml
// is resolved from the single definition in adapter/store/tables.json (shipped inside the
// package; the poller's `init-tables`, the local stack and the tests read it as well).
// Table names are `<tablePrefix><logical name>`, the prefix the poller is configured with.
'use strict';

const path = require('path');
const fs = require('fs');

const TABLES = path.join(__dirname, '..', '..', 'adapter', 'store', 'tables.json');

function logicalId(name) {
  return `${name.charAt(0).toUpperCase()}${name.slice(1)}Table`;
}

function tableResources(prefix) {
  const definitions = JSON.parse(fs.readFileSync(TABLES, 'utf8'));
  const resources = {};
  for (const [name, spec] of Object.entries(definitions)) {
    if (name.startsWith('_')) continue;
    resources[logicalId(name)] = {
      Type: 'AWS::DynamoDB::Table',
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: { TableName: `${prefix}${name}`, ...spec },
    };
  }
  return { Resources: resources };
}

// Serverless Framework v3 `${file(...js)}` entry point.
module.exports = async ({ resolveVariable }) =>
  tableResources(await resolveVariable('param:tablePrefix'));
module.exports.tableResources = tableResources;
