// GatewayClient: the realtime gateway's JavaScript client, one dependency-free ES module for
// browsers, bundlers and Node 20+ (there, pass the ws package's WebSocket where none is global).
//
// A session is one of three kinds, chosen by the options:
// - getToken: the app obtains access tokens itself (e.g. from its backend); the client asks it for
//   the first `auth` and for every renewal, and calls auth_service for nothing else.
// - a password login in a browser: the refresh token lives in auth_service's HttpOnly cookie,
//   which page scripts cannot read; refreshing proves the request is ours with the CSRF token, the
//   one the last login or refresh answered (the CSRF cookie only where there is no such copy, after
//   a reload, or where the server refused the copy because another tab logged in again: another
//   page of the site may have planted a cookie of that name).
// - a password login elsewhere (Node): the refresh token lives in this object's memory.
// The access token lives in this object's memory only: never in localStorage, sessionStorage, a
// cookie this code writes, or a URL.
// Where WebCrypto exists the tokens are DPoP-bound (RFC 9449): a non-extractable P-256 key signs
// a proof for every call to auth_service and every `auth` frame, so a copied token is worthless
// without the key. In a browser the key pair lives in IndexedDB (a reload keeps the binding the
// session cookie was given); elsewhere in this object's memory, or the app passes its own.
// The wire contract is docs/protocol.md; closes are acted on from DISCONNECTS below.
// In channels with history it remembers each channel's position (offset and epoch of the last
// message) and resubscribes with `since` after every reconnect: missed messages arrive as ordinary
// "message" events, and a "recovery" event says whether the gap was filled.
// Frames go out within the gateway's own budget (auth_success's `limits`): a reconnect that
// resubscribes a hundred channels waits its turn rather than be refused as a flood. Each
// resubscription carries an id: one unanswered is asked again, one refused for a passing reason
// is retried, and one refused for good drops the channel with a "resubscribe_failed" event.

const SUBPROTOCOL = "realtime.v1";
const BEARER_PREFIX = "realtime.bearer.";
// Over https auth_service names its cookies with the __Host- prefix, which no other host can set.
const CSRF_COOKIE = "csrf_token";
const HOST_PREFIX = "__Host-";
const REFRESH_LOCK = "realtime-gateway-refresh";
const HANDSHAKES = ["message", "bearer", "ticket"];
const NONCE_HEADER = "DPoP-Nonce";
/** A token that expires within this many milliseconds is refreshed before a reconnect presents it. */
const STALE_MARGIN = 5000;
/** A connection that stays authenticated this long (milliseconds) starts the backoff over. */
const STABLE_AFTER = 10000;
/**
 * Renewals start at least this many milliseconds apart (or a quarter of the token's lifetime, when
 * shorter); a warning sooner waits. The gateway warns a
 * token at the earliest about half its life after authenticating it (a key withdrawal sooner, with
 * WS_KEY_WITHDRAWAL_GRACE, 10 s by default, to renew in): a gateway that warns in a loop gets one
 * renewal (one refresh-token rotation) per interval, not one per warning.
 */
const MIN_RENEWAL_INTERVAL = 2000;
/** The server allows 3 ``auth`` attempts per socket: the first and 2 retries. */
const AUTH_RETRIES = 2;
/** The gateway's defaults (WS_RATE_PER_SECOND, WS_RATE_BURST), for one that does not say its own. */
const DEFAULT_LIMITS = Object.freeze({ rate_per_second: 20, rate_burst: 40 });
/** Refusals of a resubscription that a later attempt may not meet; any other is for good. */
const RESUBSCRIBE_RETRIED = new Set(["unavailable", "proxy_unavailable"]);
const now = () => globalThis.performance?.now() ?? Date.now();
/**
 * The most bytes of one answer from auth_service the client reads, counted decoded (after any
 * Content-Encoding): a token answer is a few KiB. A longer one is cut off and refused.
 */
export const MAX_ANSWER_BYTES = 65536;
/** The longest access-token life (seconds) a token answer may give: a year. */
const MAX_EXPIRES_IN = 365 * 86400;

/**
 * Every way the gateway closes a socket: [code, reason, action], the same rows as
 * protocol/realtime_gateway_protocol/close_codes.py (a test holds the two together). Clients act on the row, never on text.
 */
export const DISCONNECTS = Object.freeze([
  [1001, "going_away", "reconnect"],
  [1009, "", "stop"],
  [1011, "internal_error", "reconnect"],
  [1012, "draining", "reconnect"],
  [1012, "missed_messages", "reconnect"],
  [1013, "slow_consumer", "reconnect"],
  [4400, "bad_request", "stop"],
  [4401, "invalid_token", "stop"],
  [4401, "token_expired", "refresh_then_reconnect"],
  [4401, "keys_unavailable", "reconnect"],
  [4401, "not_authenticated", "stop"],
  [4401, "invalid_dpop_proof", "stop"],
  [4403, "session_revoked", "stop"],
  [4403, "subject_mismatch", "stop"],
  [4403, "disconnected", "stop"],
  [4408, "auth_timeout", "reconnect"],
  [4429, "rate_limited", "reconnect"],
  [4429, "too_many_connections", "reconnect"],
]);

const STOPPING_CODES = new Set(DISCONNECTS.filter(([, , a]) => a === "stop").map(([c]) => c));

/**
 * The action for a close: the row's, when code and reason match one; otherwise (a dropped
 * connection, a reason this client does not know) stop if the code can mean stop, else reconnect.
 * The same rule as realtime_gateway_protocol.close_codes.action_for.
 */
export function actionFor(code, reason) {
  const row = DISCONNECTS.find(([c, r]) => c === code && r === reason);
  if (row) return row[2];
  return STOPPING_CODES.has(code) ? "stop" : "reconnect";
}

/**
 * The fields this client reads, by frame type, and what each must be ("?": may be absent or
 * null). A frame the server sends without them breaks the protocol; unknown types pass.
 */
const FRAME_FIELDS = {
  auth_success: { user: "object", expires_at: "number", renewed: "boolean?" },
  auth_error: { code: "string", message: "string?", retry: "boolean?" },
  error: { code: "string", message: "string?" },
  message: { channel: "string", offset: "number?", epoch: "string?" },
  subscribed: { channel: "string", position: "object?", publications: "array?", recovered: "boolean?" },
  unsubscribed: { channel: "string" },
  history: { position: "object?", publications: "array" },
  presence: { members: "array" },
  join: { channel: "string", user: "object" },
  leave: { channel: "string", user: "object" },
  token_expiring: { expires_at: "number" },
  revoked: { reason: "string" },
};

function kindOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number" && !Number.isFinite(value)) return "non-finite number";
  return typeof value;
}

/** What makes a frame break the protocol, or null: an object with a string type and FRAME_FIELDS. */
function frameFault(frame) {
  if (kindOf(frame) !== "object" || typeof frame.type !== "string") return `a frame is ${kindOf(frame)}, not an object with a string type`;
  for (const [name, wanted] of Object.entries(FRAME_FIELDS[frame.type] ?? {})) {
    const value = frame[name];
    if (wanted.endsWith("?") && (value === undefined || value === null)) continue;
    if (kindOf(value) !== wanted.replace("?", "")) return `${frame.type}.${name} is ${kindOf(value)}, not ${wanted.replace("?", "")}`;
  }
  for (const publication of frame.publications ?? []) {
    if (kindOf(publication) !== "object" || publication.type !== "message") return `${frame.type}.publications holds a ${kindOf(publication)}, not a message`;
    const fault = frameFault(publication);
    if (fault) return fault;
  }
  return null;
}

/** The nesting the gateway reads (docs/protocol.md, "Transport": strict JSON). */
const WIRE_DEPTH = 32;
/** In JSON.stringify's output: an escaped backslash (the ``u`` after it is text), a surrogate
 * pair's escapes, or a lone surrogate's, which JSON.stringify writes as ``\ud83d``. */
const ESCAPES = /\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|\\ud[89a-f][0-9a-f]{2}/g;

/**
 * Why the gateway would refuse this frame's JSON (a lone surrogate, as text.slice() leaves of an
 * emoji it cuts; nesting deeper than WIRE_DEPTH), or null. It would answer bad_request without an
 * id, so the request would wait requestTimeout, and the fifth such frame closes the socket 4400,
 * which stops the client.
 */
function wireFault(text) {
  for (const [escape] of text.matchAll(ESCAPES)) if (escape.length === 6) return "a string holds a lone surrogate";
  let depth = 0;
  let string = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (string) {
      if (c === "\\") i++;
      else if (c === '"') string = false;
    } else if (c === '"') string = true;
    else if (c === "{" || c === "[") {
      if (++depth > WIRE_DEPTH) return `JSON nested deeper than ${WIRE_DEPTH} levels`;
    } else if (c === "}" || c === "]") depth--;
  }
  return null;
}

/** Why ``frame`` is over the gateway's ``max_message_bytes`` (its UTF-8 bytes), or null. */
function oversize(frame, max) {
  if (max === null) return null;
  const text = JSON.stringify(frame);
  if (text.length * 3 <= max) return null; // a UTF-16 unit is at most 3 bytes of UTF-8
  const bytes = utf8.encode(text).length;
  return bytes > max ? `${bytes} bytes, over the gateway's max_message_bytes (${max})` : null;
}

/** What JSON.stringify writes of ``value`` (undefined where it leaves it out), or null when it
 * cannot (a BigInt, a cycle: #request says why). */
function wrote(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return null;
  }
}

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, base = 500, cap = 30000) {
  return Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

export class GatewayError extends Error {
  constructor(code, message, status) {
    super(message ? `${code}: ${message}` : code);
    this.code = code;
    this.status = status;
  }
}

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return decodeURIComponent(value.join("="));
  }
  return null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Milliseconds a socket let go of waits for the peer's close frame before it is cut (Node). */
const CLOSE_WAIT = 1000;

/**
 * Closes a socket the client is done with. A dead or frozen peer never answers the close: Node's
 * ws waits 30 s for it, keeping the process alive, so there the socket is cut after CLOSE_WAIT
 * (a browser bounds the wait itself, and has no terminate()).
 */
function release(ws, code) {
  try {
    ws.close(code);
  } catch {
    ws.close(); // a browser's WebSocket sends 1000 and 3000-4999 only
  }
  if (typeof ws.terminate === "function") {
    const timer = setTimeout(() => ws.terminate(), CLOSE_WAIT);
    timer.unref?.(); // the socket alone keeps the process alive, and only until then
  }
}

/** auth_service refused for good (a 4xx other than 429, which is "not now", as a 503 is). */
const refusedForGood = (err) => err instanceof GatewayError && err.status >= 400 && err.status < 500 && err.status !== 429;

// -- DPoP (RFC 9449) -------------------------------------------------------------------------
// WebCrypto does the cryptography (key generation, SHA-256, ES256 signatures, which it returns as
// the raw r||s a JWS wants); this code only encodes JSON and base64url around it.

const ES256 = { name: "ECDSA", namedCurve: "P-256" };
const KEY_DB = "realtime-gateway-dpop";
const KEY_STORE = "keys";
const KEY_NAME = "dpop";
const utf8 = new TextEncoder();

function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const encodeJson = (value) => base64url(utf8.encode(JSON.stringify(value)));

async function sha256(text) {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", utf8.encode(text))));
}

/**
 * A JWT's claims, read without verifying it (null for a token that is not a JWT): the servers
 * verify; the client only learns how to present the token and when it expires.
 */
function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(payload), (c) => c.charCodeAt(0))));
    return kindOf(claims) === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The key a token is bound to (its `cnf.jkt`): DPoP or Bearer, with a proof. */
function boundKey(token) {
  const jkt = tokenClaims(token)?.cnf?.jkt;
  return typeof jkt === "string" ? jkt : null;
}

/** A request's `htu`: its absolute URL without query and fragment. */
function requestUrl(url) {
  const parsed = new URL(url, globalThis.location?.href);
  parsed.search = "";
  parsed.hash = "";
  return parsed.href;
}

const generateKeyPair = () => crypto.subtle.generateKey(ES256, false, ["sign", "verify"]);

function idb(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * This origin's key pair from IndexedDB (structured clone keeps a non-extractable key
 * non-extractable), made and stored on first use. Two tabs may both make one: the first stored
 * wins, in one read-write transaction. Where IndexedDB fails (some private modes), a key in memory.
 */
async function storedKeyPair() {
  let db;
  try {
    const open = indexedDB.open(KEY_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(KEY_STORE);
    db = await idb(open);
    const found = await idb(db.transaction(KEY_STORE).objectStore(KEY_STORE).get(KEY_NAME));
    if (found) return found;
  } catch {
    db?.close();
    return generateKeyPair();
  }
  const fresh = await generateKeyPair();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(KEY_STORE, "readwrite");
      const store = transaction.objectStore(KEY_STORE);
      let keyPair = fresh;
      store.get(KEY_NAME).onsuccess = ({ target }) => {
        if (target.result) keyPair = target.result;
        else store.add(fresh, KEY_NAME);
      };
      transaction.oncomplete = () => resolve(keyPair);
      transaction.onerror = transaction.onabort = () => reject(transaction.error);
    });
  } catch {
    return fresh;
  } finally {
    db.close();
  }
}

/** The client's DPoP key and the proofs it signs. */
class DPoPKey {
  #given;
  #ready = null;

  constructor(keyPair) {
    if (keyPair && (keyPair.privateKey?.algorithm?.name !== "ECDSA" || keyPair.privateKey.algorithm.namedCurve !== "P-256")) {
      throw new TypeError("GatewayClient: the dpop key pair must be ECDSA P-256 (ES256), from crypto.subtle.generateKey");
    }
    this.#given = keyPair ?? null;
  }

  #load() {
    this.#ready ??= (async () => {
      const keyPair = this.#given ?? (typeof indexedDB === "undefined" ? await generateKeyPair() : await storedKeyPair());
      // A public key is always exportable; the private one never leaves WebCrypto.
      const { crv, kty, x, y } = await crypto.subtle.exportKey("jwk", keyPair.publicKey);
      const jwk = { crv, kty, x, y }; // RFC 7638's members, in its order
      return { privateKey: keyPair.privateKey, jwk, thumbprint: await sha256(JSON.stringify(jwk)) };
    })().catch((err) => {
      this.#ready = null; // the next proof tries again
      throw err;
    });
    return this.#ready;
  }

  /** The RFC 7638 thumbprint: what a token bound to this key carries as `cnf.jkt`. */
  async thumbprint() {
    return (await this.#load()).thumbprint;
  }

  /** A proof for one request; `accessToken` adds its hash (`ath`), `nonce` the server's. */
  async proof(htm, url, { accessToken, nonce } = {}) {
    const { privateKey, jwk } = await this.#load();
    const claims = { jti: crypto.randomUUID(), htm, htu: requestUrl(url), iat: Math.floor(Date.now() / 1000) };
    if (accessToken) claims.ath = await sha256(accessToken);
    if (nonce) claims.nonce = nonce;
    const input = `${encodeJson({ typ: "dpop+jwt", alg: "ES256", jwk })}.${encodeJson(claims)}`;
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, utf8.encode(input));
    return `${input}.${base64url(new Uint8Array(signature))}`;
  }
}

/**
 * The client's DPoP key per its `dpop` option: on by default where WebCrypto exists; `false`
 * off; a key pair of the app's own otherwise.
 */
function dpopKey(option, handshake) {
  const webCrypto = typeof globalThis.crypto?.subtle?.sign === "function";
  if (option === false || (option === undefined && !webCrypto)) return null;
  if (!webCrypto) throw new TypeError("GatewayClient: DPoP needs WebCrypto (crypto.subtle, which browsers give secure contexts only); pass dpop: false");
  if (handshake === "bearer") {
    throw new TypeError('GatewayClient: the "bearer" handshake cannot carry a DPoP proof: pass dpop: false, or use the "message" or "ticket" handshake');
  }
  return new DPoPKey(option === true ? null : option);
}

/**
 * auth_service's REST API, through the app's own ``fetch`` when it gave one. With DPoP every call
 * carries a proof, with the server's latest ``DPoP-Nonce`` once it sent one. Every request is
 * bounded by ``timeout`` (milliseconds).
 */
class AuthApi {
  #base;
  #fetch;
  #credentials;
  #dpop;
  #timeout;
  #nonce = null;

  constructor(authUrl, fetch, credentials, dpop, timeout) {
    this.#base = authUrl?.replace(/\/$/, "");
    this.#fetch = fetch;
    this.#credentials = credentials;
    this.#dpop = dpop;
    this.#timeout = timeout;
  }

  get base() {
    return this.#base;
  }

  /**
   * ``token``: an access token to present (``Authorization: DPoP`` when it is bound, ``Bearer``
   * otherwise). Asked for a nonce (``use_dpop_nonce``, RFC 9449 section 8), it signs once more
   * with the one the refusal carried. ``expect(data)`` says what is wrong with a successful
   * answer (null: nothing), which then rejects with ``bad_response``.
   */
  async post(path, body, { headers = {}, token, prove = true, expect } = {}) {
    if (!this.#base) throw new TypeError(`GatewayClient: ${path} needs the authUrl option`);
    const url = this.#base + path;
    const dpop = prove ? this.#dpop : null;
    for (let attempt = 0; ; attempt++) {
      // No compression asked for (a browser sends its own Accept-Encoding: the cap counts decoded bytes).
      const sent = { "Content-Type": "application/json", "Accept-Encoding": "identity", ...headers };
      if (token) sent.Authorization = `${boundKey(token) ? "DPoP" : "Bearer"} ${token}`;
      if (dpop) sent.DPoP = await dpop.proof("POST", url, { accessToken: token, nonce: this.#nonce });
      const init = { method: "POST", credentials: this.#credentials, headers: sent, body: JSON.stringify(body), redirect: "manual" };
      const { response, data } = await this.#send(url, init);
      this.#nonce = response.headers?.get?.(NONCE_HEADER) ?? this.#nonce;
      if (response.ok) {
        const fault = expect?.(data);
        if (fault) throw new GatewayError("bad_response", `auth_service's answer to ${url} ${fault}`, response.status);
        return data;
      }
      // An error answer's fields, when it has them: anything else is the status.
      const { error, error_description: description } = kindOf(data) === "object" ? data : {};
      if (dpop && attempt === 0 && error === "use_dpop_nonce" && this.#nonce) continue;
      const code = typeof error === "string" && error ? error : `http_${response.status}`;
      throw new GatewayError(code, typeof description === "string" ? description : undefined, response.status);
    }
  }

  /**
   * One request and its JSON body, within the timeout: a request that stalls (a half-open
   * connection after a laptop wakes) is aborted and rejects with ``timeout``, so a refresh never
   * holds the tabs' refresh lock longer. The race also bounds an app's fetch that ignores the signal.
   */
  async #send(url, init) {
    const controller = new AbortController();
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => {
        const error = new GatewayError("timeout", `no answer from auth_service at ${this.#base} within ${this.#timeout} ms`);
        controller.abort(error);
        reject(error);
      }, this.#timeout);
    });
    const answered = (async () => {
      let response;
      try {
        response = await this.#fetch(url, { ...init, signal: controller.signal });
      } catch (err) {
        if (controller.signal.aborted) throw controller.signal.reason;
        throw new GatewayError("unreachable", `cannot reach auth_service at ${this.#base} (${err.message})`);
      }
      this.#refuseRedirect(url, response);
      return { response, data: await readAnswer(url, response) };
    })();
    try {
      return await Promise.race([answered, expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A redirect is never followed (``redirect: "manual"``): following it would post the password
   * or the refresh token again, to wherever it points. Node's fetch hands over the 3xx itself, a
   * browser's an ``opaqueredirect`` (status 0); an app's own fetch that followed it anyway
   * (``redirected``) leaked the body already, but its answer, from elsewhere, is not taken either.
   */
  #refuseRedirect(url, response) {
    const status = response.status;
    if (response.type !== "opaqueredirect" && !response.redirected && !(status >= 300 && status < 400)) return;
    response.body?.cancel?.().catch(() => {});
    const location = response.headers?.get?.("Location");
    const where = response.redirected ? ` (the app's fetch followed it${response.url ? ` to ${response.url}` : ""})` : location ? ` to ${location}` : "";
    throw new GatewayError("bad_response", `auth_service answered ${url} with a redirect${where}, which the client never follows: authUrl must be auth_service's own URL`, status);
  }
}

/**
 * An answer's JSON body, read as a stream up to MAX_ANSWER_BYTES (decoded: a gzip of a gigabyte is
 * a megabyte on the wire): past it the stream is cancelled and the call rejects with
 * ``bad_response``. A body that is not JSON, or breaks off, is ``{}``, as it always was. An app's
 * own fetch whose answer has no body stream is read with its ``json()``.
 */
async function readAnswer(url, response) {
  const tooLarge = () => new GatewayError("bad_response", `auth_service's answer to ${url} is longer than ${MAX_ANSWER_BYTES} bytes`, response.status);
  const body = response.body;
  if (typeof body?.getReader !== "function") return response.json().catch(() => ({}));
  if (Number(response.headers?.get?.("Content-Length")) > MAX_ANSWER_BYTES) {
    body.cancel().catch(() => {});
    throw tooLarge();
  }
  const reader = body.getReader();
  const chunks = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_ANSWER_BYTES) {
        reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    return {};
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

/**
 * What is wrong with a token answer from /v1/login or /v1/token (null: nothing): an object with a
 * non-empty ``access_token``, ``token_type`` Bearer or DPoP (any case, RFC 6749 section 5.1),
 * ``expires_in`` seconds (more than 0, at most MAX_EXPIRES_IN), and a non-empty ``refresh_token``
 * where the session keeps it (outside a browser); a ``csrf_token``, when given, is a non-empty string.
 */
function tokenAnswerFault(data, { refreshToken }) {
  if (kindOf(data) !== "object") return `is ${kindOf(data)}, not a token answer`;
  const text = (value) => typeof value === "string" && value.length > 0;
  if (!text(data.access_token)) return `has no access_token (${kindOf(data.access_token)})`;
  if (!["bearer", "dpop"].includes(String(data.token_type).toLowerCase())) return `has token_type ${JSON.stringify(data.token_type)}, not Bearer or DPoP`;
  const life = data.expires_in;
  if (kindOf(life) !== "number" || !(life > 0 && life <= MAX_EXPIRES_IN)) return `has expires_in ${JSON.stringify(life)}, not seconds above 0 and at most ${MAX_EXPIRES_IN}`;
  if (refreshToken && !text(data.refresh_token)) return `has no refresh_token (${kindOf(data.refresh_token)})`;
  if (data.csrf_token !== undefined && !text(data.csrf_token)) return `has csrf_token ${kindOf(data.csrf_token)}, not a string`;
  return null;
}

const cookieTokens = (data) => tokenAnswerFault(data, { refreshToken: false });
const csrfAnswerFault = (data) =>
  kindOf(data) === "object" && typeof data.csrf_token === "string" && data.csrf_token ? null : "has no csrf_token string";
const memoryTokens = (data) => tokenAnswerFault(data, { refreshToken: true });

/** A browser's password session: the refresh token in the HttpOnly cookie, the CSRF token here. */
class CookieSession {
  #api;
  #csrf = null;

  constructor(api) {
    this.#api = api;
  }

  async login(username, password) {
    return this.#keep(await this.#api.post("/v1/login", { username, password, session: "cookie" }, { expect: cookieTokens }));
  }

  /**
   * Whether a session may exist: without its CSRF token (nor, after a reload, its cookie) there is
   * none. A page on another host than auth_service's cannot read that cookie (it is host-only), so
   * it asks auth_service for the token of the session its cookie holds, if any.
   */
  async resumable() {
    if (this.#csrf === null) this.#csrf = await this.#cookieCsrf();
    return this.#csrf !== null;
  }

  /** One refresh at a time across tabs (Web Locks), since the cookie is shared and rotates. */
  refresh() {
    const locks = globalThis.navigator?.locks;
    const run = () => this.#refreshWithRetry(!locks);
    return locks ? locks.request(REFRESH_LOCK, run) : run();
  }

  /**
   * The cookie's session, while it is this tab's. On csrf_failed another page logged in since and
   * the cookie holds its login, perhaps another user's: taking the cookie's CSRF token, as a
   * refresh does (which then checks who it got), logged that login out and reported this one
   * logged out. This tab's own session is ended by its access token instead, the cookie left alone.
   */
  async logout(everywhere, accessToken) {
    try {
      await this.#api.post("/v1/logout", { all: everywhere }, { headers: this.#csrfHeader() });
    } catch (err) {
      if (err.code !== "csrf_failed" || !accessToken) throw err;
      await this.#api.post("/v1/logout", { all: everywhere }, { token: accessToken });
    }
    this.#csrf = null;
  }

  async #refreshWithRetry(unlocked) {
    // Without Web Locks two tabs may present the same cookie; the loser gets invalid_grant inside
    // the server's reuse grace, and by then the browser holds the winner's rotated cookie.
    for (let attempt = 0; ; attempt++) {
      try {
        const body = { grant_type: "refresh_token" };
        return this.#keep(await this.#withCsrf((headers) => this.#api.post("/v1/token", body, { headers, expect: cookieTokens })));
      } catch (err) {
        if (!unlocked || attempt >= 2 || err.code !== "invalid_grant") throw err;
        await sleep(500 + Math.random() * 1000);
      }
    }
  }

  /**
   * `call` with this session's CSRF header. Another tab that logged in again replaced the shared
   * session cookie and the CSRF cookie beside it, so this copy no longer matches: on csrf_failed the
   * cookie's token is taken once, if it differs (what a reload would read), and the call made again.
   */
  async #withCsrf(call) {
    try {
      return await call(this.#csrfHeader());
    } catch (err) {
      const current = err.code === "csrf_failed" ? await this.#cookieCsrf() : null;
      if (current === null || current === this.#csrf) throw err;
      this.#csrf = current;
      return call(this.#csrfHeader());
    }
  }

  #keep(body) {
    this.#csrf = body.csrf_token;
    return body;
  }

  #csrfHeader() {
    return { "X-CSRF-Token": this.#csrf ?? this.#readCsrfCookie() ?? "" };
  }

  /** The CSRF token of the session the cookie holds now, or null when there is none. */
  async #cookieCsrf() {
    if (this.#sameHost()) return readCookie(this.#csrfCookie());
    try {
      return (await this.#api.post("/v1/csrf", {}, { prove: false, expect: csrfAnswerFault })).csrf_token;
    } catch (err) {
      if (err.code === "invalid_request") return null; // no session cookie
      throw err;
    }
  }

  #readCsrfCookie() {
    return this.#sameHost() ? readCookie(this.#csrfCookie()) : null;
  }

  /** Cookies are per host, whatever the port: only a page on auth_service's host reads its CSRF cookie. */
  #sameHost() {
    return new URL(this.#api.base, location.href).hostname === location.hostname;
  }

  #csrfCookie() {
    return new URL(this.#api.base, location.href).protocol === "https:" ? HOST_PREFIX + CSRF_COOKIE : CSRF_COOKIE;
  }
}

/** A password session outside a browser: the refresh token in this object's memory only. */
class MemorySession {
  #api;
  #refreshToken = null;

  constructor(api) {
    this.#api = api;
  }

  async login(username, password) {
    return this.#keep(await this.#api.post("/v1/login", { username, password }, { expect: memoryTokens }));
  }

  async resumable() {
    return this.#refreshToken !== null;
  }

  async refresh() {
    if (this.#refreshToken === null) throw new GatewayError("not_authenticated", "log in first");
    const body = { grant_type: "refresh_token", refresh_token: this.#refreshToken };
    return this.#keep(await this.#api.post("/v1/token", body, { expect: memoryTokens }));
  }

  async logout(everywhere) {
    // Forgotten while the request is out (a refresh meanwhile would rotate it), and given back
    // when the logout fails, so that it can be tried again: it was lost, and the session lived on.
    const refreshToken = this.#refreshToken;
    this.#refreshToken = null;
    try {
      await this.#api.post("/v1/logout", { refresh_token: refreshToken, all: everywhere });
    } catch (err) {
      this.#refreshToken ??= refreshToken;
      throw err;
    }
  }

  #keep(body) {
    this.#refreshToken = body.refresh_token;
    return body;
  }
}

/** The app's own tokens: ``getToken()`` for the first ``auth`` and for every renewal. */
class TokenProvider {
  #api;
  #getToken;
  #timeout;
  #last = null;

  constructor(api, getToken, timeout) {
    this.#api = api;
    this.#getToken = getToken;
    this.#timeout = timeout;
  }

  login() {
    throw new TypeError("GatewayClient: with getToken there is no password login; call connect()");
  }

  async resumable() {
    return true;
  }

  /**
   * getToken's token within the timeout (authTimeout): a call that never settles (the app's fetch
   * on a half-open connection) would be shared by every later refresh, and the client would never
   * renew or reconnect again.
   */
  async refresh() {
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new GatewayError("timeout", `getToken() gave no token within ${this.#timeout} ms`)), this.#timeout);
    });
    let token;
    try {
      token = await Promise.race([this.#getToken(), expired]);
    } finally {
      clearTimeout(timer);
    }
    if (typeof token !== "string" || !token) throw new GatewayError("invalid_token", "getToken() gave no access token");
    this.#last = token;
    return { access_token: token };
  }

  /** Ends the token's session at auth_service (authUrl); the app may prefer close() and its own logout. */
  async logout(everywhere) {
    await this.#api.post("/v1/logout", { all: everywhere }, { token: this.#last });
  }
}

export class GatewayClient extends EventTarget {
  #api;
  #dpop;
  #session;
  #WebSocket;
  #wsUrl;
  #handshake;
  #token = null;
  #ws = null;
  #state = "closed";
  #channels = new Map(); // channel -> whether it asked for presence events
  #positions = new Map(); // channel -> {offset, epoch} of the last message seen
  #pending = new Map(); // id -> {frame, sent, resolve, reject}: requests waiting for a reply
  #live = false; // the socket is authenticated: requests go out at once
  #ids = 0;
  #attempt = 0;
  #stable = null; // the timer that starts the backoff over
  #backoff = null; // the timer of the wait before a reconnect
  #connectTimeout;
  #requestTimeout;
  #maxPending;
  #deadline = null; // the timer of the current connection attempt
  #generation = 0; // the current connection attempt; callbacks of older ones are dropped
  #authRetries = 0; // this socket's auth attempts retried
  #authFailure = null; // this socket's refused auth: why connect() fails when it closes
  #stopped = true;
  #closes = 0; // close() calls: a login or connect that awaited across one does not start
  #closers = new Set(); // what close() rejects: logins and connects waiting on tokens
  #established = false;
  #userId = null; // whom this run authenticated as: an auth_success for anyone else is refused
  #refreshing = null;
  #renewing = null; // the expires_at of the warning being renewed, until the server answers
  #renewed = null; // the expires_at of the last warning renewed
  #held = null; // the expires_at of the token this socket holds (its last auth_success)
  #lastRenewal = -Infinity; // when the last renewal started (Date.now())
  #deferred = null; // the timer of a renewal waiting for MIN_RENEWAL_INTERVAL
  #lifetime = null; // ms: the expires_in auth_service gave the current token
  #connected = null;
  #pacer = null; // this socket's frame budget, from its auth_success: {rate, burst, tokens, stamp}
  #outbox = []; // frames waiting for that budget: {frame, request?, resubscription?}
  #pacing = null; // the timer of the outbox's next frame
  #resubscribing = new Map(); // id -> {channel, attempt, timer}: resubscriptions not answered
  #retrying = new Set(); // timers of resubscriptions asked again after a backoff
  #heartbeat; // ms of silence from the server before a ping (0: never)
  #silence = null; // the timer that looks for that silence
  #heard = 0; // when the last frame came (now())
  #pinged = null; // the #heard of the silence last pinged

  /**
   * @param {{authUrl?: string, wsUrl: string, handshake?: "message"|"bearer"|"ticket",
   *   getToken?: () => Promise<string>, fetch?: typeof fetch, WebSocket?: typeof WebSocket,
   *   dpop?: boolean | CryptoKeyPair, connectTimeout?: number, requestTimeout?: number,
   *   authTimeout?: number, maxPending?: number, heartbeat?: number}} options
   * ``handshake``: how the socket authenticates (docs/protocol.md, "Choosing a handshake").
   * ``dpop``: DPoP-bound tokens, on by default where WebCrypto exists (docs/browser.md).
   * ``connectTimeout``: milliseconds from opening a socket to its ``auth_success``;
   * ``requestTimeout``: from a request to its reply; ``authTimeout``: from a call to auth_service
   * to its answer; ``maxPending``: requests waiting at once; ``heartbeat``: milliseconds of
   * silence from the server after which the client pings it (0: never).
   */
  constructor({
    authUrl, wsUrl, handshake = "message", getToken, fetch, WebSocket, dpop,
    connectTimeout = 15000, requestTimeout = 10000, authTimeout = 10000, maxPending = 1000,
    heartbeat = 20000,
  } = {}) {
    super();
    // An unknown handshake would send nothing: the server closes 4408 again and again, and login() never settles.
    if (!HANDSHAKES.includes(handshake)) {
      const allowed = HANDSHAKES.map((name) => JSON.stringify(name)).join(", ");
      throw new TypeError(`GatewayClient: handshake must be one of ${allowed}, not ${JSON.stringify(handshake)}`);
    }
    this.#connectTimeout = connectTimeout;
    this.#requestTimeout = requestTimeout;
    this.#maxPending = maxPending;
    this.#heartbeat = Number.isFinite(heartbeat) && heartbeat > 0 ? heartbeat : 0;
    this.#WebSocket = WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError('GatewayClient: no global WebSocket here; pass one, e.g. WebSocket from the "ws" package');
    }
    const cookie = !getToken && typeof document !== "undefined";
    this.#dpop = dpopKey(dpop, handshake);
    const fetcher = fetch ?? ((...args) => globalThis.fetch(...args));
    this.#api = new AuthApi(authUrl, fetcher, cookie ? "include" : "same-origin", this.#dpop, authTimeout);
    this.#session = getToken
      ? new TokenProvider(this.#api, getToken, authTimeout)
      : cookie
        ? new CookieSession(this.#api)
        : new MemorySession(this.#api);
    this.#wsUrl = wsUrl;
    this.#handshake = handshake;
    this.user = null;
    this.expiresAt = null;
  }

  get state() {
    return this.#state;
  }

  get channels() {
    return [...this.#channels.keys()];
  }

  /** ``"DPoP"`` when the access token is bound to a key (its ``cnf.jkt``), ``"Bearer"`` otherwise. */
  get tokenType() {
    if (!this.#token) return null;
    return boundKey(this.#token) ? "DPoP" : "Bearer";
  }

  /** The RFC 7638 thumbprint of the client's DPoP key (a bound token's ``cnf.jkt``); null without DPoP. */
  async thumbprint() {
    return this.#dpop ? this.#dpop.thumbprint() : null;
  }

  /** ``{offset, epoch}`` of the last message seen on a channel with history, or null. */
  position(channel) {
    return this.#positions.get(channel) ?? null;
  }

  /** A new account; log in with it afterwards. */
  register(username, password) {
    return this.#api.post("/v1/register", { username, password }, { prove: false });
  }

  /** Log in with a password (in a browser the refresh token goes into the HttpOnly cookie), then connect. */
  async login(username, password) {
    const closes = this.#closes;
    this.#tokens(await this.#whileOpen(this.#session.login(username, password)));
    await this.#start(closes);
  }

  /**
   * Connect with the session there is: getToken's token, or a fresh access token from the current
   * session (the cookie in a browser). Rejects with the reason when the first connection fails.
   */
  async connect() {
    const closes = this.#closes;
    if (!this.#token) await this.#whileOpen(this.refresh());
    await this.#start(closes);
  }

  /** ``promise``, or connection_closed at once when close() is called first. */
  #whileOpen(promise) {
    return new Promise((resolve, reject) => {
      const stop = () => reject(new GatewayError("connection_closed", "close() was called"));
      this.#closers.add(stop);
      promise.then(resolve, reject).finally(() => this.#closers.delete(stop));
    });
  }

  /**
   * After a reload: connect from the session cookie, no password. Resolves false, without a
   * request, when there is no session to resume (a first visit, or after a logout); a page on
   * another host than auth_service's asks it first (POST /v1/csrf), as it cannot read the cookie.
   */
  async resume() {
    // close() while auth_service is asked (POST /v1/csrf) rejects at once: it opened the socket after.
    if (!(await this.#whileOpen(this.#session.resumable()))) return false;
    await this.connect();
    return true;
  }

  /** A fresh access token; concurrent callers share one request (refresh tokens rotate). */
  async refresh() {
    if (!this.#refreshing) {
      this.#refreshing = this.#session.refresh()
        .then((body) => this.#tokens(body))
        .finally(() => { this.#refreshing = null; });
    }
    return this.#refreshing;
  }

  /**
   * With ``presenceEvents`` the channel's "join" and "leave" events are dispatched too. A
   * subscribe whose socket closes before the reply is made again once the client has
   * reconnected (subscribing twice is harmless; the new socket has none yet); any other request
   * cut off that way rejects with ``connection_closed`` (a publish is not sent again). A request
   * made while the client (re)connects waits for it, within requestTimeout.
   */
  async subscribe(channel, { presenceEvents = false } = {}) {
    const frame = { type: "subscribe", channel, ...(presenceEvents && { presence_events: true }) };
    let reply;
    for (;;) {
      try {
        reply = await this.#request(frame);
        break;
      } catch (error) {
        // The next request waits for the reconnection, or rejects when the client stopped.
        if (!(error instanceof GatewayError) || error.code !== "connection_closed" || this.#stopped) throw error;
      }
    }
    return reply; // the channel and its position were taken in stream order (#onFrame)
  }

  /**
   * Leave ``channel``. ``not_subscribed`` for a channel this client had is the end asked for: a
   * socket that reconnected meanwhile never resubscribed it (it rejected before).
   */
  async unsubscribe(channel) {
    const subscribed = this.#channels.delete(channel);
    this.#positions.delete(channel);
    try {
      await this.#request({ type: "unsubscribe", channel });
    } catch (error) {
      if (!(subscribed && error instanceof GatewayError && error.code === "not_subscribed")) throw error;
    }
  }

  /**
   * Recent messages, oldest first: ``{publications, position}``. A ``limit`` or ``since`` the
   * gateway refuses rejects with bad_request unsent: each would be a protocol violation, and the
   * fifth closes the socket 4400, which stops the client.
   */
  history(channel, { limit, since } = {}) {
    const offset = (value) => Number.isInteger(value) && value >= 0 && value < 2 ** 63;
    if (limit !== undefined && !offset(limit)) {
      return Promise.reject(new GatewayError("bad_request", "not sent: limit must be an integer from 0 to 2^63-1"));
    }
    if (since && !(offset(since.offset) && typeof since.epoch === "string" && since.epoch.length > 0 && since.epoch.length <= 64)) {
      return Promise.reject(new GatewayError("bad_request", "not sent: since must be {offset, epoch} as position() gives it"));
    }
    return this.#request({ type: "history", channel, ...(limit !== undefined && { limit }), ...(since && { since }) });
  }

  /** Who is subscribed: ``[{user: {id, username}, connections}]``. */
  async presence(channel) {
    return (await this.#request({ type: "presence", channel })).members;
  }

  async publish(channel, data) {
    // JSON.stringify leaves undefined out (a function, a symbol, a toJSON() that gives undefined
    // too): "publish needs data", a protocol violation (5 close 4400).
    if (data === undefined || wrote(data) === undefined) {
      throw new GatewayError("bad_request", "not sent: publish needs data (undefined, a function or a symbol is not JSON: send null)");
    }
    await this.#request({ type: "publish", channel, data });
  }

  /** Revoke this session (or every session of the user) and close; in a browser, forget both cookies. */
  async logout({ everywhere = false } = {}) {
    try {
      await this.#session.logout(everywhere, this.#token);
    } finally {
      this.close();
    }
  }

  close() {
    this.#closes += 1;
    for (const stop of this.#closers) stop();
    this.#closers.clear();
    this.#stopped = true;
    this.#token = null;
    this.#generation += 1;
    clearTimeout(this.#stable);
    clearTimeout(this.#deadline);
    clearTimeout(this.#backoff);
    clearTimeout(this.#deferred);
    this.#deferred = null;
    this.#connected?.reject(new GatewayError("connection_closed", "close() was called"));
    this.#connected = null;
    this.#live = false;
    this.#dropOutbox();
    // Those sent may still be answered while it closes (a handler that closes on the echo of its
    // own publish gets the publish's reply): the close's end rejects the rest, within CLOSE_WAIT
    // in Node when the gateway does not answer it.
    this.#failPending(({ sent }) => !sent);
    if (this.#ws) release(this.#ws, 1000);
    this.#setState("closed");
  }

  #tokens(body) {
    this.#token = body.access_token;
    this.expiresAt = body.expires_in ? Date.now() + body.expires_in * 1000 : null;
    this.#lifetime = body.expires_in ? body.expires_in * 1000 : null;
  }

  // -- the socket ------------------------------------------------------------------------

  /** ``closes``: the count of close() calls when the caller began; one since wins. */
  async #start(closes = this.#closes) {
    if (closes !== this.#closes) throw new GatewayError("connection_closed", "close() was called");
    this.#stopped = false;
    this.#established = false;
    this.#userId = null;
    this.#attempt = 0;
    clearTimeout(this.#backoff); // a reconnect waiting for its turn is this one
    await this.#connect();
  }

  #connect() {
    // connect() or login() again while a socket is open or opening: that socket is let go, not
    // left open and authenticated behind the new one (a double click on "Log in").
    const previous = this.#ws;
    if (previous) {
      this.#ws = null;
      release(previous, 1000);
      this.#live = false;
      this.#dropOutbox();
      this.#failPending(({ sent }) => sent); // their replies would come on the socket let go
      // A renewal under way was that socket's: left set, it turned away every warning of the
      // new socket, which then closed at expiry (4401) instead of renewing.
      this.#renewing = null;
      this.#held = null;
      clearTimeout(this.#deferred);
      this.#deferred = null;
    }
    this.#setState(this.#attempt ? "reconnecting" : "connecting");
    this.#authRetries = 0;
    this.#authFailure = null;
    if (!this.#connected) {
      const deferred = {};
      deferred.promise = new Promise((resolve, reject) => Object.assign(deferred, { resolve, reject }));
      this.#connected = deferred;
    }
    const { promise } = this.#connected;
    const generation = ++this.#generation;
    this.#deadline = setTimeout(() => this.#timedOut(generation), this.#connectTimeout);
    this.#open(generation).catch((err) => {
      if (generation === this.#generation) this.#onClose(null, "", err);
    });
    return promise;
  }

  /**
   * No ``auth_success`` within connectTimeout: the socket is closed as one that never answered.
   * Until the first connection succeeds that rejects connect() (with the server's refusal if it
   * sent one); after it, the client backs off and reconnects.
   */
  #timedOut(generation) {
    if (generation !== this.#generation) return;
    const limit = `no auth_success from ${this.#wsUrl} within ${this.#connectTimeout} ms`;
    this.#abandon(null, this.#authFailure ?? new GatewayError("timeout", limit));
  }

  async #open(generation) {
    let url = this.#wsUrl;
    const protocols = [SUBPROTOCOL];
    if (this.#handshake === "ticket") {
      const expect = (data) => (typeof data?.ticket === "string" && data.ticket ? null : `has no ticket (${kindOf(data?.ticket)})`);
      const { ticket } = await this.#api.post("/v1/ws-ticket", {}, { token: this.#token, expect });
      url += `${url.includes("?") ? "&" : "?"}ticket=${encodeURIComponent(ticket)}`;
    } else if (this.#handshake === "bearer") {
      protocols.push(BEARER_PREFIX + this.#token);
    }
    const auth = this.#handshake === "message" ? await this.#authFrame() : null;
    if (generation !== this.#generation) return;
    const Socket = this.#WebSocket;
    const ws = new Socket(url, protocols);
    this.#ws = ws;
    let opened = false;
    let failure = null;
    ws.onopen = () => {
      opened = true;
      if (auth && this.#ws === ws) this.#send(auth);
    };
    ws.onmessage = (event) => {
      if (this.#ws === ws) this.#receive(event.data);
    };
    // Browsers say nothing about why; Node's ws names the refusal ("Unexpected server response: 404").
    ws.onerror = (event) => { failure = event.message || null; };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      const unopened = new GatewayError("unreachable", `no WebSocket at ${this.#wsUrl}${failure ? ` (${failure})` : ""}`);
      this.#onClose(opened ? event.code : null, event.reason, opened ? (this.#authFailure ?? undefined) : unopened);
    };
  }

  /**
   * A frame that breaks the protocol is the server's fault, and the connection is then broken:
   * an "error" event, the socket closed 1003 (not text), 1007 (not JSON) or 1002 (not a frame of
   * the protocol), and what the close table says of that code (reconnect, with backoff).
   */
  #receive(data) {
    if (typeof data !== "string") return this.#violation(1003, "a binary frame");
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (err) {
      return this.#violation(1007, `a frame that is not JSON (${err.message})`);
    }
    const fault = frameFault(frame);
    if (fault) return this.#violation(1002, fault);
    this.#listen(); // a frame is a sign of life
    this.#onFrame(frame);
  }

  #violation(code, message) {
    const error = new GatewayError("protocol_error", message);
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
    this.#abandon(code, error);
  }

  /**
   * Closes the current socket (with ``code``, if any) without waiting for its close handshake,
   * and acts on ``code`` as on a close; null: as on a socket that never answered.
   */
  #abandon(code, error) {
    const ws = this.#ws;
    this.#ws = null; // its own close event no longer counts
    if (ws) release(ws, code ?? undefined);
    this.#onClose(code, "", error);
  }

  #onFrame(frame) {
    const pending = frame.id != null && this.#pending.get(frame.id);
    const resubscription = frame.id != null && this.#resubscribing.get(frame.id);
    if (frame.type === "auth_success") {
      if (this.#userId !== null && frame.user.id !== this.#userId) return this.#userChanged(frame.user);
      this.#userId = frame.user.id;
      this.user = frame.user;
      this.expiresAt = frame.expires_at * 1000;
      this.#held = frame.expires_at;
      this.#authRetries = 0;
      this.#authFailure = null;
      clearTimeout(this.#deadline);
      this.#established = true;
      // A socket's first auth_success authenticates it, whatever it says of itself.
      if (frame.renewed && this.#live) {
        this.#renewed = this.#renewing;
        this.#renewing = null;
        this.dispatchEvent(new CustomEvent("renewed", { detail: { expiresAt: this.expiresAt } }));
      } else {
        // A server that authenticates and then closes at once must not earn instant reconnects.
        clearTimeout(this.#stable);
        this.#stable = setTimeout(() => { this.#attempt = 0; }, STABLE_AFTER);
        this.#live = true;
        this.#pace(frame.limits);
        this.#listen();
        for (const channel of this.#channels.keys()) this.#resubscribe(channel, 0);
        for (const request of this.#pending.values()) if (!request.sent) this.#transmit(request);
        this.#connected?.resolve();
        this.#connected = null;
      }
      this.#setState("authenticated");
    } else if (frame.type === "auth_error") {
      this.#authRefused(frame);
    } else if (resubscription) {
      this.#resubscribed(frame, resubscription);
    } else if (frame.type === "error" && frame.code === "rate_limited" && this.#pacer) {
      Object.assign(this.#pacer, { tokens: 0, stamp: now() }); // the gateway's bucket is empty
    } else if (pending) {
      this.#pending.delete(frame.id);
      // Its position in its place in the stream: messages read after it (one read may bring
      // both) are delivered before subscribe() resumes, and the position they moved on must not
      // be taken back (a first message starts an epoch of its own: delivered twice).
      if (frame.type === "subscribed") {
        this.#remember(frame.channel, frame.position);
        // Subscribed in stream order too: the gateway's "unsubscribed" right behind the reply
        // (one read brings both, before subscribe() resumes) must find the channel to drop.
        this.#channels.set(frame.channel, Boolean(pending.frame.presence_events));
      }
      // Left in stream order too: a subscribe answered just before it (subscribe() then
      // unsubscribe() at once) must not leave the channel recorded, to be subscribed again by
      // every reconnect although the gateway left it.
      if (frame.type === "unsubscribed" && pending.frame.type === "unsubscribe") {
        this.#channels.delete(pending.frame.channel);
        this.#positions.delete(pending.frame.channel);
      }
      if (frame.type === "error") pending.reject(new GatewayError(frame.code, frame.message));
      else pending.resolve(frame);
    } else if (frame.type === "message") {
      this.#deliver(frame);
    } else if (frame.type === "subscribed") {
      this.#recovered(frame);
    } else if (frame.type === "join" || frame.type === "leave") {
      this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
    } else if (frame.type === "token_expiring") {
      this.#renew(frame.expires_at);
    } else if (frame.type === "revoked") {
      this.dispatchEvent(new CustomEvent("revoked", { detail: { reason: frame.reason } }));
    } else if (frame.type === "unsubscribed") {
      // The gateway's own (the app's backend, or a renewed token that may not read it): the page
      // hears it, or its view of the channel would go silent without a word.
      this.#positions.delete(frame.channel);
      if (this.#channels.delete(frame.channel)) {
        this.dispatchEvent(new CustomEvent("unsubscribed", { detail: { channel: frame.channel, reason: frame.reason ?? null } }));
      }
    }
  }

  /**
   * An ``auth_success`` for another user than the one this run authenticated as: in a browser,
   * another page of the origin logged in as someone else, and the session cookie the tabs share
   * is theirs now. It is not adopted: the socket is closed, the client stops, and then an "error"
   * event (``user_changed``) lets the page start again (login() or resume()).
   */
  #userChanged(user) {
    const name = ({ id, username }) => JSON.stringify(username ?? id);
    const error = new GatewayError("user_changed", `authenticated as ${name(this.user)}, the session is now ${name(user)}'s`);
    this.#stopped = true; // the close below only cleans up
    this.#abandon(1000, error);
    this.#stop(null, error);
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
  }

  // -- positions and recovery ------------------------------------------------------------

  /** A channel again on a new socket, with an id: its answer is taken in turn with the stream. */
  #resubscribe(channel, attempt) {
    const id = `s${++this.#ids}`;
    const frame = { type: "subscribe", channel, id };
    if (this.#channels.get(channel)) frame.presence_events = true;
    const since = this.#positions.get(channel);
    if (since) frame.since = since;
    this.#resubscribing.set(id, { channel, attempt, timer: null });
    this.#post({ frame, resubscription: true });
  }

  /**
   * A resubscription's answer: the channel's missed messages, or a refusal. A passing one is
   * asked again after a backoff; any other drops the channel with a "resubscribe_failed" event.
   */
  #resubscribed(frame, { channel, attempt, timer }) {
    clearTimeout(timer);
    this.#resubscribing.delete(frame.id);
    if (frame.type !== "error") {
      if (this.#channels.has(channel)) {
        // Confirmed: last in line, so a link that flaps faster than a whole resubscription
        // confirms the others next time rather than the same first channels again.
        const presenceEvents = this.#channels.get(channel);
        this.#channels.delete(channel);
        this.#channels.set(channel, presenceEvents);
        this.#recovered(frame);
      }
    } else if (RESUBSCRIBE_RETRIED.has(frame.code)) {
      this.#askAgain(channel, attempt);
    } else if (this.#channels.delete(channel)) {
      this.#positions.delete(channel);
      const detail = { channel, code: frame.code, message: frame.message ?? "" };
      this.dispatchEvent(new CustomEvent("resubscribe_failed", { detail }));
    }
  }

  /** Unanswered within requestTimeout (dropped, or lost in a proxy), or refused for now. */
  #askAgain(channel, attempt) {
    const timer = setTimeout(() => {
      this.#retrying.delete(timer);
      if (this.#live && this.#channels.has(channel)) this.#resubscribe(channel, attempt + 1);
    }, backoffDelay(attempt));
    this.#retrying.add(timer);
  }

  /** This socket's budget: the gateway's bucket, one token short (its bucket filled first). */
  #pace(limits) {
    const said = limits?.rate_per_second;
    const rate = typeof said === "number" && said > 0 && said < Infinity ? said : DEFAULT_LIMITS.rate_per_second;
    const burst = Math.max(1, (Number.isInteger(limits?.rate_burst) && limits.rate_burst >= 1 ? limits.rate_burst : DEFAULT_LIMITS.rate_burst) - 1);
    // The gateway's max_message_bytes: a larger message closes the socket 1009, which stops the client.
    const maxMessage = Number.isInteger(limits?.max_message_bytes) && limits.max_message_bytes >= 1 ? limits.max_message_bytes : null;
    this.#pacer = { rate, burst, tokens: burst, stamp: now(), maxMessage };
  }

  /** Sends ``item`` within the budget, at once while there is no budget yet (``auth``). */
  #post(item) {
    if (!this.#pacer) {
      const sent = this.#send(item.frame);
      if (item.request) item.request.sent = sent;
      return;
    }
    if (item.request) item.request.sent = true; // #dropOutbox makes it unsent again
    this.#outbox.push(item);
    if (this.#pacing === null) this.#flush();
  }

  #flush() {
    this.#pacing = null;
    while (this.#outbox.length > 0) {
      const item = this.#outbox[0];
      const resubscription = item.resubscription && this.#resubscribing.get(item.frame.id);
      const dead = item.request ? this.#pending.get(item.frame.id) !== item.request : item.resubscription && !resubscription;
      if (dead) {
        this.#outbox.shift(); // timed out while it waited
        continue;
      }
      const pacer = this.#pacer;
      const over = item.request && oversize(item.frame, pacer.maxMessage);
      if (over) {
        this.#outbox.shift();
        this.#pending.delete(item.frame.id);
        item.request.reject(new GatewayError("message_too_large", `not sent: ${over}`));
        continue;
      }
      const at = now();
      pacer.tokens = Math.min(pacer.burst, pacer.tokens + ((at - pacer.stamp) * pacer.rate) / 1000);
      pacer.stamp = at;
      if (pacer.tokens < 1) {
        // At most a second at a time: a longer timer than 2^31 ms would fire at once.
        this.#pacing = setTimeout(() => this.#flush(), Math.min(1000, Math.ceil(((1 - pacer.tokens) * 1000) / pacer.rate)));
        return;
      }
      pacer.tokens -= 1;
      this.#outbox.shift();
      const sent = this.#send(item.frame);
      if (item.request) item.request.sent = sent;
      if (resubscription) {
        resubscription.timer = setTimeout(() => {
          if (this.#resubscribing.get(item.frame.id) !== resubscription) return;
          this.#resubscribing.delete(item.frame.id);
          this.#askAgain(resubscription.channel, resubscription.attempt);
        }, this.#requestTimeout);
      }
    }
  }

  /** The socket is gone: what waited for its budget waits for the next socket's. */
  #dropOutbox() {
    for (const item of this.#outbox) if (item.request) item.request.sent = false;
    this.#outbox = [];
    clearTimeout(this.#pacing);
    this.#pacing = null;
    this.#pacer = null;
    for (const { timer } of this.#resubscribing.values()) clearTimeout(timer);
    this.#resubscribing.clear();
    for (const timer of this.#retrying) clearTimeout(timer);
    this.#retrying.clear();
    clearTimeout(this.#silence);
    this.#silence = null;
  }

  /**
   * A browser cannot ping, and a socket to a frozen server or over a lost route stays "open"
   * for minutes: after ``heartbeat`` ms without a frame the client sends a protocol ``ping``,
   * and without any frame ``heartbeat / 2`` ms later it drops the socket and reconnects.
   */
  #listen() {
    this.#heard = now();
    if (this.#silence === null && this.#heartbeat && this.#live) this.#watch(this.#heartbeat);
  }

  /** One timer per socket, not one per frame: it looks at when the last frame came. */
  #watch(ms) {
    const ws = this.#ws;
    this.#silence = setTimeout(() => {
      this.#silence = null;
      if (this.#ws !== ws || !this.#live) return;
      const quiet = now() - this.#heard;
      if (quiet >= this.#heartbeat * 1.5) {
        const silent = `no frame for ${Math.round(quiet)} ms, a ping unanswered`;
        return this.#abandon(null, new GatewayError("timeout", silent));
      }
      if (quiet >= this.#heartbeat && this.#pinged !== this.#heard) {
        this.#pinged = this.#heard;
        // Not behind the outbox: a budget of less than a frame per heartbeat made it wait past
        // the deadline and drop a healthy socket. Its token is still counted (the bucket may go
        // below zero: what waits there waits longer), and an answer of rate_limited is life too.
        if (this.#pacer) this.#pacer.tokens -= 1;
        this.#send({ type: "ping", id: "heartbeat" });
      }
      this.#watch((quiet >= this.#heartbeat ? this.#heartbeat * 1.5 : this.#heartbeat) - quiet);
    }, ms);
  }

  /** Never back past a message already delivered: a reply read after the messages that
   * followed it (one read brought both) is older than them. */
  #remember(channel, position) {
    if (!position || !Number.isInteger(position.offset)) return;
    if (!this.#seen(channel, position)) this.#positions.set(channel, { offset: position.offset, epoch: position.epoch });
  }

  /** At or before the channel's position: such a message was delivered already (a late answer to
   * a resubscription asked twice), and such a position would move it back. */
  #seen(channel, position) {
    const known = this.#positions.get(channel);
    return Boolean(known) && known.epoch === position.epoch && known.offset >= position.offset;
  }

  #deliver(frame) {
    if (frame.offset !== undefined) {
      if (this.#seen(frame.channel, frame)) return;
      this.#positions.set(frame.channel, { offset: frame.offset, epoch: frame.epoch });
    }
    this.dispatchEvent(new CustomEvent("message", { detail: frame }));
  }

  /** A resubscription's answer: the missed messages first, then the stream goes on. */
  #recovered(frame) {
    const publications = frame.publications ?? [];
    for (const publication of publications) this.#deliver(publication);
    this.#remember(frame.channel, frame.position);
    if ("recovered" in frame) {
      const detail = { channel: frame.channel, recovered: frame.recovered, count: publications.length };
      this.dispatchEvent(new CustomEvent("recovery", { detail }));
    }
  }

  /**
   * An ``auth`` refused. Retryable, within the server's attempts: refresh first when the close
   * table says so of the code (token_expired), else wait a backoff delay; then ``auth`` again on
   * the same socket. Otherwise an "error" event, and the server closes the socket (before
   * authentication) or keeps it on the old token (a failed renewal).
   */
  async #authRefused(frame) {
    const ws = this.#ws;
    const refusal = new GatewayError(frame.code, frame.message);
    if (!frame.retry || this.#authRetries >= AUTH_RETRIES) {
      this.#authFailure = refusal;
      this.#renewing = null;
      this.dispatchEvent(new CustomEvent("error", { detail: refusal }));
      return;
    }
    this.#authRetries += 1;
    try {
      if (actionFor(4401, frame.code) === "refresh_then_reconnect") await this.refresh();
      else await sleep(backoffDelay(this.#authRetries - 1));
      if (this.#ws === ws) this.#post({ frame: await this.#authFrame(typeof frame.id === "string" ? frame.id : undefined) });
    } catch (err) {
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
      // A refresh auth_service refused for good (4xx, not 429) ends the session; anything else waits for the close.
      if (this.#ws === ws && refusedForGood(err)) this.#abandon(1000, err);
    }
  }

  /** Whether the access token expires within STALE_MARGIN, by its ``exp`` or the server's ``expires_at``. */
  #tokenStale() {
    const exp = tokenClaims(this.#token)?.exp;
    const expiries = [Number.isFinite(exp) ? exp * 1000 : null, this.expiresAt].filter((at) => at !== null);
    return expiries.length > 0 && Math.min(...expiries) - Date.now() < STALE_MARGIN;
  }

  /**
   * One renewal at a time, for a warning about the token the socket holds: docs/protocol.md has
   * ``expires_at`` be that token's ``exp`` (its ``auth_success``'s ``expires_at``) or a sooner close
   * (a key withdrawal), never a later one. A warning for an expiry already renewed (a late copy) is
   * ignored; one within MIN_RENEWAL_INTERVAL of the last renewal waits for it to pass, and every
   * warning meanwhile joins that one renewal.
   */
  async #renew(expiresAt) {
    if (this.#held === null || expiresAt > this.#held) return;
    if (this.#renewing !== null || expiresAt === this.#renewed || this.#deferred !== null) return;
    // A quarter of auth_service's token lifetime when that is shorter (tokens of seconds).
    const spacing = Math.min(MIN_RENEWAL_INTERVAL, (this.#lifetime ?? Infinity) / 4);
    const wait = this.#lastRenewal + spacing - Date.now();
    if (wait > 0) {
      const generation = this.#generation;
      this.#deferred = setTimeout(() => {
        this.#deferred = null;
        if (generation === this.#generation) this.#renew(expiresAt);
      }, wait);
      return;
    }
    this.#lastRenewal = Date.now();
    this.#renewing = expiresAt;
    const ws = this.#ws;
    this.#setState("renewing");
    try {
      await this.refresh();
      if (this.#ws === ws) this.#post({ frame: await this.#authFrame("renew") });
    } catch (err) {
      this.#renewing = null;
      // The socket closes at expiry (4401 token_expired) and DISCONNECTS takes it from there.
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
    }
  }

  /** ``auth``, with a proof for ``GET`` of the gateway's URL when the token is bound. */
  async #authFrame(id) {
    const token = this.#token;
    const frame = { type: "auth", token };
    if (this.#dpop && boundKey(token)) frame.proof = await this.#dpop.proof("GET", this.#wsUrl, { accessToken: token });
    if (id) frame.id = id;
    return frame;
  }

  /**
   * ``code`` is null when the socket never opened: refused before the upgrade, or unreachable.
   * Until the first connection succeeds that ends the attempt (a wrong URL is one error, not a
   * retry loop); after it, it is what a network does, and the client backs off and reconnects.
   */
  async #onClose(code, reason, error) {
    this.#ws = null;
    this.#generation += 1;
    this.#renewing = null;
    this.#held = null;
    clearTimeout(this.#deferred);
    this.#deferred = null;
    clearTimeout(this.#stable);
    clearTimeout(this.#deadline);
    this.#live = false;
    this.#dropOutbox();
    // Requests sent on this socket lost their reply; those not sent yet wait for the next one.
    this.#failPending(({ sent }) => sent);
    if (this.#stopped) return;
    if (code === null && !this.#established) return this.#stop(code, error);
    let action = code === null ? "reconnect" : actionFor(code, reason);
    // Refused before the upgrade (bearer or ticket): most likely the token expired meanwhile.
    if (code === null && this.#handshake !== "message" && error?.code !== "timeout") action = "refresh_then_reconnect";
    if (refusedForGood(error)) action = "stop";
    if (action === "stop") return this.#stop(code, error);
    this.#setState("reconnecting", code);
    // close() clears the wait: nothing keeps a Node process alive once the client is closed.
    await new Promise((resolve) => { this.#backoff = setTimeout(resolve, backoffDelay(this.#attempt++)); });
    if (this.#stopped) return;
    if (action === "refresh_then_reconnect" || this.#tokenStale()) {
      try {
        await this.refresh();
      } catch (err) {
        if (refusedForGood(err)) return this.#stop(code, err);
      }
    }
    if (!this.#stopped) this.#connect().catch(() => {});
  }

  #stop(code, error) {
    this.#stopped = true;
    this.#failPending(() => true);
    this.#token = null;
    this.#connected?.reject(error ?? new GatewayError(`closed_${code}`));
    this.#connected = null;
    this.#setState("closed", code);
  }

  #setState(state, code = null) {
    this.#state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, code } }));
  }

  /** Sends a frame on the current socket; false when there is none, or it cannot send. */
  #send(frame) {
    try {
      this.#ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false; // no socket, or not open: its close comes
    }
  }

  /** A request not sent (the socket could not take it) waits for the next socket. */
  #transmit(request) {
    this.#post({ frame: request.frame, request });
  }

  /** Rejects the requests ``which`` selects with ``connection_closed``. */
  #failPending(which) {
    for (const [id, request] of this.#pending) {
      if (!which(request)) continue;
      this.#pending.delete(id);
      request.reject(new GatewayError("connection_closed"));
    }
  }

  /**
   * Sends a request, at once when the socket is authenticated, else once it is; its reply (or an
   * error) within requestTimeout, at most maxPending at once.
   */
  #request(frame) {
    if (this.#stopped) return Promise.reject(new GatewayError("not_connected"));
    let fault;
    try {
      fault = wireFault(JSON.stringify(frame));
    } catch (err) {
      fault = err.message; // a BigInt, a cycle: it could never be sent
    }
    if (fault) return Promise.reject(new GatewayError("bad_request", `not sent: ${fault}`));
    if (this.#pending.size >= this.#maxPending) {
      return Promise.reject(new GatewayError("too_many_pending", `${this.#pending.size} requests are waiting for a reply`));
    }
    const id = `r${++this.#ids}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new GatewayError("timeout", `no reply to ${frame.type} within ${this.#requestTimeout} ms`));
      }, this.#requestTimeout);
      const settled = (settle) => (value) => {
        clearTimeout(timer);
        settle(value);
      };
      const request = { frame: { ...frame, id }, sent: false, resolve: settled(resolve), reject: settled(reject) };
      this.#pending.set(id, request);
      if (this.#live) this.#transmit(request);
    });
  }
}
