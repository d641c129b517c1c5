module github.com/streamhouse/streamhouse/test

go 1.26.8

require (
	github.com/streamhouse/streamhouse/agent v0.0.0
	github.com/streamhouse/streamhouse/api v0.0.0
	github.com/streamhouse/streamhouse/cmd v0.0.0
	github.com/streamhouse/streamhouse/controller v0.0.0
	github.com/streamhouse/streamhouse/gateway v0.0.0
	github.com/streamhouse/streamhouse/pkg v0.0.0
)

replace github.com/streamhouse/streamhouse/api => ../api

replace github.com/streamhouse/streamhouse/pkg => ../pkg

replace github.com/streamhouse/streamhouse/controller => ../controller

replace github.com/streamhouse/streamhouse/agent => ../agent

replace github.com/streamhouse/streamhouse/gateway => ../gateway

replace github.com/streamhouse/streamhouse/cmd => ../cmd
