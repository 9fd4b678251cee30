//go:build tools

// Package tools pins the etcd server command this module builds, so that go mod tidy
// keeps it and its dependencies. The command is the main package at the root of
// go.etcd.io/etcd/server/v3; it wraps etcdmain, the real entrypoint.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
