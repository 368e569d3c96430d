// Command sso is the sign-in service of access mode sso (docs/SSO.md): the
// proxy forwards /sso/ on the console's host to it. It runs next to the
// proxy with the API function's environment (tables, SSM configuration).
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/envjupyter/envjupyter/functions/internal/lambdaenv"
	"github.com/envjupyter/envjupyter/functions/internal/sso"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sso:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	svc, err := lambdaenv.Service(ctx)
	if err != nil {
		return err
	}
	if base := os.Getenv("SSO_PUBLIC_BASE_URL"); base != "" {
		svc.Config.PublicBaseURL = base // the proxy the browser came through
	}
	h, err := sso.New(ctx, sso.Config{
		Issuer:        os.Getenv("SSO_ISSUER"),
		ClientID:      os.Getenv("SSO_CLIENT_ID"),
		ClientSecret:  os.Getenv("SSO_CLIENT_SECRET"),
		CustomerClaim: os.Getenv("SSO_CUSTOMER_CLAIM"),
		CallbackURL:   svc.Config.PublicBaseURL + sso.CallbackPath,
		// The link keys sign the access links the sign-in ends in, and
		// seal the sign-ins in flight, which only the browser keeps.
		Keys: svc.Config.LinkKeys,
	}, svc, svc.Log)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: os.Getenv("SSO_LISTEN"), Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}
