module github.com/streamhouse/streamhouse/test

go 1.26.8
