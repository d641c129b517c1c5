package objstore_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/streamhouse/streamhouse/pkg/objstore"
	"github.com/streamhouse/streamhouse/pkg/objstore/storetest"
)

func TestMeteredConformsAndCounts(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store {
		l, err := objstore.NewLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return objstore.Metered(l, "streamhouse_test")
	})
	s, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := objstore.Metered(s, "streamhouse_metered")
	ctx := context.Background()
	if err := m.PutIfAbsent(ctx, "a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = m.PutIfAbsent(ctx, "a", []byte("again"))
	_, _ = m.Get(ctx, "missing", 0, -1)
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	for _, want := range []string{
		`streamhouse_metered_s3_requests_total{op="put",outcome="ok"} 1`,
		`streamhouse_metered_s3_requests_total{op="put",outcome="exists"} 1`,
		`streamhouse_metered_s3_requests_total{op="get",outcome="not_found"} 1`,
		`streamhouse_metered_s3_bytes_total{op="put"} 5`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
