package e2e

import (
	"testing"

	"github.com/envjupyter/envjupyter/infra/devstack"
)

// envImage is an environment image the core lifecycle runs on: customers'
// images differ, and the sidecar launches whichever Jupyter each one has.
type envImage struct {
	name string // the subtest's name
	ref  string // the Docker image
	ui   string // where its user interface lives, under the base URL
}

var (
	labImage      = envImage{name: "lab", ref: devstack.LabImage, ui: "lab"}
	notebookImage = envImage{name: "notebook", ref: devstack.NotebookImage, ui: "tree"}
	// coreImages are the images the core lifecycle tests run on.
	coreImages = []envImage{labImage, notebookImage}
)

// onEachImage runs f as a subtest per core image.
func onEachImage(t *testing.T, f func(t *testing.T, img envImage)) {
	for _, img := range coreImages {
		t.Run(img.name, func(t *testing.T) { f(t, img) })
	}
}
