module github.com/streamhouse/streamhouse/gateway

go 1.26.8

require (
	github.com/streamhouse/streamhouse/api v0.0.0
	github.com/streamhouse/streamhouse/pkg v0.0.0
)

replace github.com/streamhouse/streamhouse/api => ../api

replace github.com/streamhouse/streamhouse/pkg => ../pkg
