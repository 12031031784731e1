// The releases service (a cluster only): serves the api_build volume of the db node, where the
// maintainer's kono-deploy publishes API releases, read-only, to the api replicas on every node.
//   GET /current                the release `current` points at ("" before the first one)
//   GET /releases/<name>.tar    that release's files, as a tar stream
// Each replica's supervisor (start.js) asks for /current every second and copies a release it does
// not have yet. Only the stack's overlay network reaches it (no port is published).
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { spawn } = require('child_process');

const ROOT = process.env.KONO_API_ROOT || '/srv/api';
const PORT = Number(process.env.KONO_RELEASES_PORT);
if (!PORT) throw new Error('KONO_RELEASES_PORT is not set (kono/services.py hands it over)');
// A release's name as kono-deploy makes it (<UTC time>-<commit>): nothing that could leave releases/.
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function current() {
  try {
    return path.basename(fs.readlinkSync(path.join(ROOT, 'current')));
  } catch {
    return '';
  }
}

http.createServer((request, response) => {
  if (request.method !== 'GET') {
    response.writeHead(405).end();
    return;
  }
  if (request.url === '/current') {
    response.writeHead(200, { 'Content-Type': 'text/plain' }).end(current() + '\n');
    return;
  }
  const match = /^\/releases\/([^/]+)\.tar$/.exec(request.url);
  const folder = match && NAME.test(match[1]) ? path.join(ROOT, 'releases', match[1]) : '';
  if (!folder || !fs.existsSync(folder)) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { 'Content-Type': 'application/x-tar' });
  const tar = spawn('tar', ['-C', folder, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
  tar.stdout.pipe(response);
  // A tar cut short must not look whole: the connection is reset, and the replica retries.
  tar.on('exit', (code) => { if (code !== 0) response.destroy(); });
  response.on('close', () => tar.kill());  // done, or the replica went away
}).listen(PORT, () => console.log(`serving the releases of ${ROOT} on :${PORT}`));
