// Starts the kono API from the api_build volume (/srv/api), where the maintainer's kono-deploy puts it.
// Until code is deployed there, it answers /api/health itself, so the stack is healthy from day one.
// Restarts on new code: when kono-deploy rewrites /srv/api/.deployed, this process exits and the
// restart policy starts it again on the new code. Logs go to stdout and to /var/log/api/api.log.
'use strict';
const fs = require('fs');
const http = require('http');

const app = '/srv/api/server.js';
const marker = '/srv/api/.deployed';
const logFile = '/var/log/api/api.log';

// As PID 1 node would ignore SIGTERM, and `docker stop` or a reboot would wait for the kill timeout.
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));

fs.mkdirSync('/var/log/api', { recursive: true });
const log = fs.createWriteStream(logFile, { flags: 'a' });
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write.bind(stream);
  stream.write = (chunk, ...rest) => { log.write(chunk); return write(chunk, ...rest); };
}

const deployedAt = fs.existsSync(marker) ? fs.readFileSync(marker, 'utf8') : '';
fs.watchFile(marker, { interval: 1000 }, () => {
  const now = fs.existsSync(marker) ? fs.readFileSync(marker, 'utf8') : '';
  if (now !== deployedAt) {
    console.log(`new code deployed (${now.trim()}), restarting`);
    log.end(() => process.exit(0));
  }
});

if (fs.existsSync(app)) {
  console.log(`starting ${app} (${deployedAt.trim() || 'no marker'})`);
  require(app);
} else {
  const port = Number(process.env.PORT || 3000);
  http.createServer((req, res) => {
    const ok = req.url === '/api/health';
    console.log(`${new Date().toISOString()} ${req.method} ${req.url} ${ok ? 200 : 404}`);
    res.writeHead(ok ? 200 : 404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(ok ? { status: 'ok', app: 'not deployed yet' } : { error: 'not found' }) + '\n');
  }).listen(port, () => console.log(`placeholder API on :${port}; no ${app} yet`));
}
