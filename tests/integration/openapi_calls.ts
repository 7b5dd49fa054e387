// What a team writes with openapi-generator's typescript-fetch clients of the two documents:
// register, log in, refresh (a form body), publish with the API key. tests/integration/
// test_openapi_clients.py compiles it under --strict and runs it in Node against the services.
import { Configuration as AuthConfiguration, DefaultApi as AuthApi, TokenGrantTypeEnum } from "./auth/index";
import { Configuration as WsConfiguration, DefaultApi as WsApi } from "./ws/index";

async function main(authUrl: string, wsUrl: string, apiKey: string, password: string): Promise<void> {
  const bodies: Record<string, string> = {};
  const fetchApi = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const body = init?.body;
    bodies[new URL(String(input)).pathname] = body instanceof URLSearchParams ? "form" : typeof body;
    return fetch(input, init);
  };
  const auth = new AuthApi(new AuthConfiguration({ basePath: authUrl, fetchApi }));
  const credentials = { username: "ts-alice", password };
  const user = await auth.register({ credentials });
  const tokens = await auth.login({ credentials });
  const refreshed = await auth.token({
    grantType: TokenGrantTypeEnum.REFRESH_TOKEN,
    refreshToken: tokens.refreshToken,
  });
  const ws = new WsApi(new WsConfiguration({ basePath: wsUrl, accessToken: apiKey }));
  const published = await ws.publish({ publish: { channel: "user:ts-alice", data: { note: "hello" } } });
  console.log(JSON.stringify({ user, tokens, refreshed, published, bodies }));
}

const [authUrl, wsUrl, apiKey, password] = process.argv.slice(2);
main(authUrl, wsUrl, apiKey, password).catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
