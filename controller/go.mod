module github.com/streamhouse/streamhouse/controller

go 1.26.8
