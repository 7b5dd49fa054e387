// Type declarations for gateway-client.js (docs/protocol.md is the wire contract).

export type CloseAction = "reconnect" | "refresh_then_reconnect" | "stop";
/** [code, reason, action] rows: the same table as protocol/realtime_gateway_protocol/close_codes.py. */
export declare const DISCONNECTS: ReadonlyArray<readonly [number, string, CloseAction]>;
export declare function actionFor(code: number, reason: string): CloseAction;
export declare function backoffDelay(attempt: number, base?: number, cap?: number): number;

export type ConnectionState = "connecting" | "authenticated" | "renewing" | "reconnecting" | "closed";
export type Handshake = "message" | "bearer" | "ticket";

export interface GatewayClientOptions {
  authUrl: string;
  wsUrl: string;
  /** How the socket authenticates; the in-band `auth` message by default. */
  handshake?: Handshake;
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
  readonly code: string;
  readonly status?: number;
}

export interface GatewayClientEventMap {
  message: CustomEvent<ChannelMessage>;
  state: CustomEvent<{ state: ConnectionState; code: number | null }>;
  renewed: CustomEvent<{ expiresAt: number }>;
  revoked: CustomEvent<{ reason: "session_revoked" | "user_revoked" }>;
  error: CustomEvent<GatewayError>;
  join: CustomEvent<PresenceEvent>;
  leave: CustomEvent<PresenceEvent>;
  /** After each resubscription with `since`; `recovered: false`: resynchronise the channel. */
  recovery: CustomEvent<{ channel: string; recovered: boolean; count: number }>;
}

export declare class GatewayClient extends EventTarget {
  constructor(options: GatewayClientOptions);
  readonly state: ConnectionState;
  readonly channels: string[];
  /** The user of the current token, once authenticated. */
  user: User | null;
  /** When the access token expires (epoch milliseconds). */
  expiresAt: number | null;
  login(username: string, password: string): Promise<void>;
  resume(): Promise<void>;
  refresh(): Promise<void>;
  subscribe(channel: string, options?: { presenceEvents?: boolean }): Promise<Subscribed>;
  /** The position of the last message seen on a channel with history. */
  position(channel: string): Position | null;
  history(channel: string, options?: { limit?: number; since?: Position }): Promise<HistoryPage>;
  presence(channel: string): Promise<Member[]>;
  unsubscribe(channel: string): Promise<void>;
  publish(channel: string, data: unknown): Promise<void>;
  logout(options?: { everywhere?: boolean }): Promise<void>;
  close(): void;
  addEventListener<K extends keyof GatewayClientEventMap>(
    type: K,
    listener: (event: GatewayClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
