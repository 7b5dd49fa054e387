// Every option, method and event of the client, compiled by `tsc --strict` (no skipLibCheck) the
// way an application imports the installed package (tests/system/test_js_client.py).
import {
  DISCONNECTS,
  GatewayClient,
  GatewayError,
  actionFor,
  backoffDelay,
  type ChannelMessage,
  type CloseAction,
  type ConnectionState,
  type GatewayClientEventMap,
  type HistoryPage,
  type Member,
  type Position,
  type Subscribed,
  type TokenType,
  type User,
} from "realtime-gateway-client";

export async function everything(): Promise<string[]> {
  const seen: string[] = [];
  const client = new GatewayClient({
    authUrl: "http://127.0.0.1:8081",
    wsUrl: "ws://127.0.0.1:8082/ws",
    handshake: "ticket",
    getToken: async () => "token",
    fetch: (url, init) => fetch(url, init),
    WebSocket,
    connectTimeout: 15000,
    requestTimeout: 10000,
    authTimeout: 10000,
    maxPending: 1000,
  });
  const state: ConnectionState = client.state;
  const channels: string[] = client.channels;
  const user: User | null = client.user;
  const expiresAt: number | null = client.expiresAt;
  const tokenType: TokenType | null = client.tokenType;
  const thumbprint: string | null = await client.thumbprint();
  seen.push(state, ...channels, String(user?.username), String(expiresAt), String(tokenType), String(thumbprint));
  const bearer = new GatewayClient({ wsUrl: "ws://127.0.0.1:8082/ws", handshake: "bearer", dpop: false });
  const keyPair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const ownKey = new GatewayClient({ wsUrl: "ws://127.0.0.1:8082/ws", dpop: keyPair });
  seen.push(bearer.state, ownKey.state);

  const registered: User = await client.register("alice", "correct horse battery staple");
  await client.login(registered.username ?? "", "correct horse battery staple");
  await client.connect();
  const resumed: boolean = await client.resume();
  await client.refresh();
  const subscribed: Subscribed = await client.subscribe("chat:lobby", { presenceEvents: true });
  const position: Position | null = client.position("chat:lobby") ?? subscribed.position ?? null;
  const page: HistoryPage = await client.history("chat:lobby", { limit: 10, since: position ?? undefined });
  const members: Member[] = await client.presence("chat:lobby");
  await client.publish("chat:lobby", { text: "hi" });
  await client.unsubscribe("chat:lobby");
  await client.logout({ everywhere: true });
  client.close();
  seen.push(String(resumed), String(page.publications.length), String(members.length));

  const onMessage = (event: CustomEvent<ChannelMessage>): void => {
    seen.push(event.detail.channel, String(event.detail.from_username), String(event.detail.offset));
  };
  client.addEventListener("message", onMessage);
  client.removeEventListener("message", onMessage);
  client.addEventListener("state", ({ detail }) => seen.push(detail.state, String(detail.code)));
  client.addEventListener("renewed", ({ detail }) => seen.push(String(detail.expiresAt)));
  client.addEventListener("revoked", ({ detail }) => seen.push(detail.reason));
  client.addEventListener("error", ({ detail }) => seen.push(detail.code, String(detail.status)));
  client.addEventListener("join", ({ detail }) => seen.push(detail.type, detail.user.id));
  client.addEventListener("leave", ({ detail }) => seen.push(detail.channel));
  client.addEventListener("recovery", ({ detail }) => seen.push(String(detail.recovered), String(detail.count)));
  client.addEventListener("recovery", function (this: GatewayClient) { seen.push(this.state); }, { once: true });
  const generic: EventListener = (event: Event) => seen.push(event.type);
  client.addEventListener("something-else", generic);
  client.removeEventListener("something-else", generic, false);
  const typed: GatewayClientEventMap["join"] | null = null;
  const target: EventTarget = client;
  seen.push(String(typed), String(target));

  const action: CloseAction = actionFor(4401, "token_expired");
  const rows: ReadonlyArray<readonly [number, string, CloseAction]> = DISCONNECTS;
  const error = new GatewayError("unreachable", "no WebSocket", 404);
  seen.push(action, String(rows.length), error.code, String(error.status), String(backoffDelay(1)));
  return seen;
}
