// The local stack's OpenID Connect provider: panva/oidc-provider with its
// own development login and consent pages (features.devInteractions), one
// confidential client (the sso service) and two demo users of two
// customers. Started by infra/devstack; nothing here is production code.
//
// Environment: OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET,
// OIDC_REDIRECT_URI (the sso service's callback), OIDC_CUSTOMER_CLAIM,
// OIDC_USERS ("login:customer,login:customer").
import Provider from 'oidc-provider';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const port = Number(need('OIDC_PORT'));
const claim = need('OIDC_CUSTOMER_CLAIM');
const users = new Map(need('OIDC_USERS').split(',').map((pair) => pair.split(':')));

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: need('OIDC_CLIENT_ID'),
    client_secret: need('OIDC_CLIENT_SECRET'),
    redirect_uris: [need('OIDC_REDIRECT_URI')],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  // Only the demo users exist; the dev login page takes any password.
  async findAccount(ctx, id) {
    if (!users.has(id)) return undefined;
    return { accountId: id, async claims() { return { sub: id, [claim]: users.get(id) }; } };
  },
  scopes: ['openid'],
  claims: { openid: ['sub', claim] },
  // The customer claim goes into the ID token, which is all the sso service reads.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: [need('OIDC_CLIENT_SECRET')] },
});
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider on http://127.0.0.1:${port} (users: ${[...users.keys()].join(', ')})`);
});
