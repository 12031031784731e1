// A tiny stand-in for the kono API, for tests and the demo: a health route, and one route that reads
// from db_production with the api user's credentials (the password from its compose secret file).
'use strict';
const fs = require('fs');
const http = require('http');
const mysql = require('mysql2/promise');

const VERSION = 'v1';
const pool = mysql.createPool({
  host: process.env.DB_HOST,
  user: process.env.DB_USER,
  password: fs.readFileSync(process.env.DB_PASSWORD_FILE, 'utf8').trim(),
  database: process.env.DB_NAME,
  connectionLimit: 2,
});

async function route(url) {
  if (url === '/api/health') return [200, { status: 'ok', version: VERSION }];
  if (url === '/api/greeting') {
    const [rows] = await pool.query('SELECT message FROM greetings ORDER BY id DESC LIMIT 1');
    return [200, { message: rows.length ? rows[0].message : null, version: VERSION }];
  }
  return [404, { error: 'not found' }];
}

http.createServer(async (req, res) => {
  let status, body;
  try {
    [status, body] = await route(req.url);
  } catch (error) {
    [status, body] = [500, { error: error.code || 'error' }];
  }
  console.log(`${new Date().toISOString()} ${req.method} ${req.url} ${status}`);
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
}).listen(Number(process.env.PORT || 3000), () => console.log(`sample API ${VERSION} listening`));
