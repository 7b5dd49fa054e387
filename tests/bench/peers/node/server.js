// Goal 9 peer: the in-band handshake of ws_service on Node's `ws` + `jsonwebtoken`.
// node server.js PORT PUBLIC_KEY_PEM ISSUER. Same frames as the bare aiohttp server: one
// `auth` frame verified as RS256 against the bench key, one reply; POST /push fans out.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const jwt = require("jsonwebtoken");
const { WebSocketServer } = require("ws");

const [port, keyPath, issuer] = process.argv.slice(2);
const publicKey = crypto.createPublicKey(fs.readFileSync(keyPath)); // parsed once, as a server would
const verifyOptions = { algorithms: ["RS256"], audience: "ws", issuer };
const sockets = new Set();

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/push") {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString());
      const frame = JSON.stringify({
        type: "message", channel: body.channel, data: body.data, from: null, ts: Date.now(),
      });
      for (const ws of sockets) ws.send(frame);
      res.writeHead(202, { "Content-Type": "application/json" }).end('{"published":true}');
    });
    return;
  }
  res.writeHead(200, { "Content-Type": "application/json" }).end('{"ready":true}');
});

const wss = new WebSocketServer({ server, path: "/ws", maxPayload: 65536 });
wss.on("connection", (ws) => {
  let user = null;
  ws.on("message", (data) => {
    let frame;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      ws.close(4400, "bad_request");
      return;
    }
    if (user === null && frame.type !== "auth") {
      ws.close(4401, "not_authenticated");
      return;
    }
    try {
      const claims = jwt.verify(frame.token, publicKey, verifyOptions);
      user = claims.sub;
      sockets.add(ws);
      ws.send(JSON.stringify({ type: "auth_success", user: { id: claims.sub }, session: claims.sid }));
    } catch {
      ws.send('{"type":"auth_error","code":"invalid_token"}');
      ws.close(4401, "invalid_token");
    }
  });
  ws.on("close", () => sockets.delete(ws));
});
server.listen(Number(port), "127.0.0.1", 1024);
