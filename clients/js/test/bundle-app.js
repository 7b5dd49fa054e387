// A tiny browser app over the installed package, bundled by esbuild and run in Chromium
// (tests/e2e/test_js_bundle.py): register, log in (cookie mode), subscribe, publish, receive.
import { GatewayClient } from "realtime-gateway-client";

const PASSWORD = "correct horse battery staple";
const params = new URLSearchParams(location.search);
const username = params.get("user");
const client = new GatewayClient({ authUrl: location.origin, wsUrl: params.get("ws") });
try {
  await client.register(username, PASSWORD);
  await client.login(username, PASSWORD);
  await client.subscribe("chat:lobby");
  const received = new Promise((resolve) => {
    client.addEventListener("message", ({ detail }) => resolve(detail), { once: true });
  });
  await client.publish("chat:lobby", { text: "bundled" });
  const { from_username: from, data } = await received;
  document.body.dataset.result = `${from}: ${data.text}`;
} catch (err) {
  document.body.dataset.result = `failed: ${err.message}`;
}
