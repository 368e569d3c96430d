package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The local sign-in (access mode sso, docs/SSO.md): infra/oidc's provider
// with two demo users of two customers, the sso service, and a second
// proxy in access mode sso on the same route table.
const (
	SSOClientID      = "envjupyter-local"
	SSOCustomerClaim = "org" // not the API's claim name: the setting is the sso service's own
	SSOUserA         = "alice"
	SSOCustomerA     = "cust-sso-a"
	SSOUserB         = "bob"
	SSOCustomerB     = "cust-sso-b"
)

// SSOProxyURL is the console origin of the proxy in access mode sso.
func (s *Stack) SSOProxyURL() string {
	return "http://" + JupyterDomain + ":" + strconv.Itoa(s.Opts.SSOProxyPort)
}

// SSOEnvURL is an environment's JupyterLab behind the proxy in access mode sso.
func (s *Stack) SSOEnvURL(environmentID string) string {
	return "http://env-" + environmentID + "." + JupyterDomain + ":" + strconv.Itoa(s.Opts.SSOProxyPort) + "/env-" + environmentID + "/"
}

// SSOIssuer is the local provider's issuer URL (its login page is there).
func (s *Stack) SSOIssuer() string { return "http://127.0.0.1:" + strconv.Itoa(s.Opts.OIDCPort) }

// startSSO installs and starts the provider, then the sso service with the
// API function's environment, then the proxy in access mode sso.
func (s *Stack) startSSO(ctx context.Context, console string) error {
	dir := filepath.Join(s.Opts.Root, "infra", "oidc")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider")); err != nil {
		cmd := exec.CommandContext(ctx, "npm", "ci", "--prefix", dir, "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("installing infra/oidc (npm ci): %w\n%s", err, b)
		}
	}
	secret := randomID() + randomID()
	oidcEnv := []string{
		"OIDC_PORT=" + strconv.Itoa(s.Opts.OIDCPort), "OIDC_CLIENT_ID=" + SSOClientID, "OIDC_CLIENT_SECRET=" + secret,
		"OIDC_REDIRECT_URI=" + s.SSOProxyURL() + "/sso/callback", "OIDC_CUSTOMER_CLAIM=" + SSOCustomerClaim,
		"OIDC_USERS=" + SSOUserA + ":" + SSOCustomerA + "," + SSOUserB + ":" + SSOCustomerB,
	}
	p, err := s.spawn(s.LogDir(), "oidc", oidcEnv, "node", filepath.Join(dir, "provider.mjs"))
	if err != nil {
		return err
	}
	if err := waitTCP("127.0.0.1:"+strconv.Itoa(s.Opts.OIDCPort), p, 20*time.Second); err != nil {
		return err
	}
	var api *Function
	for i := range s.Functions {
		if s.Functions[i].LogicalID == "ApiFunction" {
			api = &s.Functions[i]
		}
	}
	if api == nil {
		return fmt.Errorf("no ApiFunction in the template")
	}
	listen := "127.0.0.1:" + strconv.Itoa(s.Opts.SSOPort)
	env := append(s.processEnv(),
		"SSO_LISTEN="+listen, "SSO_ISSUER="+s.SSOIssuer(), "SSO_CLIENT_ID="+SSOClientID, "SSO_CLIENT_SECRET="+secret,
		"SSO_CUSTOMER_CLAIM="+SSOCustomerClaim, "SSO_PUBLIC_BASE_URL="+s.SSOProxyURL())
	for k, v := range api.Env {
		env = append(env, k+"="+v)
	}
	if p, err = s.spawn(s.LogDir(), "sso", env, filepath.Join(s.Opts.WorkDir, "bin", "sso")); err != nil {
		return err
	}
	if err := waitTCP(listen, p, 20*time.Second); err != nil {
		return err
	}
	return s.startProxy("nginx-sso", "proxy-sso", s.Opts.SSOProxyPort, s.envOrigin(), console,
		"ENV_ACCESS=sso", "SSO_UPSTREAM=http://"+listen)
}
