// Type declarations for gateway-client.js (docs/protocol.md is the wire contract). They compile
// under `tsc --strict` without skipLibCheck, with the DOM library (browsers, bundlers) or with
// @types/node alone.

export type CloseAction = "reconnect" | "refresh_then_reconnect" | "stop";
/** [code, reason, action] rows: the same table as protocol/realtime_gateway_protocol/close_codes.py. */
export declare const DISCONNECTS: ReadonlyArray<readonly [number, string, CloseAction]>;
/** The row's action; for a close the table does not list, stop if the code can mean stop, else reconnect. */
export declare function actionFor(code: number, reason: string): CloseAction;
/**
 * The delay before reconnect number `attempt` (from 0), in ms: full jitter, uniform in
 * [0, min(cap, base * 2^attempt)). The client counts attempts up until a connection has stayed
 * authenticated for 10 s, so a server that authenticates and then closes at once is backed off.
 */
export declare function backoffDelay(attempt: number, base?: number, cap?: number): number;

/**
 * The most bytes of one answer from auth_service the client reads (65536), counted decoded:
 * past it the body is cancelled and the call rejects with code "bad_response".
 */
export declare const MAX_ANSWER_BYTES: number;

export type ConnectionState = "connecting" | "authenticated" | "renewing" | "reconnecting" | "closed";
export type Handshake = "message" | "bearer" | "ticket";

/** What the client passes to `fetch`: the global one, or the app's own (`options.fetch`). */
export interface FetchInit {
  method: "POST";
  credentials: "include" | "same-origin";
  headers: Record<string, string>;
  body: string;
  /**
   * A redirect is never followed (it would post the password or the refresh token again, to
   * wherever it points): a 3xx, a browser's `opaqueredirect`, or an answer an app's own fetch
   * reached by following one (`redirected`) rejects with code "bad_response".
   */
  redirect: "manual";
  /** Aborts the request after `authTimeout`; an app's own fetch should pass it on. */
  signal: AbortSignal;
}

export type Fetch = (
  url: string,
  init: FetchInit,
) => Promise<{
  ok: boolean;
  status: number;
  /** `"opaqueredirect"` for a redirect a browser's fetch did not follow. */
  type?: string;
  /** true when the fetch followed a redirect: the answer is refused. */
  redirected?: boolean;
  /**
   * The body as a stream: read up to MAX_ANSWER_BYTES, then cancelled. An answer without one
   * (an app's fetch of its own making) is read with json(), which no cap bounds.
   */
  body?: {
    getReader(): {
      read(): Promise<{ done: boolean; value?: Uint8Array }>;
      cancel(reason?: unknown): Promise<void>;
    };
    cancel(reason?: unknown): Promise<void>;
  } | null;
  json(): Promise<unknown>;
  /** Read for `DPoP-Nonce` when the server sends one (RFC 9449 section 8). */
  headers?: { get(name: string): string | null };
}>;

/** What the client needs of a WebSocket: the browser's, Node 22's, or the ws package's. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number): void;
}

export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/**
 * A WebCrypto key pair (`CryptoKeyPair`) for DPoP: ECDSA P-256, from
 * `crypto.subtle.generateKey({name: "ECDSA", namedCurve: "P-256"}, false, ["sign", "verify"])`.
 */
export interface DPoPKeyPair {
  readonly privateKey: object;
  readonly publicKey: object;
}

export type TokenType = "DPoP" | "Bearer";

export interface GatewayClientOptions {
  /** auth_service's base URL: for register(), password sessions, the "ticket" handshake and logout(). */
  authUrl?: string;
  wsUrl: string;
  /** How the socket authenticates; the in-band `auth` message by default. Another value throws a TypeError. */
  handshake?: Handshake;
  /**
   * An access token the app obtained itself (e.g. through its backend): called for the first
   * `auth` and for every renewal. With it, open the socket with connect(); there is no login().
   */
  getToken?: () => Promise<string>;
  /** The fetch to call auth_service with; the global one by default. */
  fetch?: Fetch;
  /** The WebSocket constructor; the global one by default (Node 20: pass the ws package's). */
  WebSocket?: WebSocketConstructor;
  /**
   * DPoP-bound tokens (RFC 9449), on by default where WebCrypto exists: a proof of the client's
   * key with every call to auth_service and every `auth`. The key is non-extractable, kept in
   * IndexedDB in a browser (a reload keeps the binding), in memory elsewhere; or pass your own
   * key pair. `false`: bearer tokens, for environments without WebCrypto and for the "bearer"
   * handshake, which cannot carry a proof (it throws a TypeError without `dpop: false`).
   */
  dpop?: boolean | DPoPKeyPair;
  /**
   * Milliseconds from opening a socket to its `auth_success` (15000 by default). Past it the
   * socket is closed: the first connect() rejects (code "timeout", or the server's refusal if it
   * sent one); a reconnect backs off and tries again.
   */
  connectTimeout?: number;
  /** Milliseconds a request waits for its reply (10000 by default); then it rejects with code "timeout". */
  requestTimeout?: number;
  /**
   * Milliseconds each call to auth_service (register, login, a refresh, the ticket, logout) waits
   * for its answer (10000 by default); then the request is aborted and the call rejects with code
   * "timeout", so a stalled refresh holds the tabs' refresh lock no longer.
   */
  authTimeout?: number;
  /** Requests that may wait for a reply at once (1000 by default); one more rejects with code "too_many_pending". */
  maxPending?: number;
  /**
   * Milliseconds of silence from the server after which the client sends a protocol `ping`
   * (20000 by default; 0: never); no frame within half that again drops the socket and
   * reconnects, so a frozen server or a lost route is found in 1.5 heartbeats.
   */
  heartbeat?: number;
}

export interface User {
  id: string;
  username: string | null;
}

export interface Position {
  offset: number;
  epoch: string;
}

export interface ChannelMessage {
  type: "message";
  channel: string;
  data: unknown;
  from: string | null;
  from_username: string | null;
  ts: number;
  /** Present in channels with history. */
  offset?: number;
  epoch?: string;
}

export interface Subscribed {
  type: "subscribed";
  channel: string;
  /** The latest position, in channels with history. */
  position?: Position;
  /** "server": the app's backend subscribed this socket (POST /v1/subscribe); no id. */
  reason?: "server";
}

export interface HistoryPage {
  type: "history";
  channel: string;
  publications: ChannelMessage[];
  position: Position;
  recovered?: boolean;
}

export interface Member {
  user: User;
  connections: number;
}

export interface PresenceEvent {
  type: "join" | "leave";
  channel: string;
  user: User;
}

export declare class GatewayError extends Error {
  constructor(code: string, message?: string, status?: number);
  /**
   * The machine-readable code: auth_service's `error`, an `error` frame's `code`, or this
   * client's own ("unreachable", "not_connected", "connection_closed", "protocol_error",
   * "user_changed", "timeout": a socket, a request or a call to auth_service that took too long, "too_many_pending",
   * "message_too_large": a request over the gateway's max_message_bytes (auth_success's limits), never sent,
   * "bad_response": auth_service answered with a redirect, which the client never follows, with
   * more than MAX_ANSWER_BYTES, or with a success that is not the answer asked for: a token answer
   * without a non-empty access_token, token_type Bearer or DPoP, expires_in above 0 s and at most a year, or,
   * outside a browser, a refresh_token; a ticket answer without its ticket).
   */
  readonly code: string;
  /** The HTTP status, for auth_service's answers. */
  readonly status?: number;
}

export interface GatewayClientEventMap {
  message: CustomEvent<ChannelMessage>;
  state: CustomEvent<{ state: ConnectionState; code: number | null }>;
  /**
   * The token was renewed on the same socket. A `token_expiring` warning starts one renewal at a
   * time; copies of a warning already being renewed, or already renewed, are ignored.
   */
  renewed: CustomEvent<{ expiresAt: number }>;
  revoked: CustomEvent<{ reason: "session_revoked" | "user_revoked" }>;
  /**
   * A failed renewal, an `auth` the server refused for good (its `auth_error` code), a frame
   * that broke the protocol ("protocol_error": the client closes that socket and reconnects), or
   * "user_changed": a reconnect authenticated as another user than the first (another page of the
   * origin logged in as someone else); the client has closed that socket and stopped, keeping
   * `user`, and login() or resume() starts again.
   */
  error: CustomEvent<GatewayError>;
  join: CustomEvent<PresenceEvent>;
  leave: CustomEvent<PresenceEvent>;
  /** After each resubscription with `since`; `recovered: false`: resynchronise the channel. */
  recovery: CustomEvent<{ channel: string; recovered: boolean; count: number }>;
  /**
   * The gateway refused a resubscription after a reconnect for good (`forbidden`,
   * `too_many_subscriptions`, ...): the channel is dropped. Passing refusals (`unavailable`,
   * `proxy_unavailable`) and unanswered ones are asked again after a backoff.
   */
  resubscribe_failed: CustomEvent<{ channel: string; code: string; message: string }>;
  /**
   * The gateway took a channel away (`reason`: `server`, the app's backend; `permission_revoked`,
   * a renewed token that may not read it): the channel is dropped.
   */
  unsubscribed: CustomEvent<{ channel: string; reason: string | null }>;
}

type AddListenerArgs = Parameters<EventTarget["addEventListener"]>;
type RemoveListenerArgs = Parameters<EventTarget["removeEventListener"]>;

export declare class GatewayClient extends EventTarget {
  constructor(options: GatewayClientOptions);
  readonly state: ConnectionState;
  readonly channels: string[];
  /** The user this client authenticated as; a reconnect as another user stops it ("user_changed"). */
  user: User | null;
  /** When the access token expires (epoch milliseconds). */
  expiresAt: number | null;
  /** "DPoP" when the access token is bound to a key (its `cnf.jkt`), "Bearer" otherwise; null without one. */
  readonly tokenType: TokenType | null;
  /** The RFC 7638 thumbprint of the client's DPoP key (a bound token's `cnf.jkt`); null without DPoP. */
  thumbprint(): Promise<string | null>;
  register(username: string, password: string): Promise<User>;
  /** Log in with a password, then connect (not with getToken). */
  login(username: string, password: string): Promise<void>;
  /**
   * Open the socket with the session there is (getToken's token, or a refreshed one). Rejects
   * when the first connection fails, takes longer than `connectTimeout`, or close() is called.
   */
  connect(): Promise<void>;
  /** Connect from the browser's session cookie; false, without a request, when there is none. */
  resume(): Promise<boolean>;
  refresh(): Promise<void>;
  /**
   * Requests (subscribe, history, presence, unsubscribe, publish) made while the client connects
   * or reconnects wait for the socket to authenticate, within `requestTimeout`; made before
   * connect() or after close() (or a stop) they reject with "not_connected". A subscribe cut off
   * by a close is made again on the next socket; another request rejects with "connection_closed".
   */
  subscribe(channel: string, options?: { presenceEvents?: boolean }): Promise<Subscribed>;
  /** The position of the last message seen on a channel with history. */
  position(channel: string): Position | null;
  history(channel: string, options?: { limit?: number; since?: Position }): Promise<HistoryPage>;
  presence(channel: string): Promise<Member[]>;
  unsubscribe(channel: string): Promise<void>;
  publish(channel: string, data: unknown): Promise<void>;
  logout(options?: { everywhere?: boolean }): Promise<void>;
  /** Close, keeping the session; a reconnect the client was waiting to make is called off. */
  close(): void;
  addEventListener<K extends keyof GatewayClientEventMap>(
    type: K,
    listener: (this: GatewayClient, event: GatewayClientEventMap[K]) => void,
    options?: AddListenerArgs[2],
  ): void;
  addEventListener(...args: AddListenerArgs): void;
  removeEventListener<K extends keyof GatewayClientEventMap>(
    type: K,
    listener: (this: GatewayClient, event: GatewayClientEventMap[K]) => void,
    options?: RemoveListenerArgs[2],
  ): void;
  removeEventListener(...args: RemoveListenerArgs): void;
}
