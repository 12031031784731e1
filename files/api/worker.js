// One worker of the api container (started by start.js): runs the release in $KONO_RELEASE on the
// private port $PORT, or, when there is none yet, a placeholder that answers $KONO_API_HEALTH_PATH.
// On SIGTERM it stops listening and exits once its open connections are done (start.js only
// stops a worker that no longer gets connections).
'use strict';
const http = require('http');
const path = require('path');

const servers = [];
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (...args) {  // remember the release's servers, to close them
  servers.push(this);
  return listen.apply(this, args);
};

process.on('SIGTERM', () => {
  let open = servers.length;
  if (open === 0) process.exit(0);
  for (const server of servers) server.close(() => { if (--open === 0) process.exit(0); });
  setTimeout(() => process.exit(0), 10000).unref();
});

// The supervisor is gone (killed, or its container stopped hard): so is this worker.
process.on('disconnect', () => process.exit(0));

const release = process.env.KONO_RELEASE;
if (release) {
  process.chdir(release);
  console.log(`${new Date().toISOString()} [worker ${process.pid}] starting ${release}`);
  require(path.join(release, 'server.js'));
} else {
  const port = Number(process.env.PORT);
  http.createServer((req, res) => {
    const ok = req.url === process.env.KONO_API_HEALTH_PATH;
    res.writeHead(ok ? 200 : 404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(ok ? { status: 'ok', app: 'not deployed yet' } : { error: 'not found' }) + '\n');
  }).listen(port, '127.0.0.1');
}
