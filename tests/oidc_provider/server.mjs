// An independent OAuth 2.0 authorization server for the end-to-end tests: panva's certified
// oidc-provider (pinned in package.json), configured for machines only. The test writes a JSON
// file and passes its path: {port, jwks, clients: [{client_id, client_secret}], opaque_clients,
// token_ttl_seconds: {client_id: seconds}, default_ttl_seconds, scope}.
//
// Development-friendly settings, fine on http://127.0.0.1 only: an http issuer (oidc-provider
// accepts it; its https demands concern cookies, which client credentials never use), no
// interactions, no refresh tokens, in-memory storage (the default adapter).
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${settings.port}`;
const opaqueClients = new Set(settings.opaque_clients ?? []);
const ttlOf = (clientId) => settings.token_ttl_seconds?.[clientId] ?? settings.default_ttl_seconds ?? 300;

const provider = new Provider(issuer, {
  clients: settings.clients.map(({ client_id, client_secret }) => ({
    client_id,
    client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: settings.scope,
  })),
  jwks: settings.jwks,
  scopes: settings.scope.split(' '),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf,
      // Any http(s) resource is a resource server here: the wrong-audience test asks for another.
      getResourceServerInfo: (ctx, resource, client) => ({
        audience: resource,
        scope: settings.scope,
        accessTokenFormat: opaqueClients.has(client.clientId) ? 'opaque' : 'jwt',
        accessTokenTTL: ttlOf(client.clientId),
      }),
    },
  },
  ttl: { ClientCredentials: (ctx, token, client) => ttlOf(client.clientId) },
});

provider.listen(settings.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
