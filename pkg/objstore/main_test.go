package objstore_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them. Stores
// are closed in t.Cleanup (S3.Close drops idle keep-alive connections, whose
// read and write loops would otherwise linger), so no goroutine is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
