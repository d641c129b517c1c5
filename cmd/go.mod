module github.com/streamhouse/streamhouse/cmd

go 1.26.8
