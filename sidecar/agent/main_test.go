package agent

import (
	"os"
	"testing"

	"github.com/envjupyter/envjupyter/shared/awsconf"
)

// The start's stages are X-Ray subsegments; the tests run them without a
// segment, as an untraced command runs, which the SDK need not log.
func TestMain(m *testing.M) {
	awsconf.QuietXRay()
	os.Exit(m.Run())
}
