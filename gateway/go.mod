module github.com/streamhouse/streamhouse/gateway

go 1.26.8
