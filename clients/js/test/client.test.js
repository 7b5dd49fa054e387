// The installed package in Node against the real stack (node --test; tests/system/test_js_client.py
// packs it, installs it into a fresh folder, starts the stack and passes its URLs here).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import WebSocket from "ws";
import { GatewayClient, GatewayError, actionFor } from "realtime-gateway-client";

const { GATEWAY_AUTH_URL: authUrl, GATEWAY_WS_URL: wsUrl, GATEWAY_CLOSE_CASES: closeCases } = process.env;
const PASSWORD = "correct horse battery staple";

async function newUser() {
  const username = `node-${randomUUID().slice(0, 8)}`;
  await new GatewayClient({ authUrl, wsUrl, WebSocket }).register(username, PASSWORD);
  return username;
}

/** What an app's backend does for its user: a login over REST, the access token handed over. */
async function backendToken(username) {
  const response = await fetch(`${authUrl}/v1/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).access_token;
}

function next(client, type, accept = () => true) {
  return new Promise((resolve) => {
    const listener = ({ detail }) => {
      if (!accept(detail)) return;
      client.removeEventListener(type, listener);
      resolve(detail);
    };
    client.addEventListener(type, listener);
  });
}

/** A WebSocket constructor that counts the sockets it opens. */
function countingWebSocket() {
  const opened = [];
  class Counting extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      opened.push(url);
    }
  }
  return { Counting, opened };
}

test("in Node, a password session keeps its refresh token in memory and touches no document", async () => {
  assert.equal(typeof document, "undefined");
  const username = await newUser();
  const client = new GatewayClient({ authUrl, wsUrl, WebSocket });
  await client.login(username, PASSWORD);
  assert.equal(client.state, "authenticated");
  assert.equal(client.user.username, username);
  await client.subscribe("chat:lobby", { presenceEvents: true });
  const arrived = next(client, "message", (m) => m.data.text === "from node");
  await client.publish("chat:lobby", { text: "from node" });
  assert.equal((await arrived).from_username, username);
  const members = await client.presence("chat:lobby");
  assert.ok(members.some((member) => member.user.username === username));
  const { publications } = await client.history("chat:lobby", { limit: 5 });
  assert.ok(publications.some((p) => p.data.text === "from node"));
  await client.refresh();
  await client.publish("chat:lobby", { text: "after a refresh" });
  await client.logout();
  assert.equal(client.state, "closed");
  await assert.rejects(client.refresh(), { code: "not_authenticated" });
});

test("getToken is asked for the first auth and for every renewal, on one socket", async () => {
  const username = await newUser();
  let calls = 0;
  const { Counting, opened } = countingWebSocket();
  const client = new GatewayClient({
    wsUrl,
    WebSocket: Counting,
    getToken: async () => {
      calls += 1;
      return backendToken(username);
    },
  });
  await client.connect();
  assert.equal(calls, 1);
  await next(client, "renewed");
  await next(client, "renewed");
  assert.equal(calls, 3);
  assert.equal(opened.length, 1);
  await client.subscribe(`user:${client.user.id}`);
  client.close();
});

test("the app's own fetch carries every call to auth_service", async () => {
  const username = await newUser();
  const calls = [];
  const fetchSpy = (url, init) => {
    calls.push(new URL(url).pathname);
    return fetch(url, init);
  };
  const client = new GatewayClient({ authUrl, wsUrl, WebSocket, fetch: fetchSpy, handshake: "ticket" });
  await client.login(username, PASSWORD);
  await client.logout({ everywhere: true });
  assert.deepEqual(calls, ["/v1/login", "/v1/ws-ticket", "/v1/logout"]);
});

test("a wrong URL rejects at once with one clear error, and nothing retries", async () => {
  const username = await newUser();
  const refused = `ws://127.0.0.1:${process.env.GATEWAY_REFUSED_PORT}/ws`;
  for (const [url, detail] of [
    [refused, "ECONNREFUSED"],
    [`${authUrl.replace("http", "ws")}/ws`, "Unexpected server response: 404"],
  ]) {
    const states = [];
    const client = new GatewayClient({ authUrl, wsUrl: url, WebSocket });
    client.addEventListener("state", ({ detail: { state } }) => states.push(state));
    await assert.rejects(client.login(username, PASSWORD), (err) => {
      assert.ok(err instanceof GatewayError);
      assert.equal(err.code, "unreachable");
      assert.match(err.message, new RegExp(`no WebSocket at ${url} \\(.*${detail}`));
      return true;
    });
    assert.deepEqual(states, ["connecting", "closed"]);
  }
  const wrongAuth = new GatewayClient({ authUrl: `http://127.0.0.1:${process.env.GATEWAY_REFUSED_PORT}`, wsUrl, WebSocket });
  await assert.rejects(wrongAuth.login(username, PASSWORD), { code: "unreachable" });
});

test("a close the table does not list is decided as the Python client decides it", () => {
  const cases = JSON.parse(closeCases);
  assert.ok(cases.length > 20);
  for (const [code, reason, action] of cases) assert.equal(actionFor(code, reason), action, `${code} ${reason}`);
});

test("without a WebSocket anywhere the constructor says what to pass", { skip: typeof globalThis.WebSocket === "function" }, () => {
  assert.throws(() => new GatewayClient({ wsUrl }), /the "ws" package/);
});
