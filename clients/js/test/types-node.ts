// The same package from a Node program typed by @types/node alone (no DOM library), with the ws
// package's WebSocket.
import WebSocket from "ws";
import { GatewayClient, type ChannelMessage } from "realtime-gateway-client";

export async function node(token: () => Promise<string>): Promise<ChannelMessage> {
  const dpop = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const client = new GatewayClient({ wsUrl: "ws://127.0.0.1:8082/ws", WebSocket, getToken: token, fetch, dpop });
  await client.connect();
  return new Promise((resolve) => client.addEventListener("message", ({ detail }) => resolve(detail), { once: true }));
}
