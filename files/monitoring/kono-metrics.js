// The metrics service: the stack's own metrics, in Prometheus's text format, written every
// KONO_METRICS_INTERVAL_SECONDS into KONO_METRICS_FILE, which node_exporter's textfile collector
// serves beside the host's (one endpoint, metrics_port). Read from the Docker engine (its socket,
// mounted read-only; on a single host the container has no network): each service's health and restarts, Docker's
// disk use; from the facts services write in their state volumes (mounted read-only): the last
// backup's, how far binary logs are shipped, whether certificate renewal fails; from the served
// certificate, its expiry; from the deploys' audit log (what was appended to it), the last deploy's
// end and result. On a cluster it runs on the db node, a manager: the swarm's nodes and tasks too
// (swarmSamples), and where Prometheus finds each node's node_exporter (nodeTargets, in
// KONO_METRICS_NODES_FILE). Only metrics the contract names (KONO_METRICS_CONTRACT, from kono/monitoring.py)
// are written: a sample it does not know fails the round. A failed round removes the file (stale values
// are never served) and leaves the container unhealthy (its healthcheck reads /tmp/kono-metrics.ok).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (kono/monitoring.py hands it over)`);
  return value;
}

// {name: {help, labels, kind}} -> the exposition text of `samples` ([{name, labels, value}]), each
// metric once with its HELP and TYPE, in the contract's order.
function render(contract, samples) {
  const lines = [];
  for (const [name, metric] of Object.entries(contract)) {
    const own = samples.filter((s) => s.name === name);
    if (own.length === 0) continue;
    lines.push(`# HELP ${name} ${metric.help}`, `# TYPE ${name} ${metric.kind}`);
    for (const sample of own) {
      const keys = Object.keys(sample.labels || {});
      if (keys.join(',') !== metric.labels.join(',')) {
        throw new Error(`${name}: labels ${keys.join(',') || 'none'}, the contract says ${metric.labels.join(',') || 'none'}`);
      }
      const labels = keys.map((k) => `${k}="${String(sample.labels[k]).replace(/[\\"]/g, '\\$&').replace(/\n/g, '\\n')}"`);
      lines.push(`${name}${labels.length ? `{${labels.join(',')}}` : ''} ${Number(sample.value)}`);
    }
  }
  const unknown = samples.filter((s) => !(s.name in contract)).map((s) => s.name);
  if (unknown.length) throw new Error(`not in the metrics contract: ${[...new Set(unknown)].join(', ')}`);
  return lines.join('\n') + '\n';
}

// The containers of the project (`docker inspect` of each) -> each declared service's health (1 when
// it has containers and every one runs, passing its healthcheck where it has one) and restarts.
function serviceSamples(services, inspected) {
  const samples = [];
  for (const service of services) {
    const own = inspected.filter((c) => c.Config.Labels['com.docker.compose.service'] === service);
    const healthy = own.length > 0 && own.every(runsHealthy);
    samples.push({ name: 'kono_service_healthy', labels: { service }, value: healthy ? 1 : 0 });
    samples.push({ name: 'kono_service_restarts_total', labels: { service }, value: own.reduce((n, c) => n + c.RestartCount, 0) });
  }
  return samples;
}

function runsHealthy(container) {
  return container.State.Running && (!container.State.Health || container.State.Health.Status === 'healthy');
}

// -- A cluster: the metrics service runs on the db node, a manager, and sees the swarm. --------------

const STACK_LABEL = 'com.docker.stack.namespace'; // what `docker stack deploy` labels its objects with

// The stack's services (`GET /services?status=true`) -> {service ID: its name in the tables}.
function stackServices(project, services) {
  return Object.fromEntries(services.map((s) => [s.ID, s.Spec.Name.startsWith(`${project}_`) ? s.Spec.Name.slice(project.length + 1) : s.Spec.Name]));
}

// A node's address as the swarm knows it (a manager's Status.Addr may be 0.0.0.0: its manager address then).
function nodeAddress(node) {
  const address = (node.Status || {}).Addr || '';
  if (address && address !== '0.0.0.0') return address;
  return ((node.ManagerStatus || {}).Addr || '').replace(/:[0-9]+$/, '');
}

// A task meant to run that runs: as kono/stack.py's parse_swarm_services counts them (status says the same).
function taskRuns(task) {
  return task.DesiredState === 'running' && (task.Status || {}).State === 'running';
}

// The swarm (`GET /nodes`, `/services?status=true`, `/tasks`) and the containers of the stack on this
// node -> each node's readiness; each service's running and desired tasks; the health of those of
// its tasks that run here (the db node's services; a task elsewhere is counted, not inspected); its
// restarts, which a swarm makes new tasks: `failed` counts those seen failing (taskFailures).
function swarmSamples(project, nodes, services, tasks, inspected, failed) {
  const names = stackServices(project, services);
  const samples = nodes.map((node) => (
    { name: 'kono_swarm_node_ready', labels: { node: nodeAddress(node) }, value: (node.Status || {}).State === 'ready' ? 1 : 0 }));
  const meant = new Set(tasks.filter((t) => t.DesiredState === 'running').map((t) => t.ID));
  for (const service of services) {
    const name = names[service.ID];
    const running = tasks.filter((t) => t.ServiceID === service.ID && taskRuns(t)).length;
    samples.push({ name: 'kono_swarm_service_replicas_running', labels: { service: name }, value: running });
    samples.push({ name: 'kono_swarm_service_replicas_desired', labels: { service: name }, value: (service.ServiceStatus || {}).DesiredTasks || 0 });
    samples.push({ name: 'kono_service_restarts_total', labels: { service: name }, value: failed[service.ID] || 0 });
    const here = inspected.filter((c) => c.Config.Labels['com.docker.swarm.service.id'] === service.ID
      && meant.has(c.Config.Labels['com.docker.swarm.task.id']));
    if (here.length) samples.push({ name: 'kono_service_healthy', labels: { service: name }, value: here.every(runsHealthy) ? 1 : 0 });
  }
  return samples;
}

// A counter of each service's tasks that failed (or were rejected) since the metrics service began:
// the swarm lists a service's last few tasks only, so each is counted once, when first seen failed;
// those failed before it began are not counted (a counter starts at 0). -> (tasks) => {service ID: n}.
function taskFailures() {
  let seen = null;
  const counts = {};
  return (tasks) => {
    const failed = tasks.filter((t) => ['failed', 'rejected'].includes((t.Status || {}).State));
    for (const task of failed) {
      if (seen !== null && !seen.has(task.ID)) counts[task.ServiceID] = (counts[task.ServiceID] || 0) + 1;
    }
    seen = new Set(failed.map((t) => t.ID));
    return { ...counts };
  };
}

// Every node's node_exporter as Prometheus reads it (file_sd_configs): its task's address on the
// stack's network, named by its node's address; only on nodes that are up (a dead node is NodeDown,
// not a scrape failing too).
function nodeTargets(project, nodes, services, tasks, network, port) {
  const exporter = Object.entries(stackServices(project, services)).find(([, name]) => name === 'node_exporter');
  const ready = Object.fromEntries(nodes.filter((n) => (n.Status || {}).State === 'ready').map((n) => [n.ID, nodeAddress(n)]));
  const targets = [];
  for (const task of tasks) {
    if (!exporter || task.ServiceID !== exporter[0] || !taskRuns(task) || !(task.NodeID in ready)) continue;
    const attached = (task.NetworksAttachments || []).find((a) => ((a.Network || {}).Spec || {}).Name === network);
    const address = attached && (attached.Addresses || [])[0];
    if (address) targets.push({ targets: [`${address.split('/')[0]}:${port}`], labels: { instance: ready[task.NodeID] } });
  }
  return targets.sort((a, b) => a.labels.instance.localeCompare(b.labels.instance));
}

// `GET /system/df` -> Docker's disk use by kind.
function diskSamples(df) {
  const sum = (items, size) => (items || []).reduce((n, item) => n + Math.max(0, size(item) || 0), 0);
  const kinds = {
    images: sum(df.Images, (i) => i.Size),
    containers: sum(df.Containers, (c) => c.SizeRw),
    volumes: sum(df.Volumes, (v) => v.UsageData && v.UsageData.Size),
    build_cache: sum(df.BuildCache, (b) => b.Size),
  };
  return Object.entries(kinds).map(([kind, value]) => ({ name: 'kono_docker_disk_bytes', labels: { kind }, value }));
}

// The "name value" lines a service leaves in its state volume (KONO_METRICS_FACTS: kono-backup.sh's
// /state/metrics), and the thresholds from the operator's settings (KONO_METRICS_CONSTANTS).
function factSamples(text) {
  return text.split('\n').filter((line) => line.trim()).map((line) => {
    const [name, value, ...rest] = line.trim().split(/\s+/);
    if (rest.length || value === undefined || Number.isNaN(Number(value))) throw new Error(`not "name value": ${line}`);
    return { name, labels: {}, value: Number(value) };
  });
}

// The certificate nginx serves (a PEM text, the chain after it) -> when it expires, for each DNS
// name it covers (its subject, without any).
function certificateSamples(pem) {
  const certificate = new crypto.X509Certificate(pem);
  const names = (certificate.subjectAltName || '').split(', ').filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4));
  const expiry = Date.parse(certificate.validTo) / 1000;
  if (Number.isNaN(expiry)) throw new Error(`certificate: an expiry Date cannot read: ${certificate.validTo}`);
  return (names.length ? names : [certificate.subject]).map((name) => (
    { name: 'kono_certificate_expiry_timestamp_seconds', labels: { name }, value: expiry }));
}

// The host's audit log (JSON lines: the deploys', kono/deploy_run.py, and the backup service's
// others) -> when the last deploy ended (a run closed by the next one, when it began) and whether it
// succeeded. A line that is not JSON (one being written) is passed over.
function deploySamples(text) {
  const deploys = text.split('\n').flatMap((line) => {
    try {
      const record = JSON.parse(line);
      return record && record.commit !== undefined && record.result !== undefined ? [record] : [];
    } catch (error) {
      return [];
    }
  });
  if (deploys.length === 0) return [];
  const last = deploys[deploys.length - 1];
  return [
    { name: 'kono_deploy_last_timestamp_seconds', labels: {}, value: Date.parse(last.finished || last.started) / 1000 },
    { name: 'kono_deploy_last_success', labels: {}, value: last.result === 'success' ? 1 : 0 },
  ];
}

// The audit log grows for the host's life: read whole once, then only what was appended since the
// round before (a line not yet ended waits for its end). A file that is shorter or another one (its
// inode) is read anew. -> a function giving the last deploy's samples each round.
function auditFollower(path) {
  let inode = null;
  let offset = 0;
  let pending = Buffer.alloc(0);
  let last = [];
  return () => {
    let fd;
    try {
      fd = fs.openSync(path, 'r');
    } catch (error) {
      if (error.code !== 'ENOENT') throw new Error(`${path}: ${error.message}`);
      inode = null;
      return [];
    }
    try {
      const stat = fs.fstatSync(fd);
      if (stat.ino !== inode || stat.size < offset) [inode, offset, pending, last] = [stat.ino, 0, Buffer.alloc(0), []];
      const appended = Buffer.alloc(stat.size - offset);
      let read = 0;
      while (read < appended.length) {
        const n = fs.readSync(fd, appended, read, appended.length - read, offset + read);
        if (n === 0) break;
        read += n;
      }
      offset += read;
      const text = Buffer.concat([pending, appended.subarray(0, read)]);
      const ended = text.lastIndexOf(0x0a) + 1;
      pending = text.subarray(ended);
      const found = deploySamples(text.subarray(0, ended).toString('utf8'));
      if (found.length) last = found;
      return last;
    } catch (error) {
      throw new Error(`${path}: ${error.message}`);
    } finally {
      fs.closeSync(fd);
    }
  };
}

function readOptional(path, samples) {  // samples(text) of the file at path; none when it is not there (yet)
  if (!path) return [];
  let text;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw new Error(`${path}: ${error.message}`);
  }
  try {
    return samples(text);
  } catch (error) {
    throw new Error(`${path}: ${error.message}`);
  }
}

function docker(path) {
  return new Promise((resolve, reject) => {
    const request = http.get({ socketPath: '/var/run/docker.sock', path, timeout: 20000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { body += chunk; });
      response.on('end', () => {
        if (response.statusCode !== 200) reject(new Error(`docker ${path}: HTTP ${response.statusCode}`));
        else resolve(JSON.parse(body));
      });
    });
    request.on('timeout', () => request.destroy(new Error(`docker ${path}: no answer in 20 s`)));
    request.on('error', reject);
  });
}

function query(filters) {
  return encodeURIComponent(JSON.stringify(filters));
}

// One round: the exposition text, and on a cluster the node_exporter targets.
async function collect(project, services, contract, files, constants, lastDeploy, cluster) {
  const label = cluster ? `${STACK_LABEL}=${project}` : `com.docker.compose.project=${project}`;
  const listed = await docker(`/containers/json?all=1&filters=${query({ label: [label] })}`);
  const inspected = await Promise.all(listed.map((c) => docker(`/containers/${c.Id}/json`)));
  const df = await docker('/system/df');
  const settled = Object.entries(constants).map(([name, value]) => ({ name, labels: {}, value }));
  let stack;
  let targets = null;
  if (!cluster) {
    stack = serviceSamples(services, inspected);
  } else {
    const [nodes, swarmServices, tasks] = await Promise.all([
      docker('/nodes'), docker(`/services?status=true&filters=${query({ label: [`${STACK_LABEL}=${project}`] })}`),
      docker('/tasks')]);
    const own = tasks.filter((t) => swarmServices.some((s) => s.ID === t.ServiceID));
    stack = swarmSamples(project, nodes, swarmServices, own, inspected, cluster.failed(own));
    targets = nodeTargets(project, nodes, swarmServices, own, cluster.network, cluster.port);
  }
  const text = render(contract, [
    ...stack, ...diskSamples(df),
    ...files.facts.flatMap((path) => readOptional(path, factSamples)),  // nothing written yet: a new host
    ...readOptional(files.certificate, certificateSamples), ...lastDeploy(),
    ...settled]);
  return { text, targets };
}

function writeAtomically(path, text) { // renamed into place: no reader sees half a file
  fs.writeFileSync(`${path}.new`, text, { mode: 0o644 });
  fs.renameSync(`${path}.new`, path);
}

async function main() {
  const file = env('KONO_METRICS_FILE');
  const interval = Number(env('KONO_METRICS_INTERVAL_SECONDS')) * 1000;
  const contract = JSON.parse(env('KONO_METRICS_CONTRACT'));
  const services = env('KONO_SERVICES').split(' ');
  const project = env('KONO_PROJECT');
  const files = {
    facts: (process.env.KONO_METRICS_FACTS || '').split(' ').filter(Boolean),
    certificate: process.env.KONO_METRICS_CERTIFICATE, // none without HTTPS
  };
  const lastDeploy = auditFollower(env('KONO_METRICS_AUDIT_LOG'));
  const constants = JSON.parse(env('KONO_METRICS_CONSTANTS'));
  const nodesFile = process.env.KONO_METRICS_NODES_FILE; // a cluster's only
  const cluster = nodesFile ? { failed: taskFailures(), network: env('KONO_METRICS_NETWORK'),
    port: Number(env('KONO_METRICS_NODE_EXPORTER_PORT')) } : null;
  let targetsWritten = null;
  for (;;) {
    try {
      const { text, targets } = await collect(project, services, contract, files, constants, lastDeploy, cluster);
      writeAtomically(file, text);
      const listed = targets && `${JSON.stringify(targets, null, 1)}\n`;
      if (listed && listed !== targetsWritten) { // Prometheus reads the file again at each change
        writeAtomically(nodesFile, listed);
        targetsWritten = listed;
      }
      fs.writeFileSync('/tmp/kono-metrics.ok', String(Date.now()));
    } catch (error) {
      console.error(`kono-metrics: ${error.message}`);
      fs.rmSync(file, { force: true });
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

if (require.main === module) {
  process.on('SIGTERM', () => process.exit(0));
  main();
}

module.exports = {
  render, serviceSamples, diskSamples, factSamples, certificateSamples, deploySamples, auditFollower,
  swarmSamples, taskFailures, nodeTargets, nodeAddress,
};
