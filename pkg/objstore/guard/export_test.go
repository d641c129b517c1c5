package guard_test

import (
	"testing"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/storetest"
)

func storetestRun(t *testing.T, newStore func(t *testing.T) objstore.Store) {
	storetest.Run(t, newStore)
}
