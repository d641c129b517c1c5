package e2e

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/streamhouse/streamhouse/api/gen/streamhouse/v1"
	"github.com/streamhouse/streamhouse/api/gen/streamhouse/v1/streamhousev1connect"
	"github.com/streamhouse/streamhouse/test/devproc"
)

// bin is the streamhouse binary built once for all tests.
var bin string

func TestMain(m *testing.M) {
	os.Exit(devproc.Main(m, func(dir string) (err error) {
		bin, err = devproc.Build(dir)
		return err
	}))
}

// clients are plain Connect clients of a gateway (Connect protocol, HTTP/1.1).
type clients struct {
	admin   streamhousev1connect.AdminServiceClient
	produce streamhousev1connect.ProduceServiceClient
	consume streamhousev1connect.ConsumeServiceClient
	http    *http.Client
}

func newClients(t *testing.T, url string) clients {
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	return clients{
		admin:   streamhousev1connect.NewAdminServiceClient(hc, url),
		produce: streamhousev1connect.NewProduceServiceClient(hc, url),
		consume: streamhousev1connect.NewConsumeServiceClient(hc, url),
		http:    hc,
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func createTopic(t *testing.T, c clients, name string, partitions int32, d v1.Durability) {
	t.Helper()
	_, err := c.admin.CreateTopic(ctxT(t, 30*time.Second), connect.NewRequest(&v1.CreateTopicRequest{Name: name, Partitions: partitions, Durability: d}))
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
}

func describe(t *testing.T, c clients, name string) *v1.DescribeTopicResponse {
	t.Helper()
	res, err := c.admin.DescribeTopic(ctxT(t, 30*time.Second), connect.NewRequest(&v1.DescribeTopicRequest{Name: name}))
	if err != nil {
		t.Fatalf("describe %s: %v", name, err)
	}
	return res.Msg
}
