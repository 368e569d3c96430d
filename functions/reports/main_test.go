package main

import (
	"os"
	"testing"

	"github.com/envjupyter/envjupyter/shared/awsconf"
)

func TestMain(m *testing.M) {
	awsconf.QuietXRay() // the handler traces with X-Ray; no daemon here
	os.Exit(m.Run())
}
