module github.com/streamhouse/streamhouse/agent

go 1.26.8

require (
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.48.0
)

replace github.com/streamhouse/streamhouse/api => ../api

replace github.com/streamhouse/streamhouse/pkg => ../pkg
