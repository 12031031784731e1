// Starts the kono API from the api_build volume (/srv/api), where the maintainer deploys it.
// Until code is deployed there, it answers /api/health itself, so the stack is healthy from day one.
'use strict';
const fs = require('fs');
const http = require('http');

// As PID 1 node would ignore SIGTERM, and `docker stop` or a reboot would wait for the kill timeout.
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));

const app = '/srv/api/server.js';
if (fs.existsSync(app)) {
  require(app);
} else {
  const port = Number(process.env.PORT || 3000);
  http.createServer((req, res) => {
    const ok = req.url === '/api/health';
    res.writeHead(ok ? 200 : 404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(ok ? { status: 'ok', app: 'not deployed yet' } : { error: 'not found' }) + '\n');
  }).listen(port, () => console.log(`placeholder API on :${port}; no ${app} yet`));
}
