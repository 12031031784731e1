// The api container's main process: serves the API on PORT by handing each connection to the worker
// process that runs the active release, and swaps releases without dropping a request.
//
// Releases live in the api_build volume (/srv/api): releases/<id>/server.js, and `current`, a
// symlink to the release to run, which the maintainer's kono-deploy switches. When `current` changes:
// a new worker starts the new release on a spare port; only once it answers its health path does it get
// new connections; the old worker finishes what it is serving and stops. A release whose worker fails
// its health check never gets a connection: the old one keeps serving, and /srv/api/.kono-status
// says why (kono-deploy waits for that verdict). Until a release exists, a placeholder answers
// the health path, so the stack is healthy from day one.
//
// On a cluster, each replica has its own api_build volume: the releases service on the db node
// serves the maintainer's (files/api/releases.js), and this supervisor asks it every second which
// release is current, copies one it does not have, and points its own `current` at it, so that every
// replica follows kono-deploy. Each replica answers on its status port what it serves, and the verdict
// on the newest release it tried (kono-deploy asks them all).
//
// On SIGTERM (docker stop, a rollout replacing this container): stop accepting, so nginx sends new
// requests to another api container; finish what is in flight; linger a moment so nginx's resolver
// forgets this container's address; then stop. Logs go to stdout and to /var/log/api/api.log.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const { fork, spawn } = require('child_process');

const ROOT = process.env.KONO_API_ROOT || '/srv/api';
const CURRENT = path.join(ROOT, 'current');
const STATUS = path.join(ROOT, '.kono-status');
const LOG_FILE = path.join(process.env.KONO_API_LOG_DIR || '/var/log/api', 'api.log');
// The contract with compose and nginx comes from the environment only (kono/services.py, api_environment).
function required(name) {
  if (!process.env[name]) throw new Error(`${name} is not set (kono/services.py hands it to the api container)`);
  return process.env[name];
}
const PORT = Number(required('PORT'));
const WORKER_PORTS = required('KONO_API_WORKER_PORTS').split(' ').map(Number);
const HEALTH_PATH = required('KONO_API_HEALTH_PATH');
const HEALTH_TIMEOUT_MS = Number(required('KONO_API_HEALTH_TIMEOUT_MS'));
const DRAIN_TIMEOUT_MS = Number(required('KONO_API_DRAIN_TIMEOUT_MS'));
const LINGER_MS = Number(required('KONO_API_LINGER_MS'));  // > nginx's resolver `valid`
const STATUS_PORT = Number(required('KONO_API_STATUS_PORT'));
const RELEASES_URL = process.env.KONO_API_RELEASES_URL || '';  // a cluster's releases service; else none
const RELEASES_KEPT = Number(process.env.KONO_API_RELEASES_KEPT || 5);
const RELEASE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;  // as kono-deploy names them; nothing leaves releases/
const WORKER = path.join(__dirname, 'worker.js');

fs.mkdirSync(path.dirname(LOG_FILE), { recursive: true });
const logFile = fs.createWriteStream(LOG_FILE, { flags: 'a' });
function log(message) {
  const line = `${new Date().toISOString()} [supervisor] ${message}\n`;
  process.stdout.write(line);
  logFile.write(line);
}
function relay(stream, target) {  // a worker's output, to stdout (docker logs) and the log file
  stream.on('data', (chunk) => { target.write(chunk); logFile.write(chunk); });
}

function releaseOf(link) {  // the release `current` points at, or '' before the first one
  try {
    return path.resolve(ROOT, fs.readlinkSync(link));
  } catch {
    return '';
  }
}

let lastStatus = { release: '', state: 'starting' };

function writeStatus(status) {
  lastStatus = { ...status, at: new Date().toISOString() };
  const staged = `${STATUS}.new`;
  fs.writeFileSync(staged, JSON.stringify(lastStatus) + '\n');
  fs.renameSync(staged, STATUS);
}

// --- a cluster's replica: releases copied from the releases service ---------------------------

function get(url, timeoutMs) {  // the response of a GET, once its headers are in; rejects on errors
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: timeoutMs }, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        reject(new Error(`GET ${url}: ${response.statusCode}`));
      } else {
        resolve(response);
      }
    });
    request.on('timeout', () => request.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    request.on('error', reject);
  });
}

async function sourceCurrent() {
  const response = await get(`${RELEASES_URL}/current`, 5000);
  let body = '';
  for await (const chunk of response) body += chunk;
  return body.trim();
}

async function download(name, folder) {  // the release's tar, unpacked beside, then renamed into place
  const staging = path.join(ROOT, 'releases', `.${name}.partial`);
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true });
  const response = await get(`${RELEASES_URL}/releases/${name}.tar`, 30000);
  await new Promise((resolve, reject) => {
    const tar = spawn('tar', ['-x', '-C', staging], { stdio: ['pipe', 'ignore', 'pipe'] });
    let errors = '';
    tar.stderr.on('data', (chunk) => { errors += chunk; });
    response.on('error', (error) => { tar.kill(); reject(error); });
    response.on('aborted', () => { tar.kill(); reject(new Error('the release was cut short')); });
    tar.on('exit', (code) => (code === 0 && response.complete ? resolve()
      : reject(new Error(`unpacking ${name} failed: ${errors.trim() || `tar exited ${code}`}`))));
    response.pipe(tar.stdin);
  });
  fs.renameSync(staging, folder);
}

function pointCurrentAt(name) {  // as kono-deploy does: a new link renamed over the old one
  const staged = path.join(ROOT, '.current.new');
  fs.rmSync(staged, { force: true });
  fs.symlinkSync(path.join('releases', name), staged);
  fs.renameSync(staged, CURRENT);
}

function prune() {  // the newest RELEASES_KEPT copies, and the ones in use
  const keep = new Set([releaseOf(CURRENT), active ? active.release : ''].map((r) => path.basename(r)));
  const names = fs.readdirSync(path.join(ROOT, 'releases')).filter((n) => RELEASE_NAME.test(n)).sort().reverse();
  for (const name of names.slice(RELEASES_KEPT)) {
    if (!keep.has(name)) fs.rmSync(path.join(ROOT, 'releases', name), { recursive: true, force: true });
  }
}

let syncing = false;
let syncProblem = '';
async function sync() {  // this replica's `current` made the releases service's
  if (!RELEASES_URL || syncing || stopping) return;
  syncing = true;
  try {
    const name = await sourceCurrent();
    if (!name || path.basename(releaseOf(CURRENT)) === name) return;  // nothing yet, or followed already
    if (!RELEASE_NAME.test(name)) throw new Error(`the releases service names a release ${JSON.stringify(name)}`);
    const folder = path.join(ROOT, 'releases', name);
    if (!fs.existsSync(folder)) {
      log(`copying release ${name} from ${RELEASES_URL}`);
      await download(name, folder);
    }
    pointCurrentAt(name);
    prune();
    syncProblem = '';
  } catch (error) {
    if (error.message !== syncProblem) log(`releases from ${RELEASES_URL}: ${error.message}; trying again`);
    syncProblem = error.message;
  } finally {
    syncing = false;
  }
}

function probe(port) {  // one GET of the health path on a worker's own port: true when 2xx
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: HEALTH_PATH, timeout: 2000 }, (response) => {
      response.resume();
      resolve(response.statusCode >= 200 && response.statusCode < 300);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
  });
}

async function healthy(worker) {  // polls until healthy, the worker exits, or the time is up
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (worker.exited) return `its process exited (${worker.exited})`;
    if (await probe(worker.port)) return '';
    await new Promise((r) => setTimeout(r, 200));
  }
  return `GET ${HEALTH_PATH} did not answer 2xx within ${HEALTH_TIMEOUT_MS / 1000}s`;
}

function startWorker(release, port) {
  const child = fork(WORKER, [], {
    env: { ...process.env, PORT: String(port), KONO_RELEASE: release },
    silent: true,
  });
  const worker = { child, port, release, connections: new Set(), exited: '' };
  relay(child.stdout, process.stdout);
  relay(child.stderr, process.stderr);
  child.on('exit', (code, signal) => {
    worker.exited = signal || `code ${code}`;
    if (active === worker && !stopping) {
      log(`the worker of ${release || 'the placeholder'} exited (${worker.exited}); starting it again`);
      active = null;
      activate(release);
    }
  });
  return worker;
}

async function drain(worker) {  // no new connections reach it: wait for the open ones, then stop it
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (worker.connections.size > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  worker.child.kill('SIGTERM');
}

let active = null;   // the worker that gets new connections
let failed = '';     // the last release that failed its health check (not retried until `current` moves)
let switching = false;
let stopping = false;

async function activate(release) {
  switching = true;
  try {
    const port = WORKER_PORTS.find((p) => !active || active.port !== p);
    const worker = startWorker(release, port);
    const problem = await healthy(worker);
    if (problem) {
      worker.child.kill('SIGKILL');
      failed = release;
      log(`release ${release} failed its health check: ${problem}; ${active ? `still serving ${active.release}` : 'nothing to serve'}`);
      writeStatus({ release, state: 'failed', reason: problem, serving: active ? active.release : '' });
      return;
    }
    const old = active;
    active = worker;
    failed = '';
    log(`serving ${release || 'the placeholder (no release yet)'}`);
    writeStatus({ release, state: 'active' });
    if (old) drain(old);
  } finally {
    switching = false;
  }
}

function watch() {
  if (stopping || switching) return;
  const release = releaseOf(CURRENT);
  if (active && release === active.release) return;
  if (release && release === failed) return;
  activate(release);
}

const proxy = net.createServer((client) => {
  const worker = active;
  if (!worker) { client.destroy(); return; }
  const upstream = net.connect(worker.port, '127.0.0.1');
  worker.connections.add(client);
  const done = () => { worker.connections.delete(client); client.destroy(); upstream.destroy(); };
  client.on('error', done).on('close', done);
  upstream.on('error', done).on('close', done);
  client.pipe(upstream).pipe(client);
});

async function stop(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal}: no new connections; finishing those in flight`);
  proxy.close();
  const worker = active;
  if (worker) {
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    while (worker.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, LINGER_MS));
  if (worker) worker.child.kill('SIGTERM');
  log('stopped');
  logFile.end(() => process.exit(0));
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => stop(signal));

// What this replica serves, and the verdict on the newest release it tried, for kono-deploy.
http.createServer((request, response) => {
  response.writeHead(200, { 'Content-Type': 'application/json' });
  response.end(JSON.stringify({ ...lastStatus, serving: active ? active.release : '' }) + '\n');
}).listen(STATUS_PORT);

proxy.listen(PORT, async () => {
  log(`listening on :${PORT}; releases from ${CURRENT}${RELEASES_URL ? `, copied from ${RELEASES_URL}` : ''}`);
  await sync();  // a replica that starts (or starts again elsewhere) serves the current release first
  watch();
  setInterval(watch, 500);
  if (RELEASES_URL) setInterval(sync, 1000);
});
