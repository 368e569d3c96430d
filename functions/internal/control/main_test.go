package control

import (
	"io"
	"os"
	"testing"

	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/emf"
)

func TestMain(m *testing.M) {
	awsconf.QuietXRay()
	emf.SetOutput(io.Discard)
	os.Exit(m.Run())
}
