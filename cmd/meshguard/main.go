// Command meshguard is the single binary of the meshguard security mesh: controller, sidecar,
// agent, lab and CLI verbs are its subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshguard/meshguard/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
