// The demo page: everything it shows comes from GatewayClient events; messages are rendered
// with textContent only (never as HTML), and the page's CSP forbids inline script.
import { GatewayClient } from "/gateway-client.js";

const $ = (id) => document.getElementById(id);
const config = await (await fetch("/config.json")).json();
// Behind the compose stack's nginx auth_service sits under /auth; embedded it is this origin.
const authUrl = config.authUrl ?? location.origin;

/** Tokens are DPoP-bound to a non-extractable key of this browser's, except over the bearer
 * subprotocol, which cannot carry a proof. */
function makeClient(handshake) {
  const dpop = handshake === "bearer" ? { dpop: false } : {};
  return new GatewayClient({ authUrl, wsUrl: config.wsUrl, handshake, ...dpop });
}

let client;
/** What the page says whenever it has nothing newer to say (an unknown ?handshake=). */
let standing = "";
try {
  client = makeClient(new URLSearchParams(location.search).get("handshake") ?? "message");
} catch (err) {
  // ?handshake= names one the client does not know: say so, and use the default.
  client = makeClient("message");
  standing = `${err.message}; using "message".`;
  notice(standing);
}
let room = null;
let renewals = 0;

function show(loggedIn) {
  $("login").hidden = loggedIn;
  $("chat").hidden = !loggedIn;
  $("who").textContent = loggedIn && client.user ? `Signed in as ${client.user.username}` : "";
}

/** Whether the access token is bound to this browser's key (DPoP), and which key. */
async function showBinding() {
  const bound = client.tokenType === "DPoP";
  const thumbprint = bound ? await client.thumbprint() : null;
  $("binding").textContent = bound ? "bound to this browser's key" : client.tokenType ? "bearer token" : "-";
  $("key-thumbprint").textContent = thumbprint ? `key ${thumbprint.slice(0, 12)}…` : "";
  $("key-thumbprint").title = thumbprint ?? "";
}

function notice(text) {
  $("notice").textContent = text;
}

function messageItem(frame) {
  const item = document.createElement("li");
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = frame.from_username ?? "server";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = typeof frame.data?.text === "string" ? frame.data.text : JSON.stringify(frame.data);
  if (client.user && frame.from === client.user.id) item.className = "mine";
  if (frame.offset !== undefined) item.dataset.at = `${frame.epoch}:${frame.offset}`;
  item.append(from, text);
  return item;
}

function addMessage(frame) {
  if (frame.channel !== room) return;
  const item = messageItem(frame);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
}

/** One line per user, no tab count: "join" and "leave" come per user (a second tab of someone
 * already present announces nothing), so a count would differ from view to view. */
async function showMembers() {
  const names = (await client.presence(room)).map(({ user }) => user.username ?? user.id);
  names.sort((a, b) => a.localeCompare(b));
  $("members").replaceChildren(
    ...names.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }),
  );
}

/** The room's recent messages before those that arrived live since ``position`` (null: all
 * those not shown already). */
async function showHistory(position) {
  const { publications } = await client.history(room, { limit: 50 });
  const shown = new Set([...$("messages").children].map((item) => item.dataset.at));
  const earlier = publications.filter((frame) => (!position || frame.offset <= position.offset) && !shown.has(`${frame.epoch}:${frame.offset}`));
  $("messages").prepend(...earlier.map(messageItem));
}

async function join(name) {
  if (room) await client.unsubscribe(room).catch(() => {});
  room = `chat:${name}`;
  $("room-name").textContent = name;
  $("messages").replaceChildren();
  $("recovery").textContent = "";
  const { position } = await client.subscribe(room, { presenceEvents: true });
  await Promise.all([showHistory(position), showMembers()]);
  $("chat").dataset.joined = room;
}

async function enter() {
  notice(standing);
  show(true);
  await join($("room").value);
}

client.addEventListener("state", ({ detail }) => {
  $("state").textContent = detail.state;
  if (detail.state === "authenticated") showBinding().catch(() => {});
  if (detail.state === "closed" && detail.code === 4403) {
    notice("You were logged out (session revoked). Log in again.");
    show(false);
  } else if (detail.state === "closed" && detail.code !== null && detail.code !== 1000) {
    notice(`Disconnected (${detail.code}). Log in again.`);
    show(false);
  }
});
client.addEventListener("error", ({ detail }) => {
  if (detail.code !== "user_changed") return;
  // Another page of this site logged in as someone else: the client stopped rather than become them.
  notice(`This tab was signed in as ${client.user.username}, and another account has logged in on this browser since. Log in again, or reload to continue as that account.`);
  show(false);
});
client.addEventListener("message", ({ detail }) => addMessage(detail));
client.addEventListener("renewed", ({ detail }) => {
  renewals += 1;
  $("renewals").textContent = String(renewals);
  const entry = document.createElement("li");
  entry.textContent = `${new Date().toLocaleTimeString()}: renewed on the same socket, valid until ${new Date(detail.expiresAt).toLocaleTimeString()}`;
  $("renewal-log").prepend(entry);
});
client.addEventListener("revoked", () => notice("This session was revoked."));
client.addEventListener("unsubscribed", ({ detail }) => {
  // The gateway took the room away (the app's backend, or a renewed token that may not read it).
  if (detail.channel === room) $("recovery").textContent = `${new Date().toLocaleTimeString()}: you were removed from this room (${detail.reason ?? "by the server"}); join it again to rejoin`;
});
for (const kind of ["join", "leave"]) {
  client.addEventListener(kind, ({ detail }) => {
    if (detail.channel === room) showMembers().catch(() => {});
  });
}
client.addEventListener("recovery", ({ detail }) => {
  if (detail.channel !== room) return;
  const time = new Date().toLocaleTimeString();
  if (detail.recovered) {
    $("recovery").textContent = `${time}: reconnected, ${detail.count} missed message(s) recovered`;
  } else {
    // The gap cannot be filled: start again from the room's recent history, but for what came
    // live since, shown already. Not cut at client.position(room): a resubscription answered
    // while history could not be read has no position, and the one kept from before the drop
    // hid every message published during the outage.
    $("recovery").textContent = `${time}: reconnected, missed messages could not be recovered; reloaded the recent ones`;
    $("messages").replaceChildren();
    showHistory(null).catch(() => {});
  }
  showMembers().catch(() => {});
});

setInterval(() => {
  const left = client.expiresAt ? Math.max(0, Math.round((client.expiresAt - Date.now()) / 1000)) : null;
  $("token-life").textContent = left === null ? "-" : String(left);
}, 250);

async function submitLogin(register) {
  const username = $("username").value.trim();
  const password = $("password").value;
  $("login-error").textContent = "";
  try {
    if (register) await client.register(username, password);
    await client.login(username, password);
    $("password").value = "";
    await enter();
  } catch (err) {
    $("login-error").textContent = `Could not log in: ${err.message}`;
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitLogin(false);
});
$("register-button").addEventListener("click", () => {
  if ($("login-form").reportValidity()) submitLogin(true);
});
$("room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  join($("room").value).catch((err) => notice(err.message));
});
$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  try {
    await client.publish(room, { text });
    $("text").value = "";
  } catch (err) {
    notice(`Not sent: ${err.message}`);
  }
});
/** Success only once auth_service revoked the session: a failed request leaves the session (and
 * every other tab on it) logged in, so the page says so and keeps the buttons to try again. */
async function logOut(everywhere) {
  try {
    await client.logout({ everywhere });
  } catch (err) {
    notice(`Not logged out: ${err.message}. The session is still active${everywhere ? " on every device" : ""}; try again.`);
    return;
  }
  notice(everywhere ? "Logged out on every device." : "Logged out.");
  show(false);
}

$("logout").addEventListener("click", () => logOut(false));
$("logout-everywhere").addEventListener("click", () => logOut(true));

// A first visit has no session to resume: the client says so without asking the server. A resume
// that fails says why: the login form alone read as "logged out" when auth_service was only
// unreachable for a moment, and the session was still there for a reload.
try {
  if (await client.resume()) await enter();
  else show(false);
} catch (err) {
  show(false);
  notice(err?.code === "invalid_grant"
    ? "Your session has ended: log in again."
    : `Could not resume your session: ${err?.message ?? err}. Reload to try again, or log in.`);
}
document.body.dataset.ready = "true";
