package e2e

import (
	"os"
	"testing"
)

// TestMain removes the herald binaries built for this run (heraldBinary):
// a quarter of a gigabyte per run, left in the temporary folder otherwise.
func TestMain(m *testing.M) {
	code := m.Run()
	// Waits for a build still under way (prefetchBinaries), or makes sure
	// none starts.
	binaryOnce.Do(func() {})
	if binaryDir != "" {
		_ = os.RemoveAll(binaryDir) // best effort: the run's result stands
	}
	os.Exit(code)
}
